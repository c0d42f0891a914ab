"""Leaderboard plots (PNG, matplotlib's Agg canvas: no display and no global pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_SOURCE_MARKERS = {"none": "o", "handcrafted": "s", "mined": "^"}


def _save(fig: Figure, path: Path | str) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_auc_vs_flops(df: pd.DataFrame, path: Path | str) -> Path:
    """Scatter of mean test AUC (± std over seeds) against FLOPs per sample, one point per entry."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for _, r in df.iterrows():
        yerr = r["auc_std"] if np.isfinite(r["auc_std"]) else None
        ax.errorbar(
            r["flops"],
            r["auc_mean"],
            yerr=yerr,
            fmt=_SOURCE_MARKERS.get(r["domain_source"], "D"),
            capsize=3,
            label=r["entry"],
        )
        ax.annotate(
            r["entry"], (r["flops"], r["auc_mean"]), textcoords="offset points", xytext=(4, 4), fontsize=7
        )
    ax.set_xlabel("forward FLOPs per sample")
    ax.set_ylabel("test AUC (mean ± std over seeds)")
    ax.set_title("AUC vs FLOPs (markers: ○ none, □ handcrafted, △ mined)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_domain_auc(df: pd.DataFrame, path: Path | str) -> Path:
    """Grouped bars: per hand-crafted domain, the mean test AUC of every entry."""
    domains = list(df.attrs.get("domains", []))
    fig = Figure(figsize=(max(6, 1.5 * len(domains) + 3), 4.5))
    ax = fig.add_subplot()
    n = max(len(df), 1)
    width = 0.8 / n
    x = np.arange(len(domains))
    for i, (_, r) in enumerate(df.iterrows()):
        values = [r.get(f"auc[{d}]", np.nan) for d in domains]
        ax.bar(x + (i - (n - 1) / 2) * width, values, width, label=r["entry"])
    ax.set_xticks(x, domains)
    ax.set_ylabel("test AUC")
    finite = df[[f"auc[{d}]" for d in domains]].to_numpy(dtype=float) if domains else np.array([])
    if finite.size and np.isfinite(finite).any():
        ax.set_ylim(max(0.0, np.nanmin(finite) - 0.02), min(1.0, np.nanmax(finite) + 0.02))
    ax.set_title("per-domain test AUC")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
