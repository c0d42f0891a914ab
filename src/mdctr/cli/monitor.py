"""``mdctr monitor``: drift, domain shares and (with labels) per-domain metrics of a served-request log window."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mdctr.cli.common import user_errors
from mdctr.monitoring import DEFAULT_MAX_DOMAIN_PSI, DEFAULT_MAX_OOV_SHARE, DEFAULT_MAX_PSI

if TYPE_CHECKING:
    from mdctr.steps.monitor import MonitorStepConfig

#: exit status when a threshold is crossed (2 stays "bad input", as in every mdctr command)
BREACH_EXIT = 1


def monitor(
    log_uri: str = typer.Option(
        ..., "--log", help="Request log: a directory or s3://BUCKET/PREFIX (mdctr serve --log)."
    ),
    reference: Path = typer.Option(
        ...,
        "--reference",
        help="Prepared-data directory of the serving version's training data (train.parquet …).",
    ),
    out: Path = typer.Option(Path("monitoring"), "--out", help="Where the HTML report and JSON summary go."),
    since: str = typer.Option("", "--since", help="Window start on mdctr_served_at (ISO, UTC), inclusive."),
    until: str = typer.Option("", "--until", help="Window end on mdctr_served_at (ISO, UTC), exclusive."),
    labels: str = typer.Option(
        "", "--labels", help="Parquet/CSV file: mdctr_request_id + the schema's label."
    ),
    reference_codes: str = typer.Option(
        "",
        "--reference-codes",
        help="mine_domains output (or its codes.npz): the train shares of mined codes.",
    ),
    baseline_log: str = typer.Option(
        "",
        "--baseline-log",
        help="A log whose mined-code shares are the reference (when no --reference-codes).",
    ),
    max_psi: float = typer.Option(DEFAULT_MAX_PSI, "--max-psi", help="Largest per-feature PSI."),
    feature_max_psi: list[str] = typer.Option(
        [],
        "--feature-max-psi",
        help="COLUMN=LIMIT, repeatable: that feature's own largest PSI (e.g. user_id=inf for ids whose "
        "population turns over: reported, never a breach).",
    ),
    max_oov_share: float = typer.Option(
        DEFAULT_MAX_OOV_SHARE,
        "--max-oov-share",
        help="Largest OOV share above the valid split's, per sparse feature.",
    ),
    feature_max_oov_share: list[str] = typer.Option(
        [],
        "--feature-max-oov-share",
        help="COLUMN=LIMIT, repeatable: that sparse feature's own largest OOV excess (e.g. user_id=0.3 where "
        "new users keep arriving).",
    ),
    max_domain_psi: float = typer.Option(
        DEFAULT_MAX_DOMAIN_PSI, "--max-domain-psi", help="Largest PSI of hand-crafted or mined domain shares."
    ),
    bucket: str = typer.Option("day", "--bucket", help="Time bucket of the label metrics: day or hour."),
    top_k: int = typer.Option(20, "--top-k", min=1, help="Categories per sparse feature kept as PSI bins."),
    gx_rows: int = typer.Option(
        20_000, "--gx-rows", min=0, help="Rows sampled for the GX checkpoint (0: skip)."
    ),
    tracking_uri: str = typer.Option(
        "", "--tracking-uri", help="MLflow store for the monitoring run (default: $MLFLOW_TRACKING_URI)."
    ),
    track: bool = typer.Option(
        False, "--track", help="Log the monitoring run even without a tracking URI (./mlruns)."
    ),
) -> None:
    """Compare a window of served requests with the training data; exit 1 when a threshold is crossed."""
    from mdctr.steps.monitor import MonitorStepConfig

    config = MonitorStepConfig(
        since=since,
        until=until,
        labels=labels,
        reference_codes=reference_codes,
        baseline_log=baseline_log,
        max_psi=max_psi,
        feature_max_psi=_limits(feature_max_psi, "--feature-max-psi"),
        max_oov_share=max_oov_share,
        feature_max_oov_share=_limits(feature_max_oov_share, "--feature-max-oov-share"),
        max_domain_psi=max_domain_psi,
        bucket=bucket,
        top_k=top_k,
        gx_rows=gx_rows,
        tracking_uri=tracking_uri,
        track=track,
    )
    _run(log_uri, reference, out, config)


def _limits(pairs: list[str], flag: str) -> tuple[tuple[str, float], ...]:
    """``["user_id=inf", "zip=0.5"]`` → ``(("user_id", inf), ("zip", 0.5))``; a malformed pair exits 2."""
    out = []
    for pair in pairs:
        column, sep, value = pair.partition("=")
        try:
            if not sep or not column.strip():
                raise ValueError
            out.append((column.strip(), float(value)))
        except ValueError:
            typer.secho(
                f"error: {flag} {pair!r}: expected COLUMN=LIMIT, e.g. user_id=0.5",
                fg=typer.colors.RED,
                err=True,
            )
            raise typer.Exit(2) from None
    return tuple(out)


def _run(log_uri: str, reference: Path, out: Path, config: MonitorStepConfig) -> None:
    """Run the step; bad input → one error line and exit 2; a breach → one line each and exit 1."""
    from mdctr.serving.requestlog import RequestLogError
    from mdctr.steps.monitor import monitor as step

    with user_errors():
        try:
            result = step(log_uri=log_uri, reference_dir=reference, out_dir=out, config=config)
        except RequestLogError as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
    typer.echo(f"monitored {result.rows} rows; report: {result.report}")
    if result.run_id:
        typer.echo(f"MLflow monitoring run: {result.run_id}")
    for line in result.breaches:
        typer.secho(f"breach: {line}", fg=typer.colors.RED, err=True)
    if result.breaches:
        raise typer.Exit(BREACH_EXIT)
