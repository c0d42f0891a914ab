"""The monitoring report: one self-contained HTML page (PNG plots embedded as base64) and a JSON summary."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mdctr.io import write_json_atomic
from mdctr.monitoring.drift import DomainShares
from mdctr.monitoring.run import MonitorResult

REPORT_HTML = "monitoring_report.html"
REPORT_JSON = "monitoring_summary.json"
#: the alt text of the domain-share plot (tests look for it)
DOMAIN_PLOT_ALT = "domain shares: reference vs window"


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_domain_shares(domains: list[DomainShares]) -> str:
    """Grouped bars per domain kind: reference vs window share of every domain (base64 PNG)."""
    fig = Figure(figsize=(10, 3.6))
    for i, d in enumerate(domains):
        ax = fig.add_subplot(1, len(domains), i + 1)
        x = np.arange(len(d.names))
        if d.reference is not None:
            ax.bar(x - 0.2, d.reference, width=0.4, label="reference", color="#7f7f7f")
        ax.bar(
            x + 0.2 if d.reference is not None else x, d.window, width=0.4, label="window", color="#1f77b4"
        )
        ax.set_xticks(x, d.names, rotation=45 if len(d.names) > 6 else 0, fontsize=8)
        psi = f"PSI {d.psi:.3f}" if math.isfinite(d.psi) else "no reference"
        ax.set_title(f"{d.kind} domains ({psi})", fontsize=10)
        ax.set_ylabel("share of rows")
        ax.legend(fontsize=8)
    return _png(fig)


def plot_feature_psi(result: MonitorResult) -> str:
    fig = Figure(figsize=(10, 3.2))
    ax = fig.add_subplot()
    names = [f.feature for f in result.features]
    values = [f.psi if math.isfinite(f.psi) else 0.0 for f in result.features]
    colours = ["#d62728" if v > result.config.max_psi else "#1f77b4" for v in values]
    ax.bar(names, values, color=colours)
    ax.axhline(
        result.config.max_psi, color="#d62728", ls="--", lw=1, label=f"max-psi {result.config.max_psi:g}"
    )
    ax.set_ylabel("PSI")
    ax.set_title("feature drift (PSI; red: over the threshold)", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_auc_over_time(result: MonitorResult) -> str | None:
    """AUC per time bucket, one line per hand-crafted domain (None without labels)."""
    groups = (result.labels or {}).get("bucket_domain") or []
    if not groups:
        return None
    df = pd.DataFrame(
        [{"bucket": g.group.split("|")[0], "domain": g.group.split("|")[1], "auc": g.auc} for g in groups]
    )
    fig = Figure(figsize=(10, 3.2))
    ax = fig.add_subplot()
    for dom, part in df.groupby("domain"):
        ax.plot(part["bucket"], part["auc"], marker="o", label=str(dom))
    ax.set_ylabel("AUC")
    ax.set_title(f"AUC per {result.config.bucket} and hand-crafted domain", fontsize=10)
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    return _png(fig)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>–</p>"
    return pd.DataFrame(rows).to_html(index=False, border=0, float_format=lambda x: f"{x:.4f}", na_rep="–")


def _img(data: str | None, alt: str) -> str:
    return "" if data is None else f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_html(result: MonitorResult) -> str:
    esc = html.escape
    status = "BREACH" if result.breaches else "OK"
    breaches = "".join(f"<li>{esc(b)}</li>" for b in result.breaches) or "<li>none</li>"
    domain_rows = [
        {"kind": d.kind, "domain": n, "reference share": r, "window share": w, "ratio": q}
        for d in (result.handcrafted, result.mined)
        for n, r, w, q in zip(
            d.names,
            d.reference or [math.nan] * len(d.names),
            d.window,
            d.ratio or [math.nan] * len(d.names),
            strict=True,
        )
    ]
    feature_rows = [
        {
            "feature": f.feature,
            "kind": f.kind,
            "PSI": f.psi,
            "OOV share": f.oov_share,
            "valid-split OOV share": f.baseline_oov_share,
            "KS": f.ks,
            "KS p-value": f.ks_pvalue,
        }
        for f in result.features
    ]
    label_html = "<p>No labels given (<code>--labels</code>).</p>"
    if result.labels is not None:
        parts = [f"<p>{result.labelled_rows} logged rows found a label.</p>"]
        for kind in ("overall", "handcrafted", "mined", "bucket"):
            rows = [{k: v for k, v in g.__dict__.items()} for g in result.labels.get(kind, [])]
            parts.append(f"<h3>{esc(kind)}</h3>{_table(rows)}")
        parts.append(_img(plot_auc_over_time(result), "AUC over time per domain"))
        label_html = "".join(parts)
    gx = result.validation
    gx_html = (
        "<p>Not run.</p>"
        if gx is None
        else (
            f"<p>{'passed' if gx['success'] else 'FAILED'}: {gx['n_failed']} failed expectation(s) on a sample of "
            f"{gx['rows']} rows; report: <code>{esc(gx['html'])}</code></p>"
            + "".join(f"<li>{esc(x)}</li>" for x in gx["failures"])
        )
    )
    mined_src = esc(result.mined.reference_source or "none: pass --reference-codes or --baseline-log")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mdctr monitoring: {status}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px;margin-bottom:1.5em}}
td,th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}}.bad{{color:#b3261e}}.ok{{color:#176f2c}}
img{{max-width:100%}}</style></head><body>
<h1>Monitoring — <span class="{"bad" if result.breaches else "ok"}">{status}</span></h1>
<p>Window <code>{esc(result.window)}</code>: {result.rows} rows served {esc(str(result.served_from))} …
{esc(str(result.served_to))}; reference <code>{esc(result.reference)}</code>; {result.seconds:.1f} s.</p>
<h2>Breaches</h2><ul>{breaches}</ul>
<h2>Domain shares</h2>
<p>Hand-crafted reference: the train split. Mined reference: {mined_src}.</p>
{_img(plot_domain_shares([result.handcrafted, result.mined]), DOMAIN_PLOT_ALT)}
{_table(domain_rows)}
<h2>Feature drift</h2>
{_img(plot_feature_psi(result), "feature PSI")}
{_table(feature_rows)}
<h2>Labels</h2>{label_html}
<h2>Great Expectations checkpoint</h2>{gx_html}
</body></html>
"""


def write_report(result: MonitorResult, out_dir: Path | str) -> tuple[Path, Path]:
    """Write ``monitoring_report.html`` and ``monitoring_summary.json`` into ``out_dir``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = out / REPORT_HTML
    tmp = out / f".{REPORT_HTML}.tmp"
    tmp.write_text(render_html(result), encoding="utf-8")
    tmp.replace(page)
    summary = out / REPORT_JSON
    write_json_atomic(summary, json.loads(json.dumps(result.to_dict(), default=str)))
    return page, summary
