"""The FLOP-matched leaderboard: one row per (model, domain source), aggregated over seeds.

**Choose on validation, report on test.** Entries are ranked by their mean validation AUC over seeds (the
validation AUC of each run's early-stopping epoch); the first entry is the winner. Test metrics are reported
beside it and never used to rank or choose.

Each row reports mean ± std (over seeds, ddof=1) of the validation AUC and logloss and of the pooled test AUC
and logloss, the base-rate predictor's test logloss (the train positive rate for every test row; an entry
whose test logloss is above it is flagged: its probabilities are worse than a constant's, whatever its AUC),
a 95% confidence interval of the test AUC, the mean per-domain test AUC (hand-crafted domains), FLOPs per
sample and dense parameters, and two paired significance tests on test AUC (see
:mod:`mdctr.evaluation.significance`): against the FLOP-matched single-domain baseline (``dnn`` with domain
source ``none``) and against the best entry (rank 1), each with Holm-corrected p-values over the table's
family of comparisons. Written as Markdown, CSV and JSON plus two PNG plots.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mdctr.evaluation.significance import PairedTest, auc_confidence_interval, compare_entries, holm
from mdctr.io import json_safe, write_json_atomic

BASELINE = ("dnn", "none")
SIGNIFICANCE_NOTE = (
    "p-values are two-sided: a paired t-test over seeds (scipy.stats.ttest_rel) when two or more seeds are "
    "paired, otherwise the DeLong test for correlated AUCs on the pooled test predictions; p-values are "
    "Holm-corrected within each column (the family of comparisons in this table). Ranked by mean validation "
    "AUC; the 95% CI of test AUC is a t-interval over seeds, or DeLong's for one seed."
)


def read_run_store(path: Path | None) -> dict[str, dict[str, Any]]:
    """A grid store (``benchmarks/grid.py --records``: one JSON object per line with its ``tag``, the run's
    ``record``, the ``settings`` it ran with and the ``device``) by tag; empty when there is no file yet.

    Raises:
        ValueError: a line is not such an object (the message names the file and line).
    """
    if path is None or not path.is_file():
        return {}
    store: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
                missing = [k for k in ("model", "domain_source", "seed") if k not in row["record"]]
                if missing:
                    raise KeyError(f"record.{missing[0]}")
                store[row["tag"]] = row
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: not a grid run record ({e!r} missing or malformed)") from None
    return store


@dataclass(frozen=True)
class RunRecord:
    """One trained run (one model, domain source and seed).

    ``labels``/``probs`` ([N_test], same row order in every run) feed the one-seed significance fallback.
    """

    model: str
    domain_source: str
    seed: int
    width: float
    flops: float
    dense_params: int
    auc: float
    logloss: float
    #: per hand-crafted domain; None (JSON null) or NaN where the domain's test rows hold one class only
    domain_auc: dict[str, float | None] = field(default_factory=dict)
    labels: np.ndarray | None = None
    probs: np.ndarray | None = None
    train_samples_per_s: float = math.nan
    wall_s: float = math.nan
    #: validation AUC of the run's early-stopping epoch: what the leaderboard ranks by
    valid_auc: float = math.nan
    #: validation logloss of the returned model (calibrated when the run calibrated)
    valid_logloss: float = math.nan
    #: test logloss of the base-rate predictor (train positive rate for every row) on this run's test rows
    base_logloss: float = math.nan

    @property
    def entry(self) -> str:
        return f"{self.model}/{self.domain_source}"

    @classmethod
    def from_trained(cls, trained: Any) -> RunRecord:
        """From a :class:`mdctr.training.TrainedModel`."""
        return cls(
            model=trained.model_name,
            domain_source=trained.domain_source,
            seed=trained.seed,
            width=trained.width,
            flops=trained.flops,
            dense_params=trained.dense_params,
            auc=trained.metrics["auc"],
            logloss=trained.metrics["logloss"],
            domain_auc={k: v["auc"] for k, v in trained.metrics["domains"].items()},
            labels=trained.labels,
            probs=trained.predictions,
            train_samples_per_s=trained.fit.train_samples_per_s,
            wall_s=trained.fit.wall_s,
            valid_auc=trained.fit.best_valid_auc,
            valid_logloss=trained.valid_logloss,
            base_logloss=trained.base_rate.get("logloss", math.nan),
        )

    def to_json(self) -> dict[str, Any]:
        """Everything except the prediction arrays."""
        return {
            k: getattr(self, k)
            for k in self.__dataclass_fields__  # type: ignore[attr-defined]
            if k not in ("labels", "probs")
        }


def _std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _test_columns(prefix: str, test: PairedTest | None, note: str = "") -> dict[str, Any]:
    if test is None:
        return {f"{prefix}_diff": math.nan, f"{prefix}_p": math.nan, f"{prefix}_test": note}
    return {f"{prefix}_diff": test.diff, f"{prefix}_p": test.p_value, f"{prefix}_test": test.method}


def _mean_finite(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _logloss_columns(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """Validation logloss (mean ± std), the base-rate predictor's test logloss and the flag
    ``worse_than_base``: mean test logloss above the base rate's on the same rows (False when unknown, e.g. runs
    recorded before the base rate was)."""
    valid = [r.valid_logloss for r in runs]
    base = _mean_finite([r.base_logloss for r in runs])
    test = _mean_finite([r.logloss for r in runs])
    return {
        "valid_logloss_mean": _mean_finite(valid),
        "valid_logloss_std": _std(valid) if all(math.isfinite(v) for v in valid) else math.nan,
        "base_logloss": base,
        "worse_than_base": bool(math.isfinite(base) and math.isfinite(test) and test > base),
    }


def worse_than_base_note(df: pd.DataFrame) -> str:
    """One sentence naming the entries whose mean test logloss is above the base-rate predictor's ("" if
    none): their AUC may lead, but their probabilities are worse than predicting the train positive rate."""
    if "worse_than_base" not in df.columns or not df["worse_than_base"].any():
        return ""
    flagged = df[df["worse_than_base"]]
    names = ", ".join(
        f"{r['entry']} ({r['logloss_mean']:.4f} vs {r['base_logloss']:.4f})" for _, r in flagged.iterrows()
    )
    return (
        f"⚠ Test logloss worse than the base-rate predictor (the train positive rate for every test row): "
        f"{names}. Their ranking (AUC) may hold, but their click probabilities are worse than a constant's; "
        "consider --early-stop-metric logloss or --calibrate temperature."
    )


def build_leaderboard(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Aggregate runs into one row per (model, domain source), best mean **validation** AUC first.

    Columns: ``rank, entry, model, domain_source, seeds, width, flops, dense_params, valid_auc_mean,
    valid_auc_std, valid_logloss_mean, valid_logloss_std, auc_mean, auc_std, auc_ci_low, auc_ci_high,
    logloss_mean, logloss_std, base_logloss, worse_than_base, auc[<domain>]``
    (mean test AUC per hand-crafted domain), ``train_samples_per_s``, ``vs_dnn_diff, vs_dnn_p, vs_dnn_p_holm,
    vs_dnn_test, vs_best_diff, vs_best_p, vs_best_p_holm, vs_best_test``. ``df.attrs`` holds the domain names,
    the baseline and the significance note.
    """
    if not records:
        raise ValueError("no runs to put on a leaderboard")
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.model, r.domain_source), []).append(r)
    domains: list[str] = []
    for r in records:
        domains.extend(d for d in r.domain_auc if d not in domains)
    rows = [_entry_row(model, source, runs, domains) for (model, source), runs in groups.items()]
    # choose on validation: test AUC never orders the table (NaN validation AUCs, e.g. old runs, go last)
    df = (
        pd.DataFrame(rows)
        .sort_values("valid_auc_mean", ascending=False, kind="stable")
        .reset_index(drop=True)
    )
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    df = pd.concat([df, _significance_columns(df, groups, records)], axis=1)
    df.attrs["domains"] = domains
    df.attrs["baseline"] = "/".join(BASELINE)
    df.attrs["significance"] = SIGNIFICANCE_NOTE
    return df


