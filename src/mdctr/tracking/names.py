"""MLflow names, defined once: the experiment, the registered model, its aliases and the tag keys we write."""

EXPERIMENT = "mdctr"
REGISTERED_MODEL = "mdctr-ctr"
CHALLENGER = "challenger"
CHAMPION = "champion"

#: artifact name of the pyfunc model inside its run
MODEL_NAME_IN_RUN = "model"

# Run tags (parent run)
TAG_DATA_REV = "mdctr.data_rev"
TAG_DATA_MD5 = "mdctr.data_md5"
TAG_GIT_SHA = "mdctr.git_sha"
TAG_KFP_RUN_ID = "mdctr.kfp_run_id"

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
