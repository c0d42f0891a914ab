"""The monitoring DAG: import the serving version's prepared data (and mined codes) → monitor a log window.

One task, meant for a recurring run (``kfp.Client().create_recurring_run`` with a cron schedule, e.g. daily
with ``since``/``until`` set to yesterday): the report is in the task's HTML output and the MLflow experiment
``mdctr-monitoring``; a crossed threshold fails the run, which is what an alert watches for. The reference is
imported from URIs (``dsl.importer``): the prepared-data and domains artifacts of the training run whose model
is served (their URIs are in that run's KFP artifacts).
"""

from components.monitor import monitor
from kfp import dsl
from kfp.dsl import Dataset

from mdctr.monitoring import DEFAULT_MAX_DOMAIN_PSI, DEFAULT_MAX_OOV_SHARE, DEFAULT_MAX_PSI

PIPELINE_NAME = "mdctr-monitoring"
PIPELINE_DESCRIPTION = (
    "Monitor a served-request log window against the serving version's training data: feature drift (PSI, "
    "OOV share, KS), hand-crafted and mined domain shares, per-domain AUC/calibration with labels, a Great "
    "Expectations checkpoint; fails when a threshold is crossed."
)


@dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)
def monitoring_pipeline(
    log_uri: str,
    reference_uri: str,
    reference_codes_uri: str,
    since: str = "",
    until: str = "",
    labels_uri: str = "",
    baseline_log: str = "",
    max_psi: float = DEFAULT_MAX_PSI,
    max_oov_share: float = DEFAULT_MAX_OOV_SHARE,
    max_domain_psi: float = DEFAULT_MAX_DOMAIN_PSI,
    bucket: str = "day",
    tracking_uri: str = "",
    fail_on_breach: bool = True,
) -> None:
    """Monitor one window of the served-request log (schedule it as a recurring run)."""
    prepared = dsl.importer(artifact_uri=reference_uri, artifact_class=Dataset, reimport=False)
    codes = dsl.importer(artifact_uri=reference_codes_uri, artifact_class=Dataset, reimport=False)
    task = monitor(
        log_uri=log_uri,
        since=since,
        until=until,
        labels_uri=labels_uri,
        baseline_log=baseline_log,
        max_psi=max_psi,
        max_oov_share=max_oov_share,
        max_domain_psi=max_domain_psi,
        bucket=bucket,
        tracking_uri=tracking_uri,
        fail_on_breach=fail_on_breach,
        reference=prepared.output,
        reference_codes=codes.output,
    )
    task.set_caching_options(enable_caching=False)  # a log window grows; MLflow gets one run per call
