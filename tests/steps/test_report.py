"""The KFP HTML report: readable formats, distinct styles, and the page opened in a real headless Chromium."""

from __future__ import annotations

import base64
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mdctr.evaluation.plots import calibration_bins, entry_styles
from mdctr.evaluation.report import GATE_PENDING, fmt_ci, fmt_p
from mdctr.steps.evaluate import CALIBRATION_PNG, LEARNING_CURVES_PNG, EvaluateConfig
from mdctr.steps.fetch_data import FetchConfig, fetch_data
from mdctr.steps.train_model import TrainStepConfig, train_model

INSTALL_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install_chromium.sh"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: the flags that keep Chromium quiet on a machine with no outside network (and as root: no sandbox)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


def test_p_values_and_cis_are_readable() -> None:
    assert fmt_p(3.2e-7) == "3.2e-07" and fmt_p(0.5) == "5.0e-01" and fmt_p(math.nan) == "–"
    assert fmt_ci(0.80121, 0.79901, 0.80344) == "0.8012 [0.7990, 0.8034]"
    assert fmt_ci(0.8, math.nan, math.nan) == "0.8000"


def test_fourteen_entries_get_fourteen_colours_and_varied_markers() -> None:
    for n in (14, 20, 31):
        styles = entry_styles([f"m{i}/src" for i in range(n)])
        colours = [c for c, _ in styles.values()]
        assert len(set(colours)) == n, n
        markers = [m for _, m in styles.values()]
        assert all(markers[i] != markers[i + 1] for i in range(n - 1))


def test_calibration_bins_recover_a_calibrated_predictor() -> None:
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.01, 0.3, size=200_000)
    labels = (rng.uniform(size=probs.size) < probs).astype(float)  # calibrated by construction
    predicted, observed, rows = calibration_bins(labels, probs, bins=10)
    assert len(predicted) == 10 and rows.sum() == probs.size and rows.min() >= 19_000  # equal-count bins
    assert np.abs(predicted - observed).max() < 0.01
    predicted_2x, observed_2x, _ = calibration_bins(labels, probs * 2, bins=10)  # over-predicts CTR 2x
    assert np.allclose(predicted_2x / observed_2x, 2.0, rtol=0.1)
    with pytest.raises(ValueError, match="non-empty shape"):
        calibration_bins(np.ones(3), np.ones(4))


@pytest.fixture(scope="module")
def report(ws: Any, tmp_path_factory: pytest.TempPathFactory, evaluate_step: Any) -> tuple[Any, Path]:
    """Two entries (dnn/none, mmoe/handcrafted), two seeds, two epochs each, through the real evaluate step."""
    root = tmp_path_factory.mktemp("report")
    # a parent run of its own: evaluate logs the run's training settings as params, once per parent run
    parent = fetch_data(
        out_dir=root / "raw",
        config=FetchConfig(
            dataset="synthetic",
            dataset_options=ws.options,
            tracking_uri=ws.tracking_uri,
            kfp_run_id="kfp-report",
        ),
    ).run_id
    trained = [
        train_model(
            prepared_dir=ws.prepared.path,
            domains_dir=None,
            bundle_dir=root / f"bundle-{model}-{seed}",
            results_dir=root / f"results-{model}-{seed}",
            config=TrainStepConfig(
                model_name=model,
                domain_source=source,
                seed=seed,
                epochs=2,
                train_options='{"batch_size": 512, "patience": 5}',
                tracking_uri=ws.tracking_uri,
                parent_run_id=parent,
            ),
        )
        for model, source in (("dnn", "none"), ("mmoe", "handcrafted"))
        for seed in (0, 1)
    ]
    result = evaluate_step(root, trained, ws.tracking_uri, parent)
    return result, root


@pytest.mark.slow  # the `report` fixture trains and evaluates entries (~20 s on 2 shared cores)
def test_report_summary_comes_first_with_data_version_and_winner_reason(
    report: tuple[Any, Path], ws: Any
) -> None:
    result, root = report
    page = (root / "report.html").read_text()
    assert page.index("<h2>Summary</h2>") < page.index("<h2>Leaderboard")
    assert f"md5 {ws.fetched.md5}" in page  # from the parent run's data tags
    assert f"<b>{result.winner}</b>, exported seed {result.winner_seed}" in page
    assert "highest mean <b>validation</b> AUC" in page and GATE_PENDING in page
    # a sqlite store has no web page: no links, and the summary says so
    assert "not served over http(s)" in page and "<a href" not in page


