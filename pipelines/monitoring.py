"""The monitoring DAG: import the serving version's prepared data (and mined codes) → monitor a log window.

One task, meant for a recurring run (``mdctr pipeline submit --pipeline monitoring --cron …``, see
docs/monitoring.md): the report is in the task's HTML output and the MLflow experiment ``mdctr-monitoring``; a
crossed threshold fails the run, which is what an alert watches for. The reference is imported from URIs
(``dsl.importer``): the prepared-data and domains artifacts of the training run whose model is served (their
URIs are in that run's KFP artifacts). :func:`build_pipeline` applies the cluster settings (:mod:`mdctr.k8s`:
the S3 and MLflow Secrets the task reads the log and logs its run with) to the monitor task.
"""

from collections.abc import Callable, Mapping
from typing import Any

from components import described
from components.monitor import MONITOR_DESCRIPTIONS, monitor
from kfp import dsl
from kfp.dsl import Dataset

from mdctr.k8s import ClusterSettings, configure_task
from mdctr.monitoring import DEFAULT_MAX_DOMAIN_PSI, DEFAULT_MAX_OOV_SHARE, DEFAULT_MAX_PSI

PIPELINE_NAME = "mdctr-monitoring"
PIPELINE_DESCRIPTION = (
    "Monitor a served-request log window against the serving version's training data: feature drift (PSI, "
    "OOV share, KS), hand-crafted and mined domain shares, per-domain AUC/calibration with labels, a Great "
    "Expectations checkpoint; fails when a threshold is crossed."
)


def check_arguments(arguments: Mapping[str, Any]) -> None:
    """Refuse, before anything is submitted, what the monitor task would refuse at once: a per-feature limit
    parameter that is not a JSON object of limits ≥ 0 (raises ``ConfigError`` naming the parameter)."""
    from mdctr.steps.monitor import parse_feature_limits

    for name in ("feature_max_psi", "feature_max_oov_share"):
        if name in arguments:
            parse_feature_limits(str(arguments[name]), what=name)


def build_pipeline(settings: ClusterSettings | None = None) -> Callable[..., Any]:
    """The monitoring pipeline with ``settings`` (secrets, env, pull policy, resources) on the monitor task."""
    settings = settings or ClusterSettings()

    @dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)
    @described(**MONITOR_DESCRIPTIONS)  # every parameter's description in the Kubeflow UI's run form
    def monitoring_pipeline(
        log_uri: str,
        reference_uri: str,
        reference_codes_uri: str,
        since: str = "",
        until: str = "",
        labels_uri: str = "",
        baseline_log: str = "",
        max_psi: float = DEFAULT_MAX_PSI,
        feature_max_psi: str = "{}",
        max_oov_share: float = DEFAULT_MAX_OOV_SHARE,
        feature_max_oov_share: str = "{}",
        max_domain_psi: float = DEFAULT_MAX_DOMAIN_PSI,
        bucket: str = "day",
        tracking_uri: str = "",
        fail_on_breach: bool = True,
    ) -> int:
        """Monitor one window of the served-request log (schedule it as a recurring run); returns the number of
        thresholds crossed (the run fails instead when fail_on_breach)."""
        prepared = dsl.importer(artifact_uri=reference_uri, artifact_class=Dataset, reimport=False)
        codes = dsl.importer(artifact_uri=reference_codes_uri, artifact_class=Dataset, reimport=False)
        task = monitor(
            log_uri=log_uri,
            since=since,
            until=until,
            labels_uri=labels_uri,
            baseline_log=baseline_log,
            max_psi=max_psi,
            feature_max_psi=feature_max_psi,
            max_oov_share=max_oov_share,
            feature_max_oov_share=feature_max_oov_share,
            max_domain_psi=max_domain_psi,
            bucket=bucket,
            tracking_uri=tracking_uri,
            fail_on_breach=fail_on_breach,
            reference=prepared.output,
            reference_codes=codes.output,
        )
        task.set_caching_options(enable_caching=False)  # a log window grows; MLflow gets one run per call
        configure_task(task, settings)
        return task.outputs["Output"]

    return monitoring_pipeline


monitoring_pipeline = build_pipeline()
