"""Leaderboard plots (PNG, matplotlib's Agg canvas: no display and no global pyplot state)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

#: marker cycle; with a colour per entry (below) no two entries look alike, even printed in grey
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p")


def entry_styles(entries: Sequence[str]) -> dict[str, tuple[tuple[float, float, float, float], str]]:
    """A distinct (RGBA colour, marker) per entry, in order: tab20's ten dark hues, then its ten light ones (so
    up to ten entries never share a hue), beyond 20 evenly spaced hues of ``hsv``; markers cycle independently."""
    from matplotlib import colormaps

    names = list(dict.fromkeys(entries))
    n = len(names)
    if n <= 20:
        cmap = colormaps["tab20"]
        colours = [cmap(i) for i in (*range(0, 20, 2), *range(1, 20, 2))][:n]
    else:
        cmap = colormaps["hsv"]
        colours = [cmap(i / n) for i in range(n)]
    return {e: (colours[i], _MARKERS[i % len(_MARKERS)]) for i, e in enumerate(names)}


def _save(fig: Figure, path: Path | str) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # legends sit outside the axes
    return Path(path)


def plot_auc_vs_flops(df: pd.DataFrame, path: Path | str) -> Path:
    """Scatter of mean test AUC (± std over seeds) against FLOPs per sample, one point per entry."""
    styles = entry_styles(df["entry"].tolist())
    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot()
    for _, r in df.iterrows():
        yerr = r["auc_std"] if np.isfinite(r["auc_std"]) else None
        colour, marker = styles[r["entry"]]
        ax.errorbar(
            r["flops"], r["auc_mean"], yerr=yerr, fmt=marker, color=colour, capsize=3, label=r["entry"]
        )
    ax.set_xlabel("forward FLOPs per sample")
    ax.set_ylabel("test AUC (mean ± std over seeds)")
    ax.set_title("test AUC vs FLOPs (one colour and marker per entry)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def plot_domain_auc(df: pd.DataFrame, path: Path | str) -> Path:
    """Grouped bars: per hand-crafted domain, the mean test AUC of every entry."""
    domains = list(df.attrs.get("domains", []))
    fig = Figure(figsize=(max(6, 1.5 * len(domains) + 3), 4.5))
    ax = fig.add_subplot()
    n = max(len(df), 1)
    width = 0.8 / n
    x = np.arange(len(domains))
    styles = entry_styles(df["entry"].tolist())
    for i, (_, r) in enumerate(df.iterrows()):
        values = [r.get(f"auc[{d}]", np.nan) for d in domains]
        ax.bar(x + (i - (n - 1) / 2) * width, values, width, label=r["entry"], color=styles[r["entry"]][0])
    ax.set_xticks(x, domains)
    ax.set_ylabel("test AUC")
    finite = df[[f"auc[{d}]" for d in domains]].to_numpy(dtype=float) if domains else np.array([])
    if finite.size and np.isfinite(finite).any():
        ax.set_ylim(max(0.0, np.nanmin(finite) - 0.02), min(1.0, np.nanmax(finite) + 0.02))
    ax.set_title("per-domain test AUC")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def calibration_bins(
    labels: np.ndarray, probs: np.ndarray, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability bins: ``bins`` equal-count bins of the prediction (equal-width bins would put most rows of
    a low-CTR table in one bin) → (mean predicted, observed positive rate, rows) per non-empty bin."""
    labels = np.asarray(labels, dtype=float)
    probs = np.asarray(probs, dtype=float)
    if labels.shape != probs.shape or labels.size == 0:
        raise ValueError(
            f"calibration needs labels and probs of one non-empty shape; got {labels.shape} and {probs.shape}"
        )
    edges = np.unique(np.quantile(probs, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, probs, side="right") - 1, 0, max(len(edges) - 2, 0))
    counts = np.bincount(idx, minlength=max(len(edges) - 1, 1))
    keep = counts > 0
    predicted = np.bincount(idx, weights=probs, minlength=len(counts))[keep] / counts[keep]
    observed = np.bincount(idx, weights=labels, minlength=len(counts))[keep] / counts[keep]
    return predicted, observed, counts[keep]


def plot_calibration(
    labels: np.ndarray, probs: np.ndarray, path: Path | str, *, title: str, bins: int = 10
) -> Path:
    """Reliability diagram of :func:`calibration_bins` with the diagonal of perfect calibration."""
    predicted, observed, _ = calibration_bins(labels, probs, bins)
    fig = Figure(figsize=(4.8, 4.5))
    ax = fig.add_subplot()
    top = float(max(predicted.max(), observed.max())) * 1.05 or 1.0
    ax.plot([0, top], [0, top], ls="--", lw=0.8, color="grey", label="perfectly calibrated")
    ax.plot(predicted, observed, marker="o", lw=1.2, label="winner")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted CTR (bin)")
    ax.set_ylabel("observed CTR (bin)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_learning_curves(
    histories: Mapping[str, Sequence[Sequence[Mapping[str, float]]]], path: Path | str
) -> Path:
    """Validation AUC per epoch: one line per (entry, seed), the entry's colour and marker on every seed.

    ``histories``: entry → one training history per seed (the trainer's per-epoch records with ``epoch`` and
    ``valid_auc``)."""
    styles = entry_styles(list(histories))
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for entry, seeds in histories.items():
        colour, marker = styles[entry]
        for i, history in enumerate(seeds):
            points = [(h["epoch"], h["valid_auc"]) for h in history if h.get("valid_auc") is not None]
            if not points:
                continue
            x, y = zip(*points, strict=True)
            ax.plot(x, y, marker=marker, color=colour, lw=1.2, alpha=0.9, label=entry if i == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation AUC")
    ax.set_title("learning curves (every seed of every entry)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def plot_auc_vs_budget(curves: pd.DataFrame, path: Path | str, *, title: str) -> Path:
    """AUC against FLOPs per sample across budgets: one line per entry, mean with a 95% CI over seeds.

    ``curves``: one row per (entry, budget) with ``entry``, ``flops`` (mean over seeds), and for ``split`` in
    (valid, test) ``{split}_mean`` and ``{split}_ci`` (half-width); two panels, validation (what entries are
    chosen on) and test (what is reported)."""
    styles = entry_styles(curves["entry"].tolist())
    fig = Figure(figsize=(11, 4.6))
    for i, split in enumerate(("valid", "test")):
        ax = fig.add_subplot(1, 2, i + 1)
        for entry, rows in curves.groupby("entry", sort=False):
            rows = rows.sort_values("flops")
            colour, marker = styles[entry]
            ax.errorbar(
                rows["flops"],
                rows[f"{split}_mean"],
                yerr=rows[f"{split}_ci"],
                marker=marker,
                color=colour,
                capsize=3,
                lw=1.2,
                label=entry,
            )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # the minor ticks' labels overlap on a short decade
        ax.set_xlabel("forward FLOPs per sample (log scale)")
        ax.set_ylabel(f"{'validation' if split == 'valid' else 'test'} AUC (mean, 95% CI)")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=10)
    fig.axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)