@pytest.mark.slow
def test_report_leaderboard_is_curated_and_formatted(report: tuple[Any, Path]) -> None:
    _, root = report
    page = (root / "report.html").read_text()
    table = page[page.index('<table class="dataframe leaderboard">') :]
    header = re.findall(r"<th>(.*?)</th>", table[: table.index("</thead>")])
    assert header[:8] == [
        "#", "entry", "seeds", "valid AUC (ranks)", "valid logloss", "test AUC [95% CI]", "test logloss",
        "base-rate logloss",
    ]  # fmt: skip
    assert "auc_ci_low" not in page and "vs_dnn_p_holm" not in page  # raw column names stay in the CSV
    assert re.search(r"<td>0\.\d{4} \[0\.\d{4}, 0\.\d{4}\]</td>", table), "test AUC with its 95% CI"
    assert re.search(r"<td>\d\.\de[-+]\d\d</td>", table), "a p-value in scientific notation"


@pytest.mark.slow
def test_report_embeds_calibration_and_learning_curves(report: tuple[Any, Path]) -> None:
    _, root = report
    page = (root / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 5
    embedded = {base64.b64decode(i) for i in images}
    for name in (CALIBRATION_PNG, LEARNING_CURVES_PNG):
        assert (root / "tables" / name).read_bytes() in embedded, name
    assert "calibration of the winner" in page and "learning curves" in page


@pytest.fixture(scope="session")
def chromedriver() -> str:
    """Debian's Chromium and ChromeDriver, installed by ``scripts/install_chromium.sh`` when missing (CI runs as
    root with Debian's mirrors reachable)."""
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        if shutil.which("apt-get") is None:
            pytest.fail(f"{CHROMIUM} / {CHROMEDRIVER} missing and no apt-get to install them")
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True, timeout=900)
    return CHROMEDRIVER


@pytest.mark.integration  # starts ChromeDriver and headless Chromium (installs them when missing)
@pytest.mark.slow
def test_report_opens_in_headless_chromium(
    report: tuple[Any, Path], chromedriver: str, tmp_path: Path
) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    _, root = report
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.get((root / "tables" / "report.html").as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        assert driver.find_element("tag name", "h2").text == "Summary"
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
        )
        assert len(images) == 5
        for alt, complete, width, height in images:
            assert complete and width > 0 and height > 0, f"image not loaded: {alt}"
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == [], errors
        screenshot = root / "tables" / "report.png"  # beside the report, among the run's artifacts
        driver.set_window_size(1400, driver.execute_script("return document.body.scrollHeight") + 100)
        assert driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000


def test_mlflow_links_only_for_a_served_tracking_store(ws: Any) -> None:
    from mdctr.steps.evaluate import _parent_run, _run_links

    run = _parent_run(EvaluateConfig(tracking_uri=ws.tracking_uri, parent_run_id=ws.fetched.run_id))
    assert run is not None and run.info.run_id == ws.fetched.run_id
    served = EvaluateConfig(tracking_uri="http://mlflow.example:5000/", parent_run_id=ws.fetched.run_id)
    links = _run_links(served, run, "abc123", "dnn/none", 1)
    base = f"http://mlflow.example:5000/#/experiments/{run.info.experiment_id}/runs"
    # opened in the training-runs layout, not MLflow 3's GenAI view
    assert links == {
        "pipeline run (parent)": f"{base}/{ws.fetched.run_id}?workflowType=machine_learning",
        "winner dnn/none seed 1": f"{base}/abc123?workflowType=machine_learning",
    }
    local = EvaluateConfig(tracking_uri=ws.tracking_uri, parent_run_id=ws.fetched.run_id)
    assert _run_links(local, run, "abc123", "dnn/none", 1) == {}
