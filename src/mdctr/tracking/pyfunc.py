"""The MLflow pyfunc wrapper around a model bundle: MLflow's scoring server and ``mlflow.pyfunc.load_model``
both end in :meth:`mdctr.serving.Predictor.predict`, so served and offline predictions are the same code.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel, PythonModelContext

from mdctr.schema import SchemaError

log = logging.getLogger(__name__)

#: key of the bundle directory in the pyfunc's ``artifacts``
BUNDLE_ARTIFACT = "bundle"


class MdctrPyfunc(PythonModel):
    """Loads the bundle once per process; ``predict`` maps a request's schema problems to HTTP 400.

    MLflow's scoring server answers an ``MlflowException`` with the HTTP status of its error code
    (``INVALID_PARAMETER_VALUE`` → 400) and the message in the JSON body; any other exception would become a
    400 with a generic message that hides what was wrong with the request.
    """

    def __init__(self) -> None:
        self._predictor: Any = None

    def load_context(self, context: PythonModelContext) -> None:
        from mdctr.serving.bundle import Predictor

        self._predictor = Predictor.load(context.artifacts[BUNDLE_ARTIFACT])
        log.info("loaded mdctr bundle %s", context.artifacts[BUNDLE_ARTIFACT])

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """pCTR per request row (float64 [N])."""
        try:
            return self._predictor.predict(model_input)
        except SchemaError as e:
            raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None
