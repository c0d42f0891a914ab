"""The run's report gets the gate decision: register_model writes the evaluation report again with the decision
and reason (the words of the MLflow tags) and replaces the parent run's copy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mdctr import tracking
from mdctr.evaluation.report import GATE_PENDING, gate_html, with_gate
from mdctr.steps.evaluate import EvaluateConfig, evaluate
from mdctr.steps.mine_domains import MineConfig, mine_domains
from mdctr.steps.register_model import RegisterConfig, register_model
from mdctr.steps.train_model import TrainStepConfig, train_model
from mdctr.tracking.names import KEEP, PROMOTE
from mdctr.tracking.setup import client


def _gate_cell(page: str) -> str:
    (cell,) = re.findall(r'<dd id="gate-decision">(.*?)</dd>', page, re.DOTALL)
    return cell


def test_with_gate_replaces_only_the_decision() -> None:
    page = '<dl><dt>Gate decision</dt><dd id="gate-decision">pending</dd><dt>x</dt><dd>pending</dd></dl>'
    filled = with_gate(
        page, gate_html(KEEP, "overall auc 0.7 does not beat champion v1 (0.71)", 2, "m", promoted=False)
    )
    assert filled == page.replace(
        ">pending</dd><dt>x",
        ">"
        "<b>keep</b>: overall auc 0.7 does not beat champion v1 (0.71) (version 2 of m; the champion stays; it is "
        "only the challenger).</dd><dt>x",
    )
    promoted = gate_html(PROMOTE, "a < b", 1, promoted=True)
    assert promoted == "<b>promote</b>: a &lt; b (version 1; it becomes the champion)."
    with pytest.raises(ValueError, match="gate-decision"):
        with_gate("<html>no summary</html>", "x")


@pytest.fixture(scope="module")
def evaluated(ws: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """One dnn run and a miner evaluated under a parent run of its own, in an MLflow store of its own (no
    champion yet)."""
    root = tmp_path_factory.mktemp("final-report")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    tracking.configure(uri)
    parent = tracking.start_parent_run(uri, run_name="final-report", data_rev="v1", data_md5="abc")
    trained = train_model(
        prepared_dir=ws.prepared.path,
        domains_dir=None,
        bundle_dir=root / "bundle",
        results_dir=root / "results",
        config=TrainStepConfig(
            model_name="dnn",
            domain_source="none",
            epochs=1,
            train_options='{"batch_size": 512}',
            tracking_uri=uri,
            parent_run_id=parent,
        ),
    )
    mine_domains(
        prepared_dir=ws.prepared.path,
        out_dir=root / "domains",
        report_path=root / "domains.md",
        config=MineConfig(miner_options='{"num_codes": 4, "epochs": 1}'),
    )
    evaluate(
        domains_dir=root / "domains",  # the pipeline's evaluate task logs the cached miner's report
        results_dirs=[trained.results_dir],
        bundle_dirs=[trained.bundle_dir],
        leaderboard_path=root / "leaderboard.md",
        report_path=root / "report.html",
        tables_dir=root / "tables",
        winner_dir=root / "winner",
        config=EvaluateConfig(tracking_uri=uri, parent_run_id=parent),
    )
    return uri, parent, root


@pytest.mark.slow  # the `evaluated` fixture trains, evaluates and registers (~15 s on 2 shared cores)
def test_register_writes_the_final_report_with_the_gate_decision(
    evaluated: tuple[str, str, Path], ws: Any
) -> None:
    uri, parent, root = evaluated
    before = (root / "report.html").read_text()
    assert GATE_PENDING in before
    mlflow_copy = Path(client(uri).download_artifacts(parent, "evaluation/report.html", str(root / "dl1")))
    assert GATE_PENDING in mlflow_copy.read_text()  # evaluate logged the page before any gate ran

    out = register_model(
        winner_dir=root / "winner",
        prepared_dir=ws.prepared.path,
        evaluation_report=root / "report.html",
        report_path=root / "final" / "report.html",
        config=RegisterConfig(tracking_uri=uri, parent_run_id=parent),
    )
    assert out.decision == PROMOTE and out.reason.startswith("no champion yet")
    page = (root / "final" / "report.html").read_text()
    assert GATE_PENDING not in page
    cell = _gate_cell(page)
    assert cell.startswith(f"<b>{PROMOTE}</b>: no champion yet; version {out.version} becomes the first")
    assert f"version {out.version} of {out.name}" in cell
    # everything but the decision is the evaluation's page, unchanged
    assert page.replace(cell, "") == before.replace(_gate_cell(before), "")

    # one vocabulary: the words on the page are the tags on the version and on the parent run
    c = client(uri)
    version_tags = c.get_model_version(out.name, out.version).tags
    parent_tags = c.get_run(parent).data.tags
    assert version_tags["gate.decision"] == parent_tags[tracking.names.TAG_GATE_DECISION] == PROMOTE
    assert parent_tags[tracking.names.TAG_GATE_REASON] == out.reason
    # the parent run keeps one report: evaluate's copy was replaced by the final page
    final = Path(c.download_artifacts(parent, "evaluation/report.html", str(root / "dl2"))).read_text()
    assert final == page
    # evaluate put the miner's domain report beside it
    assert "domains/domain_report.html" in {a.path for a in c.list_artifacts(parent, "domains")}
    assert "domains.perplexity" in c.get_run(parent).data.metrics


@pytest.mark.slow
def test_a_kept_challenger_says_keep_and_why(evaluated: tuple[str, str, Path], ws: Any) -> None:
    uri, _, root = evaluated
    first = register_model(winner_dir=root / "winner", config=RegisterConfig(tracking_uri=uri))
    champion = first.version
    tracking.promote(uri, champion, name=first.name)
    # the same winner again cannot beat itself: kept, and the page says so in the tags' words
    out = register_model(
        winner_dir=root / "winner",
        prepared_dir=ws.prepared.path,
        evaluation_report=root / "report.html",
        report_path=root / "final-2" / "report.html",
        config=RegisterConfig(tracking_uri=uri),
    )
    assert out.decision == KEEP
    cell = _gate_cell((root / "final-2" / "report.html").read_text())
    assert cell.startswith(f"<b>{KEEP}</b>: overall auc ") and f"does not beat champion v{champion}" in cell
    assert client(uri).get_model_version(out.name, out.version).tags["gate.decision"] == KEEP
