"""GX Data Docs from the validate step: built on success and on failure, and on a failure still reachable (MLflow
parent run, the printed path, the error message) before the step raises."""

from __future__ import annotations

from pathlib import Path

import pytest

from mdctr import tracking
from mdctr.steps.validate_data import DataValidationError, ValidateConfig, validate_data
from mdctr.tracking.setup import client

USERS = "1::F::1::10::48067\n2::M::25::16::70072\n3::M::35::15::55117\n4::F::56::7::02460\n"
MOVIES = "1::Toy Story (1995)::Animation|Children's\n2::Jumanji (1995)::Adventure\n3::Heat (1995)::Action\n"


def write_ml1m(root: Path, rating: object = None) -> Path:
    """30 ML-1M ratings; with ``rating`` every 4th one (lines 4, 8, …, 28) has that value."""
    rows = []
    for i in range(30):
        value = rating if rating is not None and (i + 1) % 4 == 0 else 1 + i % 5
        rows.append(f"{1 + i % 4}::{1 + i % 3}::{value}::{978300000 + i}")
    d = root / "ml-1m"
    d.mkdir(parents=True)
    (d / "ratings.dat").write_text("\n".join(rows) + "\n")
    (d / "users.dat").write_text(USERS)
    (d / "movies.dat").write_text(MOVIES)
    return root


@pytest.fixture
def parent(mlflow_sqlite_uri: str) -> tuple[str, str]:
    uri = mlflow_sqlite_uri
    tracking.configure(uri)
    return uri, tracking.start_parent_run(uri, run_name="gate-test", data_rev="test")


def _artifacts(uri: str, run_id: str, path: str = "") -> set[str]:
    """Every artifact file under ``path`` of the run, recursively."""
    out: set[str] = set()
    for item in client(uri).list_artifacts(run_id, path or None):
        out |= _artifacts(uri, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_a_failed_gate_leaves_data_docs_in_mlflow_and_names_the_failure(
    parent: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, run_id = parent
    results = tmp_path / "results"
    with pytest.raises(DataValidationError) as err:
        validate_data(
            source=write_ml1m(tmp_path / "src", rating=9),
            html_path=tmp_path / "kfp" / "report.html",
            results_dir=results,
            config=ValidateConfig(dataset="ml-1m", tracking_uri=uri, parent_run_id=run_id),
        )
    message = str(err.value)
    # the failed expectation: column, found vs expected, the rows in the user's file
    assert (
        "expect_column_values_to_be_in_set [rating]: 7 row(s) (23.3%) unexpected at ratings.dat lines "
        "4, 8, 12, 16, 20 (and 2 more); expected {'value_set': [1, 2, 3, 4, 5]}; e.g. [9, 9, 9, 9, 9]"
    ) in message
    assert "1 of 43 expectation(s) failed" in message
    index = results / "data_docs" / "index.html"
    assert f"Data Docs: {index.resolve()}" in message
    assert f"Data Docs: {index.resolve()}" in capsys.readouterr().out  # printed before the task fails

    # MLflow holds the whole site, the failure count and where the Data Docs are
    logged = _artifacts(uri, run_id, "validation")
    assert "validation/data_docs/index.html" in logged
    pages = [p for p in logged if p.startswith("validation/data_docs/validations/") and p.endswith(".html")]
    assert len(pages) == 1, logged
    run = client(uri).get_run(run_id)
    assert run.data.metrics["validation.failed"] == 1 and run.data.metrics["validation.rows"] == 30
    assert run.data.tags[tracking.names.TAG_VALIDATION] == "failed"
    docs_in_store = Path(run.data.tags[tracking.names.TAG_DATA_DOCS])
    assert docs_in_store.name == "index.html" and docs_in_store.is_file()  # a local store: a path to open
    assert f"MLflow parent run {run_id}: {docs_in_store}" in message

    # the page GX rendered for this validation is the KFP HTML output, and it shows the failing value
    kfp_page = (tmp_path / "kfp" / "report.html").read_text()
    assert kfp_page == (results / pages[0].removeprefix("validation/")).read_text()
    assert "expect_column_values_to_be_in_set" in kfp_page or "values must belong to this set" in kfp_page
    assert "rating" in kfp_page and "9" in kfp_page


def test_a_passing_gate_builds_data_docs_too_and_a_rerun_replaces_them(
    parent: tuple[str, str], tmp_path: Path
) -> None:
    uri, run_id = parent
    results = tmp_path / "results"
    config = ValidateConfig(dataset="ml-1m", tracking_uri=uri, parent_run_id=run_id)
    with pytest.raises(DataValidationError):
        validate_data(
            source=write_ml1m(tmp_path / "bad", rating=-1),
            html_path=tmp_path / "report.html",
            results_dir=results,
            config=config,
        )
    out = validate_data(
        source=write_ml1m(tmp_path / "good"),
        html_path=tmp_path / "report.html",
        results_dir=results,
        config=config,
    )
    assert out.rows == 30 and out.data_docs == results / "data_docs" / "index.html"
    # only this run's validation page: the failed run's page was removed before validating again
    pages = list((results / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 1
    assert (tmp_path / "report.html").read_text() == pages[0].read_text()
    # the GX how-to images are pruned; the site stays small enough to log on every run
    size = sum(p.stat().st_size for p in (results / "data_docs").rglob("*") if p.is_file())
    assert size < 1_500_000, size
    assert client(uri).get_run(run_id).data.tags[tracking.names.TAG_VALIDATION] == "passed"


def test_unreadable_files_fall_back_to_the_summary_page(parent: tuple[str, str], tmp_path: Path) -> None:
    """No GX run happens when the adapter cannot read the files: no Data Docs, the compact page instead."""
    uri, run_id = parent
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataValidationError, match=r"load_dataset \[\(files\)\].*report: .*validation_report"):
        validate_data(
            source=empty,
            html_path=tmp_path / "report.html",
            results_dir=tmp_path / "results",
            config=ValidateConfig(dataset="ml-1m", tracking_uri=uri, parent_run_id=run_id),
        )
    assert "FAILED" in (tmp_path / "report.html").read_text()
    assert not (tmp_path / "results" / "data_docs").exists()
    assert "validation/validation_report.html" in _artifacts(uri, run_id, "validation")


def test_a_tracking_error_does_not_hide_the_data_failure(parent: tuple[str, str], tmp_path: Path) -> None:
    uri, _ = parent
    with pytest.raises(DataValidationError) as err:
        validate_data(
            source=write_ml1m(tmp_path / "src", rating=9),
            html_path=tmp_path / "report.html",
            results_dir=tmp_path / "results",
            config=ValidateConfig(dataset="ml-1m", tracking_uri=uri, parent_run_id="no-such-run"),
        )
    assert "[rating]: 7 row(s)" in str(err.value) and "MLflow: not logged (" in str(err.value)
    assert (tmp_path / "results" / "data_docs" / "index.html").is_file()
