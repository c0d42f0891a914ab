"""The run's HTML report: one self-contained page (plots inline as ``data:`` URIs) that KFP shows as-is.

Order: a summary (data version, winner and why, gate decision, MLflow links), the leaderboard in readable
formats, the winner's per-domain metrics, then the plots."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported where a table is built, not when a step module is imported
    import pandas as pd

#: shown where the gate decision is not known yet: evaluate runs before register_model decides
GATE_PENDING = (
    "decided after evaluation: register_model gates the winner against the champion and writes this page again "
    "with its decision (its `report` output; evaluation/report.html on the MLflow parent run)"
)
#: the element of the summary that holds the gate decision; :func:`with_gate` fills it in
GATE_ELEMENT_ID = "gate-decision"


@dataclass(frozen=True)
class ReportSummary:
    """What the summary says.

    Attributes:
        data_version: e.g. ``rev v1, md5 <hex>`` ("" → "not recorded").
        gate: the gate decision and its reason as HTML, from :func:`gate_html` ("" → :data:`GATE_PENDING`).
        run_links: label → URL of an MLflow run (only for http(s) tracking URIs; empty otherwise).
    """

    data_version: str = ""
    gate: str = ""
    run_links: Mapping[str, str] = field(default_factory=dict)


def fmt_num(x: Any, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if isinstance(x, int | float) and math.isfinite(x) else "–"


def fmt_p(p: Any) -> str:
    """A p-value in scientific notation (``3.2e-07``), so a tiny p never prints as ``0.0000``."""
    return f"{p:.1e}" if isinstance(p, int | float) and math.isfinite(p) else "–"


def fmt_ci(mean: Any, low: Any, high: Any) -> str:
    """``0.8012 [0.7990, 0.8034]``: the mean with its 95% CI ("–" for a missing bound)."""
    if not (isinstance(low, int | float) and math.isfinite(low) and math.isfinite(high)):
        return fmt_num(mean)
    return f"{fmt_num(mean)} [{low:.4f}, {high:.4f}]"


def fmt_pm(mean: Any, std: Any) -> str:
    ok = isinstance(std, int | float) and math.isfinite(std)
    return f"{fmt_num(mean)} ± {std:.4f}" if ok else fmt_num(mean)


def leaderboard_table(df: pd.DataFrame) -> pd.DataFrame:
    """The curated, formatted leaderboard (strings): the ranking column first, then test metrics, cost and
    the Holm-corrected paired tests. The raw columns stay in ``leaderboard.csv``/``.json``."""
    import pandas as pd

    domains = list(df.attrs.get("domains", []))
    rows = []
    for _, r in df.iterrows():
        row = {
            "#": str(r["rank"]),
            "entry": str(r["entry"]),
            "seeds": str(r["seeds"]),
            "valid AUC (ranks)": fmt_pm(r["valid_auc_mean"], r["valid_auc_std"]),
            "valid logloss": fmt_pm(r.get("valid_logloss_mean"), r.get("valid_logloss_std")),
            "test AUC [95% CI]": fmt_ci(r["auc_mean"], r["auc_ci_low"], r["auc_ci_high"]),
            "test logloss": fmt_pm(r["logloss_mean"], r["logloss_std"])
            + (" ⚠ worse than base rate" if r.get("worse_than_base", False) else ""),
            "base-rate logloss": fmt_num(r.get("base_logloss")),
        }
        row |= {f"AUC {d}": fmt_num(r.get(f"auc[{d}]")) for d in domains}
        row |= {
            "FLOPs/sample": f"{r['flops']:,.0f}",
            "dense params": f"{int(r['dense_params']):,}",
            "ΔAUC vs dnn": fmt_num(r["vs_dnn_diff"]),
            "p vs dnn (Holm)": fmt_p(r["vs_dnn_p_holm"])
            if math.isfinite(r["vs_dnn_p_holm"])
            else r["vs_dnn_test"],
            "p vs best (Holm)": (
                fmt_p(r["vs_best_p_holm"]) if math.isfinite(r["vs_best_p_holm"]) else r["vs_best_test"]
            ),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def png_figure(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = html.escape(caption)
    return (
        f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{alt}</figcaption></figure>'
    )


def _winner_logloss_html(best: Any) -> str:
    """The summary's logloss line for the winner's leaderboard row ``best``: a warning when its test logloss is
    worse than the base-rate predictor's."""
    return (
        f'<dt>Winner logloss</dt><dd class="warning"><b>⚠ the winner\'s test logloss '
        f"{fmt_num(best['logloss_mean'])} is worse than the base-rate predictor's "
        f"{fmt_num(best.get('base_logloss'))}</b> (the train positive rate for every test row): it ranks well "
        "(AUC) but its click probabilities are worse than a constant's. The winner is still chosen on "
        "validation AUC; this is information. Retrain with <code>--early-stop-metric logloss</code> or "
        "<code>--calibrate temperature</code> before using its pCTR as a probability.</dd>"
        if bool(best.get("worse_than_base", False))
        else f"<dt>Winner logloss</dt><dd>test {fmt_num(best['logloss_mean'])}, base-rate predictor "
        f"{fmt_num(best.get('base_logloss'))} (lower is better)</dd>"
    )


