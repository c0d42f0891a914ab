"""Step: the Great Expectations data gate. Writes the report, then fails the run on any violation."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from mdctr.steps.common import parse_options, tracking_uri_or_none

log = logging.getLogger(__name__)


class DataValidationError(RuntimeError):
    """The raw data violates the schema's expectations; the message lists the failures and the report path."""


@dataclass(frozen=True)
class ValidateConfig:
    """Attributes: dataset name and JSON options; MLflow URI and parent run (``""``: do not log the report)."""

    dataset: str
    dataset_options: str = "{}"
    tracking_uri: str = ""
    parent_run_id: str = ""


@dataclass(frozen=True)
class ValidateOutput:
    """Attributes: rows validated, number of expectations, the HTML report and the JSON results paths."""

    rows: int
    expectations: int
    html_path: Path
    json_path: Path
    seconds: float


def validate_data(
    *, source: Path | str, html_path: Path | str, results_dir: Path | str, config: ValidateConfig
) -> ValidateOutput:
    """Validate the raw data in ``source``: the JSON results go to ``results_dir``, the self-contained HTML
    report to ``html_path`` (and both to the MLflow parent run, so a failed run still shows them).

    Raises :class:`DataValidationError` after writing the reports when an expectation fails.
    """
    from mdctr.validation import validate_dataset

    options = parse_options(config.dataset_options, what="dataset_options")
    results_dir, html_path = Path(results_dir), Path(html_path)
    # a report left by an earlier run must not stand in for this one if it is killed before writing its own
    html_path.unlink(missing_ok=True)
    result = validate_dataset(config.dataset, source, results_dir, **options)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    if result.html_path.resolve() != html_path.resolve():
        shutil.copyfile(result.html_path, html_path)
    if config.parent_run_id:
        from mdctr import tracking

        tracking.log_evaluation(
            tracking_uri_or_none(config.tracking_uri),
            config.parent_run_id,
            metrics={"validation.rows": result.rows, "validation.failed": result.n_failed},
            artifact_dir=results_dir,
            artifact_path="validation",
        )
    if not result.success:
        raise DataValidationError(
            f"{config.dataset}: {result.n_failed} of {len(result.results)} expectation(s) failed "
            f"(report: {html_path}): " + "; ".join(result.failures)
        )
    log.info("%s passed %d expectations on %d rows", config.dataset, len(result.results), result.rows)
    return ValidateOutput(
        rows=result.rows,
        expectations=len(result.results),
        html_path=html_path,
        json_path=result.json_path,
        seconds=result.seconds,
    )