def _entry_row(model: str, source: str, runs: Sequence[RunRecord], domains: Sequence[str]) -> dict[str, Any]:
    """One entry's row, aggregated over its runs (seeds): everything but the significance columns."""
    aucs = [r.auc for r in runs]
    losses = [r.logloss for r in runs]
    valid = [r.valid_auc for r in runs]
    ci_low, ci_high, _ = auc_confidence_interval(
        aucs, runs[0].labels if len(runs) == 1 else None, runs[0].probs if len(runs) == 1 else None
    )
    row: dict[str, Any] = {
        "entry": f"{model}/{source}",
        "model": model,
        "domain_source": source,
        "seeds": len(runs),
        "width": float(np.mean([r.width for r in runs])),
        "flops": float(np.mean([r.flops for r in runs])),
        "dense_params": int(np.mean([r.dense_params for r in runs])),
        "valid_auc_mean": float(np.mean(valid)),
        "valid_auc_std": _std(valid),
        "auc_mean": float(np.mean(aucs)),
        "auc_std": _std(aucs),
        "auc_ci_low": ci_low,
        "auc_ci_high": ci_high,
        "logloss_mean": float(np.mean(losses)),
        "logloss_std": _std(losses),
    }
    row |= _logloss_columns(runs)
    for d in domains:
        per_run = [r.domain_auc.get(d) for r in runs]
        defined = [a for a in per_run if a is not None and not math.isnan(a)]
        row[f"auc[{d}]"] = float(np.mean(defined)) if defined else math.nan
    row["train_samples_per_s"] = float(np.mean([r.train_samples_per_s for r in runs]))
    return row


