"""The production loop, as a user runs it every period, through the real commands on real (reduced) ML-1M periods.

``scripts/ml1m-periods`` cuts ML-1M (users 1–2999) into 4 periods of equal rows. Period 1 is trained cold by
``mdctr pipeline run``; periods 2–4 each warm-start from the champion, pass (or fail) the promotion gate on the
newest period's validation half, roll out as a 20% canary, and ``mdctr models promote --finish`` completes the
rollout. After each period the champion is served by ``mdctr serve --log``, the next period's rows are replayed
through ``/invocations``, and ``mdctr monitor`` compares that request log with the champion's training data: the
clean replay passes, while a replay with one hand-crafted domain's share tripled, and one with a flood of unseen
movie ids, are flagged (exit 1, naming the domain shares and the OOV share).

Consecutive periods of real data drift by themselves: most of a new period's users (and their zip codes) are new,
and the popular movies change. The monitor is therefore run with the per-feature limits a user sets for such
columns (``TURNOVER``, above the natural period-to-period values measured in docs/monitoring.md): user and zip
PSI are reported but never a breach, their OOV excess may reach 30%, movie PSI 0.5. Every other limit is the
default, and the planted drifts are far beyond these.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from mdctr.pipeline import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
NAME = "mdctr-ml-1m-periods"
#: rows kept from ML-1M (users 1–2999), evenly over time: 4 periods of 20,000 rows
ROWS = 80_000
CANARY = 20
RUN = ["--models", "star", "--domain-sources", "handcrafted", "--max-epochs", "2", "--canary", str(CANARY)]
TURNOVER = [
    *(
        "--feature-max-psi",
        "user_id=inf",
        "--feature-max-psi",
        "zip=inf",
        "--feature-max-psi",
        "movie_id=0.5",
    ),
    *("--feature-max-oov-share", "user_id=0.3", "--feature-max-oov-share", "zip=0.3"),
]


def _mdctr(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mdctr"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=env["LOOP_DIR"],
    )


def _ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    return res.stdout


def _period_rows(periods: Path, meta: list[dict[str, Any]], t: int) -> pd.DataFrame:
    """Period ``t``'s own rows (1-based): the newest rows of its cumulative table."""
    table = pd.read_parquet(periods / meta[t - 1]["table"] / "ml1m.parquet")
    first = meta[t - 1]["newest_period_time"][0]
    return table[table["timestamp"] >= first].reset_index(drop=True)


def _replay(rows: pd.DataFrame, log_dir: Path, env: dict[str, str], tag: str) -> None:
    """Serve the champion with the request log on and send ``rows`` through /invocations, 500 per request."""
    from mdctr.serving.requestlog import RequestLogSettings
    from mdctr.serving.server import start_model_server

    columns = ["user_id", "movie_id", "gender", "occupation", "zip", "genre", "age", "domain"]
    with start_model_server(
        f"models:/{NAME}@champion",
        tracking_uri=env["MLFLOW_TRACKING_URI"],
        request_log=RequestLogSettings(uri=str(log_dir)),
        env={"OMP_NUM_THREADS": "1"},
        log_dir=log_dir.parent / f"server-{tag}",
    ) as server:
        for i in range(0, len(rows), 500):
            part = rows.iloc[i : i + 500][columns]
            body = {"dataframe_split": json.loads(part.to_json(orient="split", index=False))}
            r = requests.post(
                server.url + "/invocations", json=body, headers={"X-Request-Id": f"{tag}-{i}"}, timeout=30
            )
            assert r.status_code == 200, r.text[:500]
            assert len(r.json()["predictions"]) == len(part)
    # the server stopped with SIGTERM: every logged row is on disk
    logged = sum(pd.read_parquet(p).shape[0] for p in log_dir.rglob("*.parquet"))
    assert logged == len(rows)


