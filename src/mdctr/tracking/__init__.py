"""MLflow tracking and registry: the only package that imports mlflow.

Names (experiment ``mdctr``, one registered model per dataset ``mdctr-<schema name>``, aliases
``challenger``/``champion``/``canary``) live in :mod:`mdctr.tracking.names`. Promotion is three small modules:
:mod:`~mdctr.tracking.registration` (log and register a bundle), :mod:`~mdctr.tracking.gate` (the pure rule
:func:`judge` and its MLflow wrapper :func:`decide_promotion`) and :mod:`~mdctr.tracking.champion` (the
champion and canary aliases with their history); the model card is :mod:`~mdctr.tracking.model_card`.
"""

from mdctr.tracking.champion import (
    CanaryChange,
    ChampionChange,
    Rollout,
    champion_history,
    finish_canary,
    promote,
    promote_version,
    rollback_champion,
    rollout,
    start_canary,
)
from mdctr.tracking.gate import GateDecision, Scores, ValidationSet, decide_promotion, judge
from mdctr.tracking.loading import RegistryError, UnsafeModelError, load_registered
from mdctr.tracking.model_card import write_model_card
from mdctr.tracking.names import CANARY, CHALLENGER, CHAMPION, EXPERIMENT, registered_model_name
from mdctr.tracking.registration import (
    RegisteredVersion,
    VersionSummary,
    alias_version,
    inference_requirements,
    list_versions,
    load_input_example,
    model_storage_uri,
    register_bundle,
    registered_models,
    schema_fingerprint,
    tag_schema,
    version_metrics,
)
from mdctr.tracking.runs import end_parent_run, log_evaluation, log_training_run, start_parent_run
from mdctr.tracking.setup import configure, default_tracking_uri

__all__ = [
    "CANARY",
    "CHALLENGER",
    "CHAMPION",
    "EXPERIMENT",
    "CanaryChange",
    "ChampionChange",
    "GateDecision",
    "RegisteredVersion",
    "RegistryError",
    "Rollout",
    "Scores",
    "UnsafeModelError",
    "ValidationSet",
    "VersionSummary",
    "alias_version",
    "champion_history",
    "configure",
    "decide_promotion",
    "default_tracking_uri",
    "end_parent_run",
    "finish_canary",
    "inference_requirements",
    "judge",
    "list_versions",
    "load_input_example",
    "load_registered",
    "log_evaluation",
    "log_training_run",
    "model_storage_uri",
    "promote",
    "promote_version",
    "register_bundle",
    "registered_model_name",
    "registered_models",
    "rollback_champion",
    "rollout",
    "schema_fingerprint",
    "start_canary",
    "start_parent_run",
    "tag_schema",
    "version_metrics",
    "write_model_card",
]
