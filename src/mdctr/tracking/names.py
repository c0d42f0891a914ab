"""MLflow names, defined once: the experiment, the registered model of each dataset, its aliases and the tag
keys we write."""

import re

EXPERIMENT = "mdctr"
#: experiment tag MLflow 3's UI reads to choose its layout; this value opens the experiment on its runs
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: every dataset registers under its own model, ``mdctr-<dataset>`` (:func:`registered_model_name`)
REGISTERED_MODEL_PREFIX = "mdctr-"
CHALLENGER = "challenger"
CHAMPION = "champion"
#: the version rolling out to a slice of traffic next to the champion (``mdctr models promote V --canary P``)
CANARY = "canary"

# A registered model's name is also the KServe InferenceService name and the v2 route /v2/models/<name>, so it
# must be a DNS-1035 label: lowercase alphanumerics and '-', starting with a letter, at most 63 characters.
_NOT_LABEL = re.compile(r"[^a-z0-9]+")
_MAX_NAME = 63


def registered_model_name(schema_name: str) -> str:
    """The registered model of one dataset: ``mdctr-<schema name>`` (``ml-1m`` → ``mdctr-ml-1m``).

    One model per dataset means a model of one dataset is never gated against, or replaces, the champion of
    another. Characters outside ``[a-z0-9-]`` become ``-`` (``My_Table`` → ``mdctr-my-table``) so the name is
    also a valid Kubernetes name for the InferenceService that serves it.
    """
    slug = _NOT_LABEL.sub("-", str(schema_name).lower()).strip("-")
    if not slug:
        raise ValueError(
            f"dataset (schema) name {schema_name!r} has no letter or digit to name a model after"
        )
    name = REGISTERED_MODEL_PREFIX + slug
    if len(name) > _MAX_NAME:
        raise ValueError(
            f"registered model name {name!r} derived from dataset {schema_name!r} is {len(name)} characters; "
            f"at most {_MAX_NAME} fit a Kubernetes name (pass an explicit model name)"
        )
    return name


#: artifact name of the pyfunc model inside its run
MODEL_NAME_IN_RUN = "model"

# Run tags (parent run)
TAG_DATA_REV = "mdctr.data_rev"
TAG_DATA_MD5 = "mdctr.data_md5"
TAG_GIT_SHA = "mdctr.git_sha"
TAG_KFP_RUN_ID = "mdctr.kfp_run_id"
TAG_DATA_DVC_MD5 = "mdctr.data_dvc_md5"
#: what the pipeline decided, on the parent run
TAG_WINNER = "mdctr.winner"
TAG_WINNER_RUN_ID = "mdctr.winner_run_id"
TAG_REGISTERED_VERSION = "mdctr.registered_version"
TAG_GATE_DECISION = "mdctr.gate_decision"
TAG_GATE_REASON = "mdctr.gate_reason"

#: the gate's decisions, the same words in KFP outputs, version tags and parent-run tags
PROMOTE = "promote"
KEEP = "keep"
#: the champion history's actions. Moves of ``champion``: a gate-approved move (the gate's own word), a forced
#: one, a finished canary, a rollback. Canary events (``champion`` stays): a canary started or re-weighted, and a
#: canary removed (rolled back, or superseded by another promotion).
ACTION_PROMOTE = PROMOTE
ACTION_FORCE = "force"
ACTION_FINISH = "finish"
ACTION_ROLLBACK = "rollback"
ACTION_CANARY = "canary"
ACTION_CANARY_END = "canary-end"
#: actions that move ``champion`` forward (the history replays them as a stack; a rollback pops it)
CHAMPION_MOVES = (ACTION_PROMOTE, ACTION_FORCE, ACTION_FINISH)
HISTORY_ACTIONS = (*CHAMPION_MOVES, ACTION_ROLLBACK, ACTION_CANARY, ACTION_CANARY_END)
#: registered-model tags ``mdctr.champion_history.00001`` …: one JSON event per change of ``champion``/``canary``
HISTORY_TAG_PREFIX = "mdctr.champion_history."
#: model-version tags written by a manual promotion, a canary or a rollback (``promotion.reason``, …)
PROMOTION_TAG_PREFIX = "promotion."
#: model-version tag pointing at the version's model card (``runs:/<run>/model_card/v<version>.md``)
TAG_MODEL_CARD = "mdctr.model_card"

# Model-version tags: the test metrics the gate reads, and the gate's decision
METRIC_TAG_PREFIX = "metric."  # metric.auc = overall test AUC
DOMAIN_TAG_PREFIX = "domain."  # domain.<id>.auc = test AUC on hand-crafted domain <id>
GATE_TAG_PREFIX = "gate."  # gate.decision, gate.reason, gate.delta.*, ...
TAG_BUNDLE_MODEL = "mdctr.model"
TAG_DOMAIN_SOURCE = "mdctr.domain_source"
#: the dataset (schema name) and a fingerprint of its feature schema: the gate never compares across them
TAG_SCHEMA = "mdctr.schema"
TAG_SCHEMA_HASH = "mdctr.schema_hash"

#: metrics where higher is better; every other gate metric is treated as lower-is-better
HIGHER_IS_BETTER = frozenset({"auc", "gauc", "accuracy"})

#: the data gate's outcome on the parent run (``passed``/``failed``) and where its GX Data Docs are
TAG_VALIDATION = "mdctr.validation"
TAG_DATA_DOCS = "mdctr.data_docs"
#: the mined domains' report on the parent run: artifact folder
DOMAIN_REPORT_PATH = "domains"