def _by_seed(runs: Sequence[RunRecord]) -> tuple[dict[int, float], dict[int, np.ndarray]]:
    """An entry's test AUC and test predictions by seed, as :func:`compare_entries` pairs them."""
    return (
        {r.seed: r.auc for r in runs},
        {r.seed: r.probs for r in runs if r.probs is not None},
    )


def _significance_columns(
    df: pd.DataFrame, groups: dict[tuple[str, str], list[RunRecord]], records: Sequence[RunRecord]
) -> pd.DataFrame:
    """``vs_dnn_*`` and ``vs_best_*`` for each row of the ranked ``df``: each entry against the baseline and
    against rank 1, with Holm-corrected p-values within each column."""
    # each seed's test labels: a grid may draw every seed's split anew (benchmarks/grid.py --split-seed seed)
    labels = {r.seed: r.labels for r in records if r.labels is not None} or None
    best_key = (df.loc[0, "model"], df.loc[0, "domain_source"])
    tests: list[dict[str, Any]] = []
    for _, row in df.iterrows():
        key = (row["model"], row["domain_source"])
        auc_a, probs_a = _by_seed(groups[key])
        cols: dict[str, Any] = {}
        for prefix, ref in (("vs_dnn", BASELINE), ("vs_best", best_key)):
            if ref not in groups:
                cols |= _test_columns(prefix, None, "no baseline")
            elif ref == key:
                cols |= _test_columns(prefix, None, "self")
            else:
                auc_b, probs_b = _by_seed(groups[ref])
                cols |= _test_columns(prefix, compare_entries(auc_a, auc_b, probs_a, probs_b, labels))
        tests.append(cols)
    tests_df = pd.DataFrame(tests)
    for prefix in ("vs_dnn", "vs_best"):  # one family of comparisons per column
        tests_df.insert(
            tests_df.columns.get_loc(f"{prefix}_p") + 1,
            f"{prefix}_p_holm",
            holm(tests_df[f"{prefix}_p"].tolist()),
        )
    return tests_df


class NoCandidateError(ValueError):
    """Every entry of a leaderboard routes by a control source, so none may be registered or promoted."""


def pick_winner(df: pd.DataFrame, *, promote_controls: bool = False) -> int:
    """Row position in ``df`` (from :func:`build_leaderboard`) of the entry to register and promote.

    The highest-ranked entry (mean validation AUC) whose domain source is not a control
    (:data:`mdctr.routing.CONTROL_SOURCES`: ``random``, ``binned``). A control is the scientific baseline that
    mined domains must beat, not a production candidate, so it stays on the leaderboard but never wins unless
    ``promote_controls`` says so (then the first row wins, whatever its source).

    Raises:
        NoCandidateError: every entry is a control and ``promote_controls`` is False.
    """
    from mdctr.routing.sources import CONTROL_SOURCES

    if promote_controls:
        return 0
    for position, source in enumerate(df["domain_source"]):
        if source not in CONTROL_SOURCES:
            return position
    raise NoCandidateError(
        f"all {len(df)} leaderboard entries route by a control source ({', '.join(CONTROL_SOURCES)}): a control "
        "is a baseline, not a production candidate; train a handcrafted, mined or none entry too, or allow "
        "controls to win with promote_controls (mdctr pipeline run --promote-controls)"
    )


