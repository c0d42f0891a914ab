"""Describe mined domains: size, CTR, codebook usage, agreement with hand-crafted (and planted) domains, and
the features that distinguish each code. The report is a JSON-serialisable dict; :func:`report_markdown`
renders it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from sklearn.metrics import adjusted_rand_score, mutual_info_score, normalized_mutual_info_score

from mdctr.data.encode import OOV_INDEX, FeatureSpec
from mdctr.data.tensors import TensorData

#: a value must occur at least this often in a code to be listed as distinctive (lift is noisy below)
MIN_SUPPORT = 5
#: ... and cover at least this share of the code's rows: without it a user id seen 5 times, all in one code,
#: has the largest lift possible (1 / the code's share), and every code's top values are such ids
MIN_SHARE_IN_CODE = 0.01
TOP_VALUES = 3
#: dense features are compared with the codes through bins at these quantiles (deciles)
DENSE_QUANTILES = np.linspace(0, 1, 11)[1:-1]
#: the Markdown lists at most this many hand-crafted domains per code (Epinions has 27)
MIX_SHOWN = 4


def _agreement(codes: np.ndarray, other: np.ndarray) -> dict[str, float]:
    return {
        "nmi": float(normalized_mutual_info_score(other, codes)),
        "ari": float(adjusted_rand_score(other, codes)),
    }


def _raw_value(spec: FeatureSpec, col: str, index: int) -> Any:
    return "<OOV>" if index == OOV_INDEX else spec.vocab[col][index - 1]


def raw_dense(data: TensorData, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Each dense feature of ``data`` in raw units (the train standardisation undone) → {column: [N] float64}."""
    dense = data.dense.numpy()
    return {
        col: dense[:, j].astype(np.float64) * spec.std[col] + spec.mean[col]
        for j, col in enumerate(spec.schema.dense)
    }


