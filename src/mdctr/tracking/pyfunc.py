"""The MLflow pyfunc flavour of a model bundle, loaded by an *installed* module — nothing from the store runs.

``register_bundle`` logs the model with ``loader_module="mdctr.tracking.pyfunc"`` and the bundle as its
``data`` (JSON + tensors): MLflow imports this module from the installed ``mdctr`` package and calls
:func:`_load_pyfunc` on the bundle directory. No cloudpickled ``python_model`` and no ``code/`` folder is
logged, so ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` read weights (``weights_only=True``) and
JSON only. Both end in :meth:`mdctr.serving.Predictor.predict`, the code the lean server runs.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mdctr.schema import SchemaError

log = logging.getLogger(__name__)

#: the bundle's directory name under the model's ``data/``
BUNDLE_DATA = "bundle"


class MdctrPyfunc:
    """What ``mlflow.pyfunc.load_model`` wraps: ``predict`` maps a request's schema problems to HTTP 400.

    MLflow's scoring server answers an ``MlflowException`` with the HTTP status of its error code
    (``INVALID_PARAMETER_VALUE`` → 400) and the message in the JSON body; any other exception would become a
    400 with a generic message that hides what was wrong with the request.
    """

    def __init__(self, predictor: Any):
        self.predictor = predictor

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        """pCTR per request row (float64 [N])."""
        try:
            return self.predictor.predict(model_input)
        except SchemaError as e:
            raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None


def _load_pyfunc(data_path: str) -> MdctrPyfunc:
    """MLflow's loader-module entry point: ``data_path`` is the model's ``data/bundle`` directory."""
    from mdctr.serving.bundle import Predictor

    predictor = Predictor.load(data_path)
    log.info("loaded mdctr bundle %s", data_path)
    return MdctrPyfunc(predictor)


def download_model(
    model_uri: str, *, tracking_uri: str | None = None, dst: Path | str | None = None
) -> tuple[Path, str]:
    """Download a logged model (``models:/…``, ``runs:/…``, ``s3://…``) to a local directory.

    Returns the directory and the registered version ("" when the URI names no registered version).
    """
    import mlflow

    from mdctr.tracking.setup import configure

    uri = configure(tracking_uri)
    version = ""
    if model_uri.startswith("models:/"):
        name, _, ref = model_uri[len("models:/") :].partition("@")
        client = mlflow.MlflowClient(uri, registry_uri=uri)
        if ref:
            version = str(client.get_model_version_by_alias(name, ref).version)
        else:
            name, _, version = model_uri[len("models:/") :].partition("/")
    dst = Path(dst or tempfile.mkdtemp(prefix="mdctr-model-"))
    path = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst))
    log.info("downloaded %s (version %s) to %s", model_uri, version or "-", path)
    return Path(path), version
