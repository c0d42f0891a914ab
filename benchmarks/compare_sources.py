"""Paired comparisons that the leaderboard does not print, from finished ``mdctr benchmark`` directories.

The leaderboard tests every entry against the dnn and against its own best entry. This script reads the
per-run summaries in ``DIR/runs/`` of one or more benchmark directories (runs are deterministic on one
machine, so an entry trained by two benchmarks with the same seeds is the same run) and asks:

* by default, for each model: does routing by mined domains beat routing by the hand-crafted ones, and does
  either beat the same model with one domain?
* with ``--against ENTRY``: how does every entry compare with ENTRY (e.g. ``star/none``)?

Inputs are benchmark directories or ``benchmarks/grid.py --records`` stores (``.jsonl``: the committed runs of
a grid, whose per-run summaries are not kept). ``--metric valid`` compares validation AUC (what choices are made
on), the default ``test`` compares test AUC (what is reported). Paired t-test over the seeds both entries ran.

    .venv/bin/python benchmarks/compare_sources.py runs/bench-epinions-full
    .venv/bin/python benchmarks/compare_sources.py runs/bench-ml1m-full runs/bench-ml1m-a2sg --against star/none
    .venv/bin/python benchmarks/compare_sources.py docs/benchmarks/grid-ml1m.runs.jsonl --metric valid
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from mdctr.evaluation.leaderboard import read_run_store
from mdctr.evaluation.significance import compare_entries, holm
from mdctr.steps.grid import variant_name

PAIRS = (
    ("mined", "handcrafted"),
    ("mined", "none"),
    ("mined", "random"),
    ("mined", "binned"),
    ("handcrafted", "none"),
    ("handcrafted", "random"),
)


#: the AUC compared, by --metric: its key in a run summary (``DIR/runs/*.json``) and in a store's record
METRIC_KEYS = {"test": ("test_auc", "auc"), "valid": ("best_valid_auc", "valid_auc")}


def _runs(source: Path, metric: str) -> list[tuple[str, str, int, float, str]]:
    """(model with its overrides, domain source, seed, AUC, where) of every run in a directory or store."""
    summary_key, record_key = METRIC_KEYS[metric]
    if source.suffix == ".jsonl":
        if not source.is_file():
            raise SystemExit(f"{source}: no such grid store")
        try:
            store = read_run_store(source)
        except ValueError as e:
            raise SystemExit(str(e)) from None
        rows = []
        for tag, row in store.items():
            r = row["record"]
            if record_key not in r:
                raise SystemExit(f"{source}: {tag} has no {record_key!r}: not a grid run record")
            rows.append((r["model"], r["domain_source"], r["seed"], r[record_key], f"{source} ({tag})"))
        return rows
    # grid.py also leaves TAG.record.json (its resume record) beside each summary TAG.json
    paths = sorted(p for p in (source / "runs").glob("*.json") if not p.name.endswith(".record.json"))
    if not paths:
        raise SystemExit(f"no run summaries in {source / 'runs'}: is {source} an `mdctr benchmark` --out?")
    rows = []
    for path in paths:
        s = json.loads(path.read_text())
        model = variant_name(s["model"], s.get("model_config"))
        rows.append((model, s["domain_source"], s["seed"], s[summary_key], str(path)))
    return rows


def load_aucs(sources: list[Path], metric: str = "test") -> dict[str, dict[str, dict[int, float]]]:
    """model (with its overrides) → domain source → seed → AUC, from benchmark directories or grid stores."""
    aucs: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    seen: dict[tuple[str, str, int], str] = {}
    for source in sources:
        for model, domain_source, seed, auc, where in _runs(source, metric):
            earlier = aucs[model][domain_source].get(seed)
            if earlier is not None and earlier != auc:
                raise SystemExit(
                    f"{model}/{domain_source} seed {seed} has {metric} AUC {earlier} in "
                    f"{seen[model, domain_source, seed]} but {auc} in {where}: not the same run (another machine "
                    "or code?); compare them apart"
                )
            aucs[model][domain_source][seed] = auc
            seen[model, domain_source, seed] = where
    return aucs


def _print(rows: list[tuple[str, str, dict[int, float], dict[int, float]]]) -> None:
    """One table row per comparison; the p-values Holm-corrected over the whole printed family."""
    tests = [compare_entries(auc_a, auc_b) for _, _, auc_a, auc_b in rows]
    adjusted = holm([t.p_value for t in tests])
    for (a, b, _, _), test, p_holm in zip(rows, tests, adjusted, strict=True):
        print(f"| {a} | {b} | {test.diff:+.4f} | {test.p_value:.3g} | {p_holm:.3g} | {test.n} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "bench_dirs",
        type=Path,
        nargs="+",
        help="output directories of `mdctr benchmark`, or grid.py stores (.jsonl)",
    )
    parser.add_argument("--against", default="", help="compare every entry with this one (model/source)")
    parser.add_argument(
        "--metric", choices=sorted(METRIC_KEYS), default="test", help="which AUC (default: test)"
    )
    args = parser.parse_args()
    aucs = load_aucs(args.bench_dirs, args.metric)
    names = ", ".join(str(d) for d in args.bench_dirs)
    print(f"{args.metric.capitalize()} AUC, paired t-test over common seeds; runs from {names}.\n")
    print("| A | B | AUC A − AUC B | p | p (Holm) | seeds |")
    print("|---|---|---|---|---|---|")
    rows = []
    if args.against:
        model, _, source = args.against.rpartition("/")
        if source not in aucs.get(model, {}):
            raise SystemExit(f"--against {args.against}: no such entry in {names}")
        for other in sorted(aucs):
            for src, runs in sorted(aucs[other].items()):
                if (other, src) != (model, source):
                    rows.append((f"{other}/{src}", args.against, runs, aucs[model][source]))
    else:
        for model in sorted(aucs):
            for a, b in PAIRS:
                if a in aucs[model] and b in aucs[model]:
                    rows.append((f"{model}/{a}", f"{model}/{b}", aucs[model][a], aucs[model][b]))
    _print(rows)


if __name__ == "__main__":
    main()