def dense_bin_edges(data: TensorData, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Decile edges of each dense feature over ``data`` (pass the train split, so that bins are fitted on train
    only) → {column: sorted unique inner edges in raw units}, for :func:`domain_report`'s ``dense_edges``."""
    return {
        col: np.unique(np.quantile(raw, DENSE_QUANTILES)) if len(raw) else np.array([])
        for col, raw in raw_dense(data, spec).items()
    }


def _bin_label(edges: np.ndarray, b: int) -> str:
    """The interval of bin ``b`` of ``np.digitize(x, edges)``: [edges[b-1], edges[b])."""
    lo = "-inf" if b == 0 else f"{edges[b - 1]:.3g}"
    hi = "inf" if b >= len(edges) else f"{edges[b]:.3g}"
    return f"[{lo}, {hi})"


def _lift(codes: np.ndarray, values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes [N] × value ids [N] → (lift [m, V] = share in the code / share overall, share in the code [m, V]);
    lift is 0 where the value is too rare in the code to trust (:data:`MIN_SUPPORT`, :data:`MIN_SHARE_IN_CODE`)
    or not over-represented in it (lift ≤ 1)."""
    m, n = len(counts), len(codes)
    v = int(values.max()) + 1 if n else 1
    joint = np.bincount(codes * v + values, minlength=m * v).reshape(m, v)  # [m, V]
    p_value = joint.sum(0) / max(1, n)  # [V]
    share = joint / np.maximum(counts, 1)[:, None]  # [m, V]
    # over-represented only: a value rarer in the code than overall (lift < 1) does not describe it
    ok = (joint >= MIN_SUPPORT) & (share >= MIN_SHARE_IN_CODE) & (share > p_value)
    lift = np.where(ok, share / np.where(p_value > 0, p_value, 1.0), 0.0)
    return lift, share


def _feature_stats(
    col: str,
    codes: np.ndarray,
    shuffled: np.ndarray,
    values: np.ndarray,
    counts: np.ndarray,
    label: Callable[[int], Any],
) -> tuple[float, float, float, list[list[dict[str, Any]]]]:
    """One feature vs the codes → (MI in nats, NMI, NMI with the ``shuffled`` codes, per code its top
    :data:`TOP_VALUES` values by lift).

    ``values`` [N] are ids (a sparse feature's index, a dense feature's bin); ``label(id)`` decodes one."""
    n = len(codes)
    mi = float(mutual_info_score(codes, values)) if n else 0.0
    nmi = float(normalized_mutual_info_score(values, codes)) if n else 0.0
    chance = float(normalized_mutual_info_score(values, shuffled)) if n else 0.0
    lift, share = _lift(codes, values, counts)
    tops: list[list[dict[str, Any]]] = []
    for k in range(len(counts)):
        best = [int(i) for i in np.argsort(-lift[k], kind="stable")[:TOP_VALUES] if lift[k, i] > 0]
        tops.append(
            [
                {
                    "feature": col,
                    "value": label(i),
                    "lift": float(lift[k, i]),
                    "share_in_code": float(share[k, i]),
                }
                for i in best
            ]
        )
    return mi, nmi, chance, tops


def _per_code_base(
    codes: np.ndarray, data: TensorData, spec: FeatureSpec, counts: np.ndarray
) -> list[dict[str, Any]]:
    """Per code: rows, share, positive rate (CTR) and the mix of hand-crafted domains among its rows."""
    schema = spec.schema
    n, m, d = len(codes), len(counts), schema.num_domains
    pos = np.bincount(codes, weights=data.label.numpy(), minlength=m)
    hand = np.bincount(codes * d + data.handcrafted.numpy(), minlength=m * d).reshape(m, d)
    return [
        {
            "code": k,
            "rows": int(counts[k]),
            "share": float(counts[k] / max(1, n)),
            "positive_rate": float(pos[k] / counts[k]) if counts[k] else None,
            "handcrafted_mix": (
                {name: float(hand[k, j] / counts[k]) for j, name in enumerate(schema.domain_names)}
                if counts[k]
                else {}
            ),
            "top_values": [],
            "feature_top": {},
            "dense_means": {},
        }
        for k in range(m)
    ]


def _features(
    codes: np.ndarray,
    shuffled: np.ndarray,
    data: TensorData,
    spec: FeatureSpec,
    per_code: list[dict[str, Any]],
    dense_edges: Mapping[str, np.ndarray] | None,
) -> dict[str, tuple[float, float, float]]:
    """Every feature vs the codes → {column: (MI, NMI, NMI with the shuffled codes)}; fills each code's
    ``top_values``, ``feature_top`` and ``dense_means`` in ``per_code``."""
    counts = np.bincount(codes, minlength=len(per_code))
    out: dict[str, tuple[float, float, float]] = {}

    def add(col: str, values: np.ndarray, label: Callable[[int], Any], sparse: bool) -> None:
        mi, nmi, chance, tops = _feature_stats(col, codes, shuffled, values, counts, label)
        out[col] = (mi, nmi, chance)
        for k, top in enumerate(tops):
            if top:
                per_code[k]["feature_top"][col] = top[0]
            if sparse:
                per_code[k]["top_values"] += top

    sparse = data.sparse.numpy()
    for j, col in enumerate(spec.schema.sparse):
        add(col, sparse[:, j], lambda i, c=col: _raw_value(spec, c, i), sparse=True)
    for code in per_code:
        code["top_values"] = sorted(code["top_values"], key=lambda e: -e["lift"])[:TOP_VALUES]
    edges_by_col = dict(dense_edges) if dense_edges is not None else dense_bin_edges(data, spec)
    for col, raw in raw_dense(data, spec).items():
        sums = np.bincount(codes, weights=raw, minlength=len(counts))
        for k in np.flatnonzero(counts):
            per_code[k]["dense_means"][col] = float(sums[k] / counts[k])
        # binned, so the measure is comparable with the sparse features'
        edges = np.asarray(edges_by_col[col], dtype=np.float64)
        add(col, np.digitize(raw, edges), lambda b, e=edges: _bin_label(e, b), sparse=False)
    return out


def domain_report(
    codes: np.ndarray,
    data: TensorData,
    spec: FeatureSpec,
    planted: np.ndarray | None = None,
    *,
    num_codes: int | None = None,
    dense_edges: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Summarise a code assignment of the rows of ``data``.

    Args:
        codes: [N] int mined domain per row.
        data: the rows (labels, features, hand-crafted domains).
        spec: the feature spec (names, vocabularies to decode sparse values, dense mean/std).
        planted: [N] ground-truth domains (synthetic data), optional.
        num_codes: codebook size m (default: max code + 1); codes with no row are reported dead.
        dense_edges: bin edges (raw units) per dense feature, e.g. :func:`dense_bin_edges` of the train split;
            default: the deciles of ``data`` itself.

    Returns:
        dict with ``rows``, ``num_codes``, ``perplexity`` (exp of the code-usage entropy, in [1, m]),
        ``dead_codes``, ``positive_rate``, ``agreement`` (``handcrafted`` and optionally ``planted``: NMI and
        ARI), ``feature_mi`` (mutual information in nats between code and each feature), ``feature_nmi`` (the
        same, normalised to [0, 1] by the arithmetic mean of the two entropies: 1 means the codes are a
        relabelling of the feature, e.g. "the codes are just age"; sparse features by id, dense ones by bins),
        ``feature_nmi_chance`` (the NMI of the same codes in a random order: what NMI is reached by chance,
        large for id features with few rows per id), and ``codes``: per code rows, share, positive rate, hand-crafted domain mix, ``top_values`` (the sparse
        values of highest lift = share in the code / share overall, among values with ≥ :data:`MIN_SUPPORT`
        rows and ≥ :data:`MIN_SHARE_IN_CODE` of the code's rows), ``feature_top`` (per feature, sparse or a
        dense bin, its value of highest lift, absent when none qualifies) and ``dense_means`` (raw units).
    """
    codes = np.asarray(codes, dtype=np.int64)
    n = len(codes)
    if n != len(data):
        raise ValueError(f"domain_report: {n} codes for {len(data)} rows")
    m = int(num_codes if num_codes is not None else (codes.max() + 1 if n else 0))
    counts = np.bincount(codes, minlength=m)
    nz = counts[counts > 0] / max(1, n)
    agreement = {"handcrafted": _agreement(codes, data.handcrafted.numpy())}
    if planted is not None:
        agreement["planted"] = _agreement(codes, np.asarray(planted))
    per_code = _per_code_base(codes, data, spec, counts)
    # the codes in a seeded random order: the NMI a feature would show by chance with codes of these sizes
    # (large for id features with few rows per id, e.g. user_id on a test split)
    shuffled = np.random.default_rng(0).permutation(codes)
    by_feature = _features(codes, shuffled, data, spec, per_code, dense_edges)
    return {
        "rows": n,
        "num_codes": m,
        "perplexity": float(math.exp(-(nz * np.log(nz)).sum())) if len(nz) else 0.0,
        "dead_codes": [int(k) for k in np.flatnonzero(counts == 0)],
        "positive_rate": float(data.label.numpy().mean()) if n else None,
        "agreement": agreement,
        "feature_mi": {col: v[0] for col, v in by_feature.items()},
        "feature_nmi": {col: v[1] for col, v in by_feature.items()},
        "feature_nmi_chance": {col: v[2] for col, v in by_feature.items()},
        "codes": per_code,
    }


def _mix_text(mix: Mapping[str, float]) -> str:
    """The hand-crafted mix of one code, largest first, at most :data:`MIX_SHOWN` domains."""
    shown = sorted(mix.items(), key=lambda t: -t[1]) if len(mix) > MIX_SHOWN else list(mix.items())
    text = ", ".join(f"{k} {v:.2f}" for k, v in shown[:MIX_SHOWN])
    return text + (f", … ({len(mix) - MIX_SHOWN} more)" if len(mix) > MIX_SHOWN else "")


def _feature_top_table(report: Mapping[str, Any]) -> list[str]:
    """Markdown rows: per code, each feature's value of highest lift (×lift, share of the code's rows)."""
    cols = list(report["feature_nmi"])
    if not any(c.get("feature_top") for c in report["codes"]):
        return []
    lines = [
        "",
        f"Per code, each feature's most over-represented value: lift = share in the code / share overall "
        f"(values with ≥ {MIN_SUPPORT} rows and ≥ {MIN_SHARE_IN_CODE:.0%} of the code; dense features by bins):",
        "",
        "| code | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for c in report["codes"]:
        top = c.get("feature_top") or {}
        cells = [
            f"{top[f]['value']} ×{top[f]['lift']:.2f} ({top[f]['share_in_code']:.0%})" if f in top else "–"
            for f in cols
        ]
        lines.append(f"| {c['code']} | " + " | ".join(cells) + " |")
    return lines


def report_markdown(report: dict[str, Any], *, title: str = "Mined domains", level: int = 1) -> str:
    """Render a :func:`domain_report` dict as Markdown (summary, agreement, per-code table, features) under a
    heading ``title`` of ``level`` (``#`` count)."""
    lines = [
        f"{'#' * level} {title}",
        "",
        f"{report['rows']} rows, {report['num_codes']} codes, perplexity {report['perplexity']:.2f}, "
        f"dead codes: {report['dead_codes'] or 'none'}.",
        "",
        "| reference | NMI | ARI |",
        "|---|---|---|",
    ]
    for ref, agr in report["agreement"].items():
        lines.append(f"| {ref} | {agr['nmi']:.3f} | {agr['ari']:.3f} |")
    lines += [
        "",
        "| code | rows | share | positive rate | hand-crafted mix | distinctive values |",
        "|---|---|---|---|---|---|",
    ]
    for c in report["codes"]:
        rate = "–" if c["positive_rate"] is None else f"{c['positive_rate']:.3f}"
        top = ", ".join(f"{t['feature']}={t['value']} (×{t['lift']:.1f})" for t in c["top_values"])
        lines.append(
            f"| {c['code']} | {c['rows']} | {c['share']:.3f} | {rate} | {_mix_text(c['handcrafted_mix'])} | {top} |"
        )
    dense_cols = sorted({k for c in report["codes"] for k in c["dense_means"]})
    if dense_cols:
        lines += ["", "| code | " + " | ".join(dense_cols) + " |", "|---" * (len(dense_cols) + 1) + "|"]
        for c in report["codes"]:
            vals = " | ".join(
                f"{c['dense_means'][d]:.3g}" if d in c["dense_means"] else "–" for d in dense_cols
            )
            lines.append(f"| {c['code']} | {vals} |")
    lines += _feature_top_table(report)
    nmi = report.get("feature_nmi", {})
    chance = report.get("feature_nmi_chance") or {}
    lines += [
        "",
        "Agreement of the codes with each input feature (sparse: the id; dense: decile bins), highest first; "
        "chance NMI = the NMI of the same codes shuffled across rows (what a feature with many ids and few rows "
        "per id shows by chance):",
        "",
        "| feature | NMI | chance NMI | MI (nats) |",
        "|---|---|---|---|",
    ]
    for col, mi in sorted(report["feature_mi"].items(), key=lambda t: -nmi.get(t[0], t[1])):
        shown = f"{nmi[col]:.3f}" if col in nmi else "–"
        base = f"{chance[col]:.3f}" if col in chance else "–"
        lines.append(f"| {col} | {shown} | {base} | {mi:.4f} |")
    return "\n".join(lines) + "\n"
