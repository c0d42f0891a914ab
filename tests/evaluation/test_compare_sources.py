"""benchmarks/compare_sources.py: paired tests between domain sources and against one entry, from run summaries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# each test starts benchmarks/compare_sources.py in a subprocess (4–9 s each on the shared 2-core machine)
pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_sources.py"


def _write_runs(bench: Path, model: str, source: str, aucs: list[float], config: dict | None = None) -> None:
    runs = bench / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for seed, auc in enumerate(aucs):
        summary = {"model": model, "domain_source": source, "seed": seed, "test_auc": auc}
        if config is not None:
            summary["model_config"] = config
        (runs / f"{model}-{source}-seed{seed}.json").write_text(json.dumps(summary))
        # what grid.py writes beside each summary to resume from: not a summary, and skipped
        (runs / f"{model}-{source}-seed{seed}.record.json").write_text(
            json.dumps({"record": {}, "settings": {}})
        )


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True)


def _cells(out: str, start: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith(start)
    ]


def test_compares_sources_within_each_model(tmp_path: Path) -> None:
    _write_runs(tmp_path, "star", "mined", [0.751, 0.752, 0.750])
    _write_runs(tmp_path, "star", "handcrafted", [0.741, 0.743, 0.740])
    _write_runs(tmp_path, "dnn", "none", [0.745, 0.746, 0.744])  # one source only: no row
    result = _run(tmp_path)
    assert result.returncode == 0, result.stderr
    rows = _cells(result.stdout, "| star")
    assert len(rows) == 1 and "dnn" not in result.stdout
    a, b, diff, p, p_holm, seeds = rows[0]
    assert (a, b, seeds) == ("star/mined", "star/handcrafted", "3")
    # one comparison: Holm leaves its p-value as it is
    assert float(diff) == round(0.751 - 0.7413333, 4) and float(p) < 0.05 and p_holm == p


def test_against_one_entry_across_benchmark_dirs(tmp_path: Path) -> None:
    full, variant = tmp_path / "full", tmp_path / "variant"
    _write_runs(full, "dnn", "none", [0.745, 0.746, 0.744])
    _write_runs(full, "star", "none", [0.752, 0.753, 0.752])
    _write_runs(variant, "dnn", "none", [0.745, 0.746, 0.744])  # the same runs again: merged, not doubled
    _write_runs(variant, "adaptive2", "mined", [0.749, 0.751, 0.748], {"backbone": "star"})
    result = _run(full, variant, "--against", "star/none")
    assert result.returncode == 0, result.stderr
    rows = {r[0]: r for r in _cells(result.stdout, "| ")[1:]}
    assert set(rows) == {"dnn/none", "adaptive2[backbone=star]/mined"}
    row = rows["adaptive2[backbone=star]/mined"]
    assert row[1:3] == ["star/none", "-0.0030"] and row[5] == "3"
    # two comparisons: Holm multiplies the smaller p-value by 2 (capped at 1), the larger is at least it
    p_values = sorted((float(r[3]), float(r[4])) for r in rows.values())
    assert p_values[0][1] == pytest.approx(min(1.0, 2 * p_values[0][0]), rel=0.01)
    assert p_values[1][1] >= p_values[0][1]
    assert _run(full, "--against", "star/mined").stderr.count("no such entry") == 1


def test_refuses_to_merge_different_runs_and_empty_dirs(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write_runs(a, "dnn", "none", [0.745, 0.746])
    _write_runs(b, "dnn", "none", [0.745, 0.747])
    result = _run(a, b)
    assert result.returncode != 0 and "dnn/none seed 1 has test AUC 0.746" in result.stderr
    result = _run(tmp_path / "empty")
    assert result.returncode != 0 and "no run summaries" in result.stderr


def _write_store(path: Path, rows: list[tuple[str, str, int, float, float]]) -> None:
    """A grid.py --records store: one JSON line per run (test AUC is the record's ``auc``)."""
    lines = [
        json.dumps({"tag": f"{m}-{s}-seed{seed}", "record": {"model": m, "domain_source": s, "seed": seed,
                    "auc": test, "valid_auc": valid}, "settings": {}, "device": "cpu"})
        for m, s, seed, test, valid in rows
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def test_reads_a_grid_store_and_compares_the_chosen_metric(tmp_path: Path) -> None:
    store = tmp_path / "grid.runs.jsonl"
    # mined beats random on test but loses on validation: the two metrics must give opposite signs
    _write_store(
        store,
        [("star", "mined", seed, 0.810 + d, 0.800 - d) for seed, d in enumerate((0.000, 0.001, 0.002))]
        + [("star", "random", seed, 0.805 + d, 0.805 + d) for seed, d in enumerate((0.000, 0.001, 0.003))],
    )
    diffs = {}
    for metric in ("test", "valid"):
        result = _run(store, "--metric", metric)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"{metric.capitalize()} AUC")
        (row,) = _cells(result.stdout, "| star")
        assert row[:2] == ["star/mined", "star/random"] and row[5] == "3"
        diffs[metric] = float(row[2])
    assert diffs["test"] == pytest.approx(0.0047, abs=1e-4) and diffs["valid"] == pytest.approx(
        -0.0073, abs=1e-4
    )


def test_a_malformed_store_line_is_named(tmp_path: Path) -> None:
    store = tmp_path / "grid.runs.jsonl"
    _write_store(store, [("dnn", "none", 0, 0.80, 0.79)])
    store.write_text(store.read_text() + '{"tag": "x", "record": {"model": "dnn"}}\n')
    result = _run(store)
    assert result.returncode != 0 and f"{store}:2: not a grid run record" in result.stderr
    assert "Traceback" not in result.stderr
    assert "no such grid store" in _run(tmp_path / "missing.jsonl").stderr