def _fmt(x: Any, digits: int = 4) -> str:
    if isinstance(x, float | np.floating):
        return "–" if not math.isfinite(x) else f"{x:.{digits}f}"
    return str(x)


def _pm(mean: float, std: float, digits: int = 4) -> str:
    return _fmt(mean, digits) if not math.isfinite(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _ci(low: float, high: float) -> str:
    return "–" if not (math.isfinite(low) and math.isfinite(high)) else f"[{low:.4f}, {high:.4f}]"


def _p(p: float, test: str) -> str:
    if not math.isfinite(p):
        return test or "–"
    return f"{p:.3g} ({'t' if test == 'paired_t' else test})"


def to_markdown(df: pd.DataFrame, title: str = "Leaderboard") -> str:
    """A Markdown table: validation AUC (the ranking), test AUC with its 95% CI and test logloss (mean ± std
    over seeds), per-domain test AUC, FLOPs, params and Holm-corrected p-values."""
    domains = df.attrs.get("domains", [])
    head = [
        "#",
        "entry",
        "seeds",
        "valid AUC",
        "valid logloss",
        "test AUC",
        "test AUC 95% CI",
        "test logloss",
    ]
    head += ["base-rate logloss"]
    head += [f"AUC {d}" for d in domains]
    head += ["FLOPs/sample", "dense params", "width", "ΔAUC vs dnn", "p vs dnn (Holm)", "p vs best (Holm)"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        cells = [
            str(r["rank"]),
            r["entry"],
            str(r["seeds"]),
            _pm(r["valid_auc_mean"], r["valid_auc_std"]),
            _pm(r.get("valid_logloss_mean", math.nan), r.get("valid_logloss_std", math.nan)),
            _pm(r["auc_mean"], r["auc_std"]),
            _ci(r["auc_ci_low"], r["auc_ci_high"]),
            _pm(r["logloss_mean"], r["logloss_std"]) + (" ⚠" if r.get("worse_than_base", False) else ""),
            _fmt(r.get("base_logloss", math.nan)),
            *[_fmt(r[f"auc[{d}]"]) for d in domains],
            f"{r['flops']:,.0f}",
            f"{r['dense_params']:,}",
            f"{r['width']:.3g}",
            _fmt(r["vs_dnn_diff"]),
            _p(r["vs_dnn_p_holm"], r["vs_dnn_test"]),
            _p(r["vs_best_p_holm"], r["vs_best_test"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Baseline: `{df.attrs.get('baseline', '/'.join(BASELINE))}`. {SIGNIFICANCE_NOTE}", ""]
    if note := worse_than_base_note(df):
        lines += [note, ""]
    return "\n".join(lines)


def write_leaderboard(df: pd.DataFrame, out_dir: Path | str, title: str = "Leaderboard") -> dict[str, Path]:
    """Write ``leaderboard.md``, ``.csv``, ``.json`` and the two PNG plots into ``out_dir``; returns paths."""
    from mdctr.evaluation.plots import plot_auc_vs_flops, plot_domain_auc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out / "leaderboard.md",
        "csv": out / "leaderboard.csv",
        "json": out / "leaderboard.json",
        "auc_vs_flops": out / "auc_vs_flops.png",
        "domain_auc": out / "domain_auc.png",
    }
    paths["markdown"].write_text(to_markdown(df, title))
    df.to_csv(paths["csv"], index=False)
    entries = [json_safe(row) for row in df.to_dict(orient="records")]
    write_json_atomic(paths["json"], {"attrs": dict(df.attrs), "entries": entries})
    plot_auc_vs_flops(df, paths["auc_vs_flops"])
    plot_domain_auc(df, paths["domain_auc"])
    return paths
