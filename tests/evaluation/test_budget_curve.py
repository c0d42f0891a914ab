"""benchmarks/budget_curve.py: AUC against the FLOP budget from grid stores, and each domain mechanism against
the same model without domains at every budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# each test starts benchmarks/budget_curve.py in a subprocess (a few seconds: pandas, scipy, matplotlib)
pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "budget_curve.py"

#: valid AUC per seed of each entry; test AUC is valid + 0.001
ENTRIES = {
    "star/none": [0.800, 0.801, 0.802],
    "star/handcrafted": [0.7990, 0.8005, 0.8008],  # −0.0009 on average: a loss, not significant
    "adaptive2/mined": [0.803, 0.804, 0.805],  # +0.003 on every seed against star/none
    "dnn/none": [0.790, 0.791, 0.792],
}


def _store(path: Path, budget: str, scale: float) -> Path:
    """A grid store at ``budget`` whose AUCs are ENTRIES' shifted by ``scale`` and FLOPs by the budget."""
    lines = []
    for entry, values in ENTRIES.items():
        model, source = entry.split("/")
        for seed, valid in enumerate(values):
            record = {
                "model": model,
                "domain_source": source,
                "seed": seed,
                "flops": 100_000.0 * scale,
                "width": scale,
                "valid_auc": valid + (scale - 1) / 100,
                "auc": valid + 0.001 + (scale - 1) / 100,
                "logloss": 0.53,
            }
            tag = f"{model}-{source}-seed{seed}"
            lines.append(
                json.dumps({"tag": tag, "record": record, "settings": {"budget": budget}, "device": "cpu"})
            )
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True)


def test_table_figure_and_mechanism_tests_at_every_budget(tmp_path):
    half = _store(tmp_path / "half.jsonl", "model:dnn@0.5", 0.5)
    full = _store(tmp_path / "full.jsonl", "model:dnn", 1.0)
    md, png = tmp_path / "curve.md", tmp_path / "curve.png"
    done = _run(half, full, "--title", "toy", "--md", md, "--png", png)
    assert done.returncode == 0, done.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [
        [c.strip() for c in line.strip("|").split("|")] for line in md.read_text().splitlines() if "|" in line
    ]
    table = {(r[0], r[1]): r for r in rows if r[1].endswith("×") and r[2].isdigit()}
    assert len(table) == 8  # 4 entries × 2 budgets
    assert table["adaptive2/mined", "1×"][3] == "100,000" and table["adaptive2/mined", "0.5×"][3] == "50,000"
    assert table["adaptive2/mined", "1×"][5] == "0.8040 ± 0.0010"  # validation mean ± std over the 3 seeds
    assert table["adaptive2/mined", "1×"][6] == "0.8050 ± 0.0010"  # test
    # the mechanisms: adaptive2/mined against STAR without domains, star/handcrafted against star/none; the dnn
    # has no domain entry and is not compared
    tests = {(r[0], r[1]): r for r in rows if r[0].endswith("×") and len(r) == 7}
    assert set(tests) == {(b, e) for b in ("0.5×", "1×") for e in ("adaptive2/mined", "star/handcrafted")}
    assert tests["1×", "adaptive2/mined"][2] == "star/none" and tests["1×", "adaptive2/mined"][4] == "+0.0030"
    assert float(tests["1×", "adaptive2/mined"][5]) == 0.0  # the same gain on every seed
    assert (
        tests["1×", "star/handcrafted"][4] == "-0.0009" and float(tests["1×", "star/handcrafted"][6]) > 0.05
    )


def test_a_run_in_two_stores_is_refused_by_name(tmp_path):
    one = _store(tmp_path / "a.jsonl", "model:dnn", 1.0)
    two = _store(tmp_path / "b.jsonl", "model:dnn", 1.0)
    done = _run(one, two, "--md", tmp_path / "x.md", "--png", tmp_path / "x.png")
    assert done.returncode != 0 and "runs listed twice" in done.stderr and "star/none" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.md").exists()
