"""Component: monitor a served-request log window against the training data; fails the task on a breach."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Output

import mdctr
from components import described


@dsl.component(base_image=mdctr.image_ref(), install_kfp_package=False)
@described(
    log_uri="Served-request log (mdctr serve --log): a directory or s3://BUCKET/PREFIX.",
    since="Window start on mdctr_served_at (ISO date/time, UTC), inclusive; empty: the log's start.",
    until="Window end on mdctr_served_at (ISO date/time, UTC), exclusive; empty: the log's end.",
    labels_uri="Labels that arrived later (parquet/CSV: mdctr_request_id + label column); empty: none.",
    baseline_log="A log whose mined-code shares are the reference; empty: reference codes or none.",
    max_psi="Largest per-feature PSI before the run fails.",
    max_oov_share="Largest OOV share above the valid split's, per sparse feature, before the run fails.",
    max_domain_psi="Largest PSI of the hand-crafted or mined domain shares before the run fails.",
    bucket="Time bucket of the label metrics: day or hour.",
    fail_on_breach="Fail the task (and the run) when a threshold is crossed; the report is written first.",
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
    max_oov_share: float,
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

    from mdctr.steps.monitor import MonitorStepConfig
    from mdctr.steps.monitor import monitor as step

    # the domains artifact's codes.npz; without one (pass the prepared URI again) mined shares have no reference
    codes = reference_codes.path if (Path(reference_codes.path) / "codes.npz").is_file() else ""
    result = step(
        log_uri=log_uri,
        reference_dir=reference.path,
        out_dir=summary.path,
        config=MonitorStepConfig(
            since=since,
            until=until,
            labels=labels_uri,
            reference_codes=codes,
            baseline_log=baseline_log,
            max_psi=max_psi,
            max_oov_share=max_oov_share,
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
