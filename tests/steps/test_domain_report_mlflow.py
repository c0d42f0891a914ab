"""The mined domains' report on the MLflow parent run: JSON, Markdown and HTML artifacts and its key numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from mdctr import tracking
from mdctr.steps.mine_domains import (
    REPORT_HTML,
    REPORT_JSON,
    MineConfig,
    log_domain_report,
    mine_domains,
    report_metrics,
)
from mdctr.tracking.setup import client


@pytest.fixture(scope="module")
def mined(ws: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("mined")
    mine_domains(
        prepared_dir=ws.prepared.path,
        out_dir=root / "domains",
        report_path=root / "report.md",
        config=MineConfig(miner_options='{"num_codes": 4, "epochs": 1}', seed=0),
    )
    return root / "domains", json.loads((root / "domains" / REPORT_JSON).read_text())


def test_report_metrics_carry_the_key_numbers(mined: tuple[Path, dict[str, Any]]) -> None:
    _, report = mined
    metrics = report_metrics(report)
    assert metrics["domains.perplexity"] == pytest.approx(report["perplexity"])
    assert metrics["domains.dead_codes"] == len(report["dead_codes"])
    assert 1 <= metrics["domains.codes_used_train"] <= metrics["domains.num_codes"] == 4
    assert metrics["domains.agreement.handcrafted.nmi"] == pytest.approx(
        report["agreement"]["handcrafted"]["nmi"]
    )
    assert metrics["domains.agreement.planted.ari"] == pytest.approx(report["agreement"]["planted"]["ari"])
    # NMI with every input feature, and the largest of them
    nmi = report["feature_nmi"]
    assert {
        k.removeprefix("domains.feature_nmi.") for k in metrics if k.startswith("domains.feature_nmi.")
    } == set(nmi)
    assert metrics["domains.feature_nmi_max"] == pytest.approx(max(nmi.values()))
    assert all(math.isfinite(v) for v in metrics.values())


def test_domain_report_is_logged_on_the_parent_run(
    mined: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    domains, report = mined
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    tracking.configure(uri)
    parent = tracking.start_parent_run(uri, run_name="domains")
    where = log_domain_report(domains, tracking_uri=uri, parent_run_id=parent)

    c = client(uri)
    names = {a.path for a in c.list_artifacts(parent, "domains")}
    assert names == {"domains/domain_report.json", "domains/domain_report.md", "domains/domain_report.html"}
    assert Path(where, REPORT_HTML).is_file()  # a local store: the location is a folder to open
    logged = json.loads(
        Path(c.download_artifacts(parent, "domains/domain_report.json", str(tmp_path))).read_text()
    )
    assert logged == report
    page = Path(where, REPORT_HTML).read_text()
    for feature in report["feature_nmi"]:
        assert f"<td>{feature}</td>" in page, feature
    assert f"perplexity {report['perplexity']:.2f}" in page and "<td>planted</td>" in page
    metrics = c.get_run(parent).data.metrics
    assert metrics == pytest.approx(report_metrics(report))