def _monitor(
    log_dir: Path, reference: Path, out: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return _mdctr(
        "monitor", "--log", str(log_dir), "--reference", str(reference), "--out", str(out), *TURNOVER, env=env
    )


def _run_dir(stdout: str) -> Path:
    return Path(re.search(r"^artifacts: (\S+)", stdout, re.M).group(1))


def test_four_periods_cold_then_warm_gate_canary_finish_serve_log_and_monitor(tmp_path: Path) -> None:
    from mdctr import tracking

    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "LOOP_DIR": str(tmp_path),
    }
    periods = tmp_path / "periods"
    subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "ml1m-periods"), str(periods), "--rows", str(ROWS)],
        check=True,
        capture_output=True,
        timeout=300,
        env=env,
    )
    meta = json.loads((periods / "periods.json").read_text())
    assert [m["rows"] for m in meta] == [ROWS // 4 * t for t in (1, 2, 3, 4)]
    uri, runs = env["MLFLOW_TRACKING_URI"], str(tmp_path / "runs")
    common = ["pipeline", "run", "--dataset", "table", *RUN, "--runs-dir", runs, "--tracking-uri", uri]

    # period 1: cold; the first version has no champion to share traffic with, so it becomes champion
    out = _ok(_mdctr(*common, "--source", str(periods / meta[0]["table"]), "--split", "time", env=env))
    assert "is now champion" in out
    reference = _run_dir(out) / "prepare-data" / "prepared"
    promoted = 0
    for t in (2, 3, 4):
        # serve period t-1's champion, replay period t's traffic, monitor it against the champion's training data
        log_dir = tmp_path / f"log{t}"
        _replay(_period_rows(periods, meta, t), log_dir, env, tag=f"p{t}")
        clean = _monitor(log_dir, reference, tmp_path / f"monitor{t}", env)
        assert clean.returncode == 0, clean.stderr[-3000:]
        summary = json.loads((tmp_path / f"monitor{t}" / "monitoring_summary.json").read_text())
        assert summary["rows"] == meta[t - 1]["newest_period_rows"] and summary["breaches"] == []

        champion = tracking.alias_version(uri, "champion", name=NAME)
        out = _ok(
            _mdctr(
                *common,
                "--source",
                str(periods / meta[t - 1]["table"]),
                "--eval-period",
                meta[t - 1]["eval_period"],
                "--warm-start",
                "champion",
                env=env,
            )
        )
        log_text = Path(re.search(r"^full log: (\S+)", out, re.M).group(1)).read_text()
        assert f"warm-started from {NAME} v{champion} (champion)" in log_text
        version = re.search(rf"models:/{NAME}/(\d+)", out).group(1)
        if "is now canary" in out:  # the gate passed on the newest period's validation half
            promoted += 1
            assert tracking.alias_version(uri, "canary", name=NAME) == version
            assert tracking.alias_version(uri, "champion", name=NAME) == champion
            _ok(_mdctr("models", "promote", "--finish", "--tracking-uri", uri, env=env))
            assert tracking.alias_version(uri, "champion", name=NAME) == version
            assert tracking.alias_version(uri, "canary", name=NAME) is None
            reference = _run_dir(out) / "prepare-data" / "prepared"
        else:
            assert (
                "stays challenger" in out and tracking.alias_version(uri, "champion", name=NAME) == champion
            )
    assert promoted >= 1, "no period's challenger passed the gate"
    actions = [(e["action"], e["version"]) for e in tracking.champion_history(uri, name=NAME)]
    assert actions[0] == ("promote", "1")
    assert actions.count(("canary", actions[-1][1])) == 1 and actions[-1][0] == "finish"

    # planted drift on the last period's traffic, through the server too
    rows = _period_rows(periods, meta, 4)
    rng = np.random.default_rng(0)
    smallest = int(rows["domain"].value_counts().idxmin())  # tripling a large share moves it little
    weight = np.where(rows["domain"].to_numpy() == smallest, 3.0, 1.0)
    tripled = rows.iloc[rng.choice(len(rows), size=len(rows), p=weight / weight.sum())].reset_index(drop=True)
    flood = rows.copy()
    hit = rng.random(len(flood)) < 0.3
    flood.loc[hit, "movie_id"] = 100_000 + np.arange(int(hit.sum()))
    for tag, window, expect in (
        ("domain", tripled, "handcrafted domain shares: PSI"),
        ("unseen", flood, "feature 'movie_id': OOV share"),
    ):
        log_dir = tmp_path / f"log-{tag}"
        _replay(window, log_dir, env, tag=tag)
        res = _monitor(log_dir, reference, tmp_path / f"monitor-{tag}", env)
        assert res.returncode == 1, (res.stdout[-2000:], res.stderr[-2000:])
        breaches = [x for x in res.stderr.splitlines() if x.startswith("breach: ")]
        assert any(expect in x for x in breaches), breaches
