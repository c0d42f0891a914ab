"""Step: the Great Expectations data gate. Writes the reports (GX Data Docs; MLflow), then fails the run on any
violation."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdctr.steps.common import parse_options, tracking_uri_or_none

log = logging.getLogger(__name__)

#: artifact folder of the validation reports on the MLflow parent run
ARTIFACT_PATH = "validation"


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
    """Attributes: rows validated, number of expectations, the HTML report (KFP) and the JSON results paths,
    the GX Data Docs ``index.html``."""

    rows: int
    expectations: int
    html_path: Path
    json_path: Path
    seconds: float
    data_docs: Path | None = None


def validate_data(
    *, source: Path | str, html_path: Path | str, results_dir: Path | str, config: ValidateConfig
) -> ValidateOutput:
    """Validate the raw data in ``source`` with the schema's GX checkpoint and report it where a user can see it,
    whether it passes or not:

    * ``results_dir``: the JSON results, a compact self-contained HTML summary and the GX Data Docs site
      (``data_docs/index.html``);
    * ``html_path`` (the KFP HTML output): this validation's Data Docs page (the compact summary when the files
      could not even be loaded, so GX never ran);
    * the MLflow parent run (when given): everything in ``results_dir`` under ``validation/``, the metrics
      ``validation.rows``/``validation.failed`` and the tags ``mdctr.validation`` (passed/failed) and
      ``mdctr.data_docs`` (where the Data Docs are).

    Only then, when an expectation failed, raises :class:`DataValidationError` naming each failed expectation
    (column, found vs expected, rows), the local ``index.html`` and the MLflow location. KFP drops a failed
    task's outputs, so MLflow and that path are what a user of a failed run has.
    """
    from mdctr.validation import validate_dataset

    options = parse_options(config.dataset_options, what="dataset_options")
    results_dir, html_path = Path(results_dir), Path(html_path)
    # a report left by an earlier run must not stand in for this one if it is killed before writing its own
    html_path.unlink(missing_ok=True)
    result = validate_dataset(config.dataset, source, results_dir, **options)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    page = result.data_docs_page or result.html_path
    if page.resolve() != html_path.resolve():
        shutil.copyfile(page, html_path)
    docs = result.data_docs_index
    where = [f"Data Docs: {docs.resolve()}"] if docs else [f"report: {result.html_path.resolve()}"]
    if config.parent_run_id:
        try:
            where.append(
                f"MLflow parent run {config.parent_run_id}: {_log_to_mlflow(result, results_dir, config)}"
            )
        except Exception as e:
            if result.success:
                raise
            # the data's failure is the news: a tracking outage must not replace it
            log.error("could not log the validation reports to MLflow: %s", e)
            where.append(f"MLflow: not logged ({type(e).__name__}: {e})")
    if not result.success:
        # printed as well as logged: the path is what a user of a failed local run opens
        for line in where:
            print(f"validation failed; {line}", flush=True)
        raise DataValidationError(
            f"{config.dataset}: {result.n_failed} of {len(result.results)} expectation(s) failed: "
            + "; ".join(result.failures)
            + ". "
            + "; ".join(where)
        )
    log.info(
        "%s passed %d expectations on %d rows; %s",
        config.dataset,
        len(result.results),
        result.rows,
        "; ".join(where),
    )
    return ValidateOutput(
        rows=result.rows,
        expectations=len(result.results),
        html_path=html_path,
        json_path=result.json_path,
        seconds=result.seconds,
        data_docs=docs,
    )


def _log_to_mlflow(result: Any, results_dir: Path, config: ValidateConfig) -> str:
    """Everything in ``results_dir`` → ``validation/`` on the parent run, with the metrics and tags; returns
    where the Data Docs (or, without them, the reports) are."""
    from mdctr import tracking
    from mdctr.tracking.reports import artifact_location, log_report

    names = tracking.names
    uri = tracking_uri_or_none(config.tracking_uri)
    logged = log_report(
        uri,
        config.parent_run_id,
        files=results_dir,
        artifact_path=ARTIFACT_PATH,
        metrics={"validation.rows": result.rows, "validation.failed": result.n_failed},
        tags={names.TAG_VALIDATION: "passed" if result.success else "failed"},
    )
    docs = result.data_docs_index
    if docs:
        index = f"{ARTIFACT_PATH}/{docs.relative_to(results_dir).as_posix()}"
        logged = artifact_location(uri, config.parent_run_id, index)
    tracking.runs.tag_run(uri, config.parent_run_id, {names.TAG_DATA_DOCS: logged})
    return logged
