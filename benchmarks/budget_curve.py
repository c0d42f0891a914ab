"""AUC against the FLOP budget: the entries of several grids, one grid per budget, as a table and a figure.

Reads ``benchmarks/grid.py --records`` stores (each made at one ``--budget``, e.g. ``model:dnn@0.25``) and
writes a Markdown table (per entry and budget: FLOPs/sample, width, validation and test AUC with a 95% CI over
seeds, test logloss) and a PNG (AUC vs FLOPs, one line per entry, validation and test panels). It also asks
the issue-23 question at every budget, on **validation** AUC (what choices are made on): does a domain
mechanism beat the same model without domains? Each ``model/source`` is paired by seed with ``model/none``
(``adaptive2/mined`` with ``star/none``, its backbone without domains); Holm over every such comparison at
every budget (one family).

    .venv/bin/python benchmarks/budget_curve.py docs/benchmarks/runs/ml1m-budget-*.runs.jsonl \
        --title "ML-1M (users 1–2999)" --md docs/benchmarks/budget/ml1m-curve.md --png docs/benchmarks/ml1m_auc_vs_budget.png
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from mdctr.evaluation.leaderboard import read_run_store
from mdctr.evaluation.plots import plot_auc_vs_budget
from mdctr.evaluation.significance import holm, paired_ttest

#: the model without domains that a domain mechanism is compared with (default: the same model's ``none``)
BASELINE_OF = {"adaptive2/mined": "star/none"}


def budget_multiple(spec: str) -> float:
    """``model:dnn@0.25`` → 0.25; ``model:dnn`` → 1.0."""
    _, _, multiple = spec.partition("@")
    return float(multiple) if multiple else 1.0


def read_runs(paths: list[Path]) -> pd.DataFrame:
    """One row per run: entry, budget multiple, seed, FLOPs, width and the metrics."""
    rows = []
    for path in paths:
        for row in read_run_store(path).values():
            r = row["record"]
            rows.append(
                {
                    "entry": f"{r['model']}/{r['domain_source']}",
                    "budget": budget_multiple(row["settings"]["budget"]),
                    "seed": r["seed"],
                    "flops": r["flops"],
                    "width": r["width"],
                    "valid": r["valid_auc"],
                    "test": r["auc"],
                    "logloss": r["logloss"],
                }
            )
    if not rows:
        raise SystemExit(f"no runs in {[str(p) for p in paths]}")
    runs = pd.DataFrame(rows)
    twice = runs[runs.duplicated(["entry", "budget", "seed"], keep=False)]
    if len(twice):
        raise SystemExit(
            f"runs listed twice (entry, budget, seed): {twice[['entry', 'budget', 'seed']].values.tolist()}"
        )
    return runs


def _ci(values: pd.Series) -> float:
    """Half-width of the 95% t-interval of the mean (NaN for one value)."""
    n = len(values)
    return float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (entry, budget): seeds, mean FLOPs and width, mean/std/CI of validation and test AUC, mean logloss."""
    g = runs.groupby(["entry", "budget"], sort=False)
    out = g.agg(
        seeds=("seed", "size"),
        flops=("flops", "mean"),
        width=("width", "mean"),
        valid_mean=("valid", "mean"),
        valid_std=("valid", "std"),
        valid_ci=("valid", _ci),
        test_mean=("test", "mean"),
        test_std=("test", "std"),
        test_ci=("test", _ci),
        logloss=("logloss", "mean"),
    ).reset_index()
    # entries in the order of their best validation AUC at the largest budget they ran at
    top = out.sort_values("budget").groupby("entry").tail(1).sort_values("valid_mean", ascending=False)
    order = {e: i for i, e in enumerate(top["entry"])}
    return out.sort_values(["entry", "budget"], key=lambda s: s.map(order) if s.name == "entry" else s)


def mechanism_tests(runs: pd.DataFrame) -> pd.DataFrame:
    """Every domain-routed entry against its model without domains, at each budget, on validation AUC."""
    by = defaultdict(dict)
    for r in runs.itertuples():
        by[r.entry, r.budget][r.seed] = r.valid
    rows = []
    for (entry, budget), values in sorted(by.items()):
        if entry.endswith("/none"):
            continue
        base = BASELINE_OF.get(entry, entry.split("/")[0] + "/none")
        ref = by.get((base, budget))
        if not ref:
            continue
        seeds = sorted(set(values) & set(ref))
        t = paired_ttest([values[s] for s in seeds], [ref[s] for s in seeds])
        rows.append(
            {
                "budget": budget,
                "entry": entry,
                "against": base,
                "seeds": len(seeds),
                "diff": t.diff,
                "p": t.p_value,
            }
        )
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = holm(out["p"].tolist())
    return out


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4f}" if np.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def markdown(table: pd.DataFrame, tests: pd.DataFrame, command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        "Per entry and budget (multiple of the dnn's FLOPs): mean over seeds; ± is the std, [·] the 95% CI of "
        "the mean. Entries ordered by validation AUC at their largest budget; choose on validation, test is "
        "reported.",
        "",
        "| entry | budget | seeds | FLOPs/sample | width | valid AUC | test AUC | test 95% CI | test logloss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.entry} | {r.budget:g}× | {r.seeds} | {r.flops:,.0f} | {r.width:.3f} "
            f"| {_pm(r.valid_mean, r.valid_std)} | {_pm(r.test_mean, r.test_std)} "
            f"| [{r.test_mean - r.test_ci:.4f}, {r.test_mean + r.test_ci:.4f}] | {r.logloss:.4f} |"
        )
    lines += [
        "",
        "Domain mechanisms against the same model without domains (`adaptive2/mined` against `star/none`), "
        "validation AUC, paired t over seeds, Holm over every row:",
        "",
        "| budget | entry | against | seeds | Δ valid AUC | p | p (Holm) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in tests.sort_values(["budget", "diff"], ascending=[True, False]).itertuples():
        lines.append(
            f"| {r.budget:g}× | {r.entry} | {r.against} | {r.seeds} | {r.diff:+.4f} | {r.p:.3g} | {r.p_holm:.3g} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", nargs="+", type=Path, help="grid.py --records stores, one budget each")
    ap.add_argument("--title", default="grid", help="what the runs are on, e.g. the dataset")
    ap.add_argument("--md", type=Path, required=True)
    ap.add_argument("--png", type=Path, required=True)
    args = ap.parse_args(argv)
    runs = read_runs(args.records)
    table, tests = curves(runs), mechanism_tests(runs)
    command = shlex.join(
        [".venv/bin/python", "benchmarks/budget_curve.py", *(sys.argv[1:] if argv is None else argv)]
    )
    args.md.write_text(f"# {args.title}: AUC against the FLOP budget\n\n" + markdown(table, tests, command))
    plot_auc_vs_budget(table, args.png, title=f"{args.title}: AUC vs FLOPs per sample across budgets")
    print(args.md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
