"""Component: monitor a served-request log window against the training data; fails the task on a breach."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Output

import mdctr
from components import described

#: descriptions of the monitoring inputs, shared by this component and the pipeline's run form
MONITOR_DESCRIPTIONS: dict[str, str] = {
    "log_uri": "Served-request log (mdctr serve --log): a directory or s3://BUCKET/PREFIX.",
    "since": "Window start on mdctr_served_at (ISO date/time, UTC), inclusive; empty: the log's start.",
    "until": "Window end on mdctr_served_at (ISO date/time, UTC), exclusive; empty: the log's end.",
    "labels_uri": "Labels that arrived later (parquet/CSV: mdctr_request_id + label column); empty: none.",
    "baseline_log": "A log whose mined-code shares are the reference; empty: reference codes or none.",
    "max_psi": "Largest per-feature PSI before the run fails.",
    "feature_max_psi": (
        'JSON object of per-feature PSI limits overriding max_psi, e.g. {"user_id": "inf", "zip": 0.5} ("inf": '
        "reported, never a breach); {} for none. A column the reference lacks fails the run."
    ),
    "max_oov_share": "Largest OOV share above the valid split's, per sparse feature, before the run fails.",
    "feature_max_oov_share": (
        'JSON object of per-feature OOV-share limits overriding max_oov_share, e.g. {"user_id": 0.3}; {} for '
        "none. A column the reference lacks fails the run."
    ),
    "max_domain_psi": "Largest PSI of the hand-crafted or mined domain shares before the run fails.",
    "bucket": "Time bucket of the label metrics: day or hour.",
    "fail_on_breach": "Fail the task (and the run) when a threshold is crossed; the report is written first.",
    "reference_uri": (
        "URI of the serving version's prepared-data artifact (prepare-data's `prepared` output of its training "
        "run), e.g. s3://…/prepare-data/prepared; a local run takes an absolute path or file:// URI."
    ),
    "reference_codes_uri": (
        "URI of that run's mine-domains `domains` output (its train codes give the reference mined shares); "
        "pass reference_uri again when there are no mined codes."
    ),
}


@dsl.component(base_image=mdctr.image_ref(), install_kfp_package=False)
@described(
    **MONITOR_DESCRIPTIONS,
    reference="The serving version's prepared data (train/valid parquet + feature spec).",
    reference_codes=(
        "The mine_domains output of that data (its train codes give the reference mined shares); an artifact "
        "without codes.npz means no mined reference."
    ),
    report="The monitoring report (HTML, plots embedded).",
    summary="The monitoring summary (JSON) and the Great Expectations reports.",
)
def monitor(
    log_uri: str,
    since: str,
    until: str,
    labels_uri: str,
    baseline_log: str,
    max_psi: float,
    feature_max_psi: str,
    max_oov_share: float,
    feature_max_oov_share: str,
    max_domain_psi: float,
    bucket: str,
    tracking_uri: str,
    fail_on_breach: bool,
    reference: Input[Dataset],
    reference_codes: Input[Dataset],
    report: Output[HTML],
    summary: Output[Dataset],
    metrics: Output[Metrics],
) -> int:
    """Monitor ``log_uri`` against ``reference``; return the number of breaches."""
    import shutil
    from pathlib import Path

    from mdctr.steps.monitor import MonitorStepConfig, parse_feature_limits
    from mdctr.steps.monitor import monitor as step

    # kfp maps s3://, gs://… URIs to mounted paths but leaves a local run's file:// URI as it is
    reference_dir = Path(reference.path.removeprefix("file://"))
    codes_dir = Path(reference_codes.path.removeprefix("file://"))
    # the domains artifact's codes.npz; without one (the prepared URI again) mined shares have no reference
    codes = str(codes_dir) if (codes_dir / "codes.npz").is_file() else ""
    result = step(
        log_uri=log_uri,
        reference_dir=reference_dir,
        out_dir=summary.path,
        config=MonitorStepConfig(
            since=since,
            until=until,
            labels=labels_uri,
            reference_codes=codes,
            baseline_log=baseline_log,
            max_psi=max_psi,
            feature_max_psi=parse_feature_limits(feature_max_psi, what="feature_max_psi"),
            max_oov_share=max_oov_share,
            feature_max_oov_share=parse_feature_limits(feature_max_oov_share, what="feature_max_oov_share"),
            max_domain_psi=max_domain_psi,
            bucket=bucket,
            tracking_uri=tracking_uri,
        ),
    )
    shutil.copyfile(result.report, report.path)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    summary.metadata.update({"rows": result.rows, "breaches": len(result.breaches), "run_id": result.run_id})
    if result.breaches and fail_on_breach:
        raise RuntimeError("monitoring thresholds crossed:\n" + "\n".join(result.breaches))
    return len(result.breaches)
