"""MLflow tracking and registry: the only package that imports mlflow.

Names (experiment ``mdctr``, one registered model per dataset ``mdctr-<schema name>``, aliases
``challenger``/``champion``) live in :mod:`mdctr.tracking.names`.
"""

from mdctr.tracking.loading import RegistryError, UnsafeModelError, load_registered
from mdctr.tracking.names import CHALLENGER, CHAMPION, EXPERIMENT, registered_model_name
from mdctr.tracking.registry import (
    GateDecision,
    RegisteredVersion,
    ValidationSet,
    alias_version,
    decide_promotion,
    inference_requirements,
    load_input_example,
    model_storage_uri,
    promote,
    register_bundle,
    registered_models,
    schema_fingerprint,
    tag_schema,
    version_metrics,
)
from mdctr.tracking.runs import end_parent_run, log_evaluation, log_training_run, start_parent_run
from mdctr.tracking.setup import configure, default_tracking_uri

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "EXPERIMENT",
    "GateDecision",
    "RegisteredVersion",
    "RegistryError",
    "UnsafeModelError",
    "ValidationSet",
    "alias_version",
    "configure",
    "decide_promotion",
    "default_tracking_uri",
    "end_parent_run",
    "inference_requirements",
    "load_input_example",
    "load_registered",
    "log_evaluation",
    "log_training_run",
    "model_storage_uri",
    "promote",
    "register_bundle",
    "registered_model_name",
    "registered_models",
    "schema_fingerprint",
    "start_parent_run",
    "tag_schema",
    "version_metrics",
]
