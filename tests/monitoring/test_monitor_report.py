"""The monitoring report opens in a real headless Chromium and shows the domain-share plot; the HTML and
JSON agree with the result."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mdctr.monitoring.logsource import Window
from mdctr.monitoring.report import DOMAIN_PLOT_ALT, write_report
from mdctr.monitoring.run import MonitorConfig, build_reference, monitor

INSTALL_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install_chromium.sh"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


@pytest.fixture(scope="module")
def report(traffic: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    from mdctr.monitoring.replay import request_ids

    out = tmp_path_factory.mktemp("report")
    test = traffic.test
    w = np.where(test[traffic.schema.domain].to_numpy() == 0, 3.0, 1.0)
    window = test.iloc[np.random.default_rng(0).choice(len(test), len(test), p=w / w.sum())].reset_index(
        drop=True
    )
    log = traffic.write(window)
    ids = request_ids(sorted(log.rglob("part-*.parquet")))
    order = np.argsort([int(i.rsplit(":", 1)[1]) for i in ids])
    labels = pd.DataFrame({"mdctr_request_id": np.asarray(ids)[order], "label": window["label"].to_numpy()})
    labels.to_parquet(out / "labels.parquet")
    cfg = MonitorConfig(gx_rows=1000)
    ref = build_reference(traffic.prepared, cfg, reference_codes=traffic.codes)
    result = monitor(
        Window(str(log)), ref, cfg, labels_path=out / "labels.parquet", validation_dir=out / "gx"
    )
    write_report(result, out)
    return result, out


def test_summary_matches_result(report: tuple[Any, Path]) -> None:
    result, out = report
    summary = json.loads((out / "monitoring_summary.json").read_text())
    assert summary["rows"] == result.rows and summary["breaches"] == list(result.breaches)
    assert summary["handcrafted"]["window"] == pytest.approx(list(result.handcrafted.window))
    assert any("handcrafted domain shares" in b for b in result.breaches)


@pytest.fixture(scope="session")
def chromedriver() -> str:
    """Debian's Chromium and ChromeDriver, installed by ``scripts/install_chromium.sh`` when missing."""
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        if shutil.which("apt-get") is None:
            pytest.fail(f"{CHROMIUM} / {CHROMEDRIVER} missing and no apt-get to install them")
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True, timeout=900)
    return CHROMEDRIVER


@pytest.mark.integration  # starts ChromeDriver and headless Chromium (installs them when missing)
def test_report_opens_in_headless_chromium(
    report: tuple[Any, Path], chromedriver: str, tmp_path: Path
) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    _, out = report
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.get((out / "monitoring_report.html").as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        assert "BREACH" in driver.find_element("tag name", "h1").text
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
        )
        alts = [alt for alt, *_ in images]
        assert DOMAIN_PLOT_ALT in alts and "AUC over time per domain" in alts, alts
        for alt, complete, width, height in images:
            assert complete and width > 200 and height > 100, f"image not loaded: {alt}"
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == [], errors
        assert driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