def render_report(
    df: pd.DataFrame,
    *,
    title: str,
    winner: str,
    winner_result: Any,
    pngs: Mapping[str, Path],
    summary: ReportSummary | None = None,
) -> str:
    """The page for leaderboard ``df`` (from ``build_leaderboard``), the exported run's ``winner_result`` (its
    ``train_model`` record, a :class:`mdctr.training.entry_result.EntryResult`: read, not imported, as training
    sits above evaluation) and ``pngs`` (caption → PNG path, embedded in order).

    ``winner`` is normally the first row; when entries routed by a control source rank above it
    (:func:`mdctr.evaluation.leaderboard.pick_winner`), the summary names them as passed over."""
    summary = summary or ReportSummary()
    entries = [str(e) for e in df["entry"]]
    position = entries.index(winner) if winner in entries else 0
    best = df.iloc[position]
    seed = winner_result.entry.seed
    others = df[df["entry"] != best["entry"]]
    runner_up = (
        f"; runner-up {html.escape(str(others.iloc[0]['entry']))} at {fmt_num(others.iloc[0]['valid_auc_mean'])}"
        if len(others)
        else ""
    )
    passed_over = (
        f" Ranked above it but not a candidate: {html.escape(', '.join(entries[:position]))} (a control "
        "domain source is a baseline, never registered or promoted)."
        if position
        else ""
    )
    links = "".join(
        f'<li><a href="{html.escape(url, quote=True)}">{html.escape(label)}</a></li>'
        for label, url in summary.run_links.items()
    )
    links_html = f"<ul>{links}</ul>" if links else "none (the tracking store is not served over http(s))"
    per_domain = "".join(
        f"<tr><td>{d.domain}</td><td>{html.escape(str(d.name))}</td><td>{'' if d.rows is None else d.rows}</td>"
        f"<td>{fmt_num(d.auc)}</td><td>{fmt_num(d.logloss)}</td></tr>"
        for d in winner_result.per_domain
    )
    table = leaderboard_table(df).to_html(index=False, border=0, escape=True, classes="leaderboard")
    from mdctr.evaluation.leaderboard import worse_than_base_note

    base_note = worse_than_base_note(df)
    base_note_html = f'<p class="warning"><b>{html.escape(base_note)}</b></p>' if base_note else ""
    winner_logloss = _winner_logloss_html(best)
    figures = "".join(png_figure(p, caption) for caption, p in pngs.items() if Path(p).is_file())
    notes = html.escape(str(df.attrs.get("significance", "")))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}}td:nth-child(2){{text-align:left}}
dl.summary{{display:grid;grid-template-columns:max-content auto;gap:4px 16px}}dt{{font-weight:bold}}dd{{margin:0}}
.warning{{color:#a40000}}figure{{display:inline-block;margin:1em;vertical-align:top}}img{{max-width:620px}}</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Summary</h2>
<dl class="summary">
<dt>Data version</dt><dd>{html.escape(summary.data_version or "not recorded")}</dd>
<dt>Winner</dt><dd><b>{html.escape(winner)}</b>, exported seed {seed}: highest mean <b>validation</b> AUC
({fmt_num(best["valid_auc_mean"])} over {best["seeds"]} seed(s){runner_up}); the exported seed has the best
validation AUC of its seeds. The test split chooses nothing: it is reported, test AUC
{fmt_ci(best["auc_mean"], best["auc_ci_low"], best["auc_ci_high"])} (95% CI), exported seed
{fmt_num(winner_result.overall.auc)}, {winner_result.flops:,.0f} FLOPs/sample.{passed_over}</dd>
{winner_logloss}
<dt>Gate decision</dt><dd id="{GATE_ELEMENT_ID}">{summary.gate or html.escape(GATE_PENDING)}</dd>
<dt>MLflow runs</dt><dd>{links_html}</dd>
</dl>
<h2>Leaderboard</h2>
{table}
{base_note_html}
<p><small>{notes}</small></p>
<h2>Winner per hand-crafted domain (test)</h2>
<table><tr><th>id</th><th>domain</th><th>rows</th><th>AUC</th><th>logloss</th></tr>{per_domain}</table>
<h2>Plots</h2>{figures}
</body></html>
"""


def gate_html(decision: str, reason: str, version: str | int, model: str = "", *, promoted: bool) -> str:
    """The summary's gate line: the decision in the words the MLflow tags use (``promote``/``keep``: version
    tag ``gate.decision``, parent-run tag ``mdctr.gate_decision``), its reason, the registered version and, by
    ``promoted`` (the gate's verdict, not its word), what follows."""
    registered = f"version {html.escape(str(version))}" + (f" of {html.escape(model)}" if model else "")
    outcome = "it becomes the champion" if promoted else "the champion stays; it is only the challenger"
    return f"<b>{html.escape(decision)}</b>: {html.escape(reason)} ({registered}; {outcome})."


def with_gate(page: str, gate: str) -> str:
    """``page`` (from :func:`render_report`) with its gate decision replaced by ``gate`` (HTML from
    :func:`gate_html`); the rest of the page is unchanged."""
    import re

    pattern = re.compile(rf'(<dd id="{GATE_ELEMENT_ID}">)(.*?)(</dd>)', re.DOTALL)
    if len(pattern.findall(page)) != 1:
        raise ValueError(
            f'report page has no single <dd id="{GATE_ELEMENT_ID}"> element to hold the decision'
        )
    return pattern.sub(lambda m: m.group(1) + gate + m.group(3), page)
