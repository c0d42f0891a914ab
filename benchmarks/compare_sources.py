"""Paired comparisons that the leaderboard does not print, from finished ``mdctr benchmark`` directories.

The leaderboard tests every entry against the dnn and against its own best entry. This script reads the
per-run summaries in ``DIR/runs/`` of one or more benchmark directories (runs are deterministic on one
machine, so an entry trained by two benchmarks with the same seeds is the same run) and asks:

* by default, for each model: does routing by mined domains beat routing by the hand-crafted ones, and does
  either beat the same model with one domain?
* with ``--against ENTRY``: how does every entry compare with ENTRY (e.g. ``star/none``)?

Paired t-test over the seeds both entries ran.

    .venv/bin/python benchmarks/compare_sources.py runs/bench-epinions-full
    .venv/bin/python benchmarks/compare_sources.py runs/bench-ml1m-full runs/bench-ml1m-a2sg --against star/none
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from mdctr.evaluation.benchmark import variant_name
from mdctr.evaluation.significance import compare_entries, holm

PAIRS = (
    ("mined", "handcrafted"),
    ("mined", "none"),
    ("mined", "random"),
    ("mined", "binned"),
    ("handcrafted", "none"),
    ("handcrafted", "random"),
)


def load_aucs(bench_dirs: list[Path]) -> dict[str, dict[str, dict[int, float]]]:
    """model (with its overrides) → domain source → seed → test AUC, from ``DIR/runs/*.json``."""
    aucs: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    seen: dict[tuple[str, str, int], Path] = {}
    for bench_dir in bench_dirs:
        runs = sorted((bench_dir / "runs").glob("*.json"))
        if not runs:
            raise SystemExit(
                f"no run summaries in {bench_dir / 'runs'}: is {bench_dir} an `mdctr benchmark` --out?"
            )
        for path in runs:
            s = json.loads(path.read_text())
            model, source, seed = (
                variant_name(s["model"], s.get("model_config")),
                s["domain_source"],
                s["seed"],
            )
            earlier = aucs[model][source].get(seed)
            if earlier is not None and earlier != s["test_auc"]:
                raise SystemExit(
                    f"{model}/{source} seed {seed} has test AUC {earlier} in {seen[model, source, seed]} but "
                    f"{s['test_auc']} in {path}: not the same run (another machine or code?); compare them apart"
                )
            aucs[model][source][seed] = s["test_auc"]
            seen[model, source, seed] = path
    return aucs


def _print(rows: list[tuple[str, str, dict[int, float], dict[int, float]]]) -> None:
    """One table row per comparison; the p-values Holm-corrected over the whole printed family."""
    tests = [compare_entries(auc_a, auc_b) for _, _, auc_a, auc_b in rows]
    adjusted = holm([t.p_value for t in tests])
    for (a, b, _, _), test, p_holm in zip(rows, tests, adjusted, strict=True):
        print(f"| {a} | {b} | {test.diff:+.4f} | {test.p_value:.3g} | {p_holm:.3g} | {test.n} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_dirs", type=Path, nargs="+", help="output directories of `mdctr benchmark`")
    parser.add_argument("--against", default="", help="compare every entry with this one (model/source)")
    args = parser.parse_args()
    aucs = load_aucs(args.bench_dirs)
    names = ", ".join(str(d) for d in args.bench_dirs)
    print(f"Paired t-test over common seeds; runs from {names}.\n")
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
