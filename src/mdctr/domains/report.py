"""Describe mined domains: size, CTR, codebook usage, agreement with hand-crafted (and planted) domains, and
the features that distinguish each code. The report is a JSON-serialisable dict; :func:`report_markdown`
renders it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import adjusted_rand_score, mutual_info_score, normalized_mutual_info_score

from mdctr.data.encode import OOV_INDEX, FeatureSpec
from mdctr.data.tensors import TensorData

#: a sparse value must occur at least this often in a code to be listed as distinctive (lift is noisy below)
MIN_SUPPORT = 5
TOP_VALUES = 3


def _agreement(codes: np.ndarray, other: np.ndarray) -> dict[str, float]:
    return {
        "nmi": float(normalized_mutual_info_score(other, codes)),
        "ari": float(adjusted_rand_score(other, codes)),
    }


def _raw_value(spec: FeatureSpec, col: str, index: int) -> Any:
    return "<OOV>" if index == OOV_INDEX else spec.vocab[col][index - 1]


def domain_report(
    codes: np.ndarray,
    data: TensorData,
    spec: FeatureSpec,
    planted: np.ndarray | None = None,
    *,
    num_codes: int | None = None,
) -> dict[str, Any]:
    """Summarise a code assignment of the rows of ``data``.

    Args:
        codes: [N] int mined domain per row.
        data: the rows (labels, features, hand-crafted domains).
        spec: the feature spec (names, vocabularies to decode sparse values, dense mean/std).
        planted: [N] ground-truth domains (synthetic data), optional.
        num_codes: codebook size m (default: max code + 1); codes with no row are reported dead.

    Returns:
        dict with ``rows``, ``num_codes``, ``perplexity`` (exp of the code-usage entropy, in [1, m]),
        ``dead_codes``, ``agreement`` (``handcrafted`` and optionally ``planted``: NMI and ARI),
        ``feature_mi`` (mutual information in nats between code and each feature), ``feature_nmi`` (the same,
        normalised to [0, 1] by the arithmetic mean of the two entropies: 1 means the codes are a relabelling
        of the feature, e.g. "the codes are just age"; sparse features by id, dense ones by decile bins),
        and ``codes``: per code
        rows, share, positive rate, hand-crafted domain mix, top sparse values by lift and dense means.
    """
    codes = np.asarray(codes, dtype=np.int64)
    n = len(codes)
    if n != len(data):
        raise ValueError(f"domain_report: {n} codes for {len(data)} rows")
    m = int(num_codes if num_codes is not None else (codes.max() + 1 if n else 0))
    schema = spec.schema
    labels = data.label.numpy()
    hand = data.handcrafted.numpy()
    sparse = data.sparse.numpy()
    dense = data.dense.numpy()
    counts = np.bincount(codes, minlength=m)
    share = counts / max(1, n)
    nz = share[share > 0]
    perplexity = float(math.exp(-(nz * np.log(nz)).sum())) if len(nz) else 0.0
    pos = np.bincount(codes, weights=labels, minlength=m)
    agreement = {"handcrafted": _agreement(codes, hand)}
    if planted is not None:
        agreement["planted"] = _agreement(codes, np.asarray(planted))

    feature_mi: dict[str, float] = {}
    feature_nmi: dict[str, float] = {}
    per_code: list[dict[str, Any]] = [
        {
            "code": k,
            "rows": int(counts[k]),
            "share": float(share[k]),
            "positive_rate": float(pos[k] / counts[k]) if counts[k] else None,
            "handcrafted_mix": {},
            "top_values": [],
            "dense_means": {},
        }
        for k in range(m)
    ]
    hand_counts = np.bincount(codes * schema.num_domains + hand, minlength=m * schema.num_domains)
    hand_counts = hand_counts.reshape(m, schema.num_domains)
    for k in range(m):
        if counts[k]:
            per_code[k]["handcrafted_mix"] = {
                name: float(hand_counts[k, j] / counts[k]) for j, name in enumerate(schema.domain_names)
            }

    candidates: list[list[tuple[float, dict[str, Any]]]] = [[] for _ in range(m)]
    for j, col in enumerate(schema.sparse):
        values = sparse[:, j]
        feature_mi[col] = float(mutual_info_score(codes, values)) if n else 0.0
        feature_nmi[col] = float(normalized_mutual_info_score(values, codes)) if n else 0.0
        v = int(values.max()) + 1 if n else 1
        joint = np.bincount(codes * v + values, minlength=m * v).reshape(m, v)  # [m, V]
        p_value = joint.sum(0) / max(1, n)  # [V]
        for k in range(m):
            if not counts[k]:
                continue
            p_in_code = joint[k] / counts[k]
            ok = (joint[k] >= MIN_SUPPORT) & (p_value > 0)
            lift = np.where(ok, p_in_code / np.where(p_value > 0, p_value, 1.0), 0.0)
            for idx in np.argsort(-lift)[:TOP_VALUES]:
                if lift[idx] > 0:
                    entry = {
                        "feature": col,
                        "value": _raw_value(spec, col, int(idx)),
                        "lift": float(lift[idx]),
                        "share_in_code": float(p_in_code[idx]),
                    }
                    candidates[k].append((float(lift[idx]), entry))
    for k in range(m):
        per_code[k]["top_values"] = [e for _, e in sorted(candidates[k], key=lambda t: -t[0])[:TOP_VALUES]]

    for j, col in enumerate(schema.dense):
        # report in raw units: undo the train standardisation
        raw = dense[:, j].astype(np.float64) * spec.std[col] + spec.mean[col]
        sums = np.bincount(codes, weights=raw, minlength=m)
        for k in range(m):
            if counts[k]:
                per_code[k]["dense_means"][col] = float(sums[k] / counts[k])
        # dense MI via deciles, so the measure is comparable with the sparse features'
        edges = np.unique(np.quantile(raw, np.linspace(0, 1, 11)[1:-1])) if n else np.array([])
        bins = np.digitize(raw, edges)
        feature_mi[col] = float(mutual_info_score(codes, bins)) if n else 0.0
        feature_nmi[col] = float(normalized_mutual_info_score(bins, codes)) if n else 0.0

    return {
        "rows": n,
        "num_codes": m,
        "perplexity": perplexity,
        "dead_codes": [int(k) for k in np.flatnonzero(counts == 0)],
        "positive_rate": float(labels.mean()) if n else None,
        "agreement": agreement,
        "feature_mi": feature_mi,
        "feature_nmi": feature_nmi,
        "codes": per_code,
    }


def report_markdown(report: dict[str, Any]) -> str:
    """Render a :func:`domain_report` dict as Markdown (summary, agreement, per-code table, features)."""
    lines = [
        "# Mined domains",
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
        mix = ", ".join(f"{k} {v:.2f}" for k, v in c["handcrafted_mix"].items())
        top = ", ".join(f"{t['feature']}={t['value']} (×{t['lift']:.1f})" for t in c["top_values"])
        lines.append(f"| {c['code']} | {c['rows']} | {c['share']:.3f} | {rate} | {mix} | {top} |")
    dense_cols = sorted({k for c in report["codes"] for k in c["dense_means"]})
    if dense_cols:
        lines += ["", "| code | " + " | ".join(dense_cols) + " |", "|---" * (len(dense_cols) + 1) + "|"]
        for c in report["codes"]:
            vals = " | ".join(
                f"{c['dense_means'][d]:.3g}" if d in c["dense_means"] else "–" for d in dense_cols
            )
            lines.append(f"| {c['code']} | {vals} |")
    nmi = report.get("feature_nmi", {})
    lines += [
        "",
        "Agreement of the codes with each input feature (sparse: the id; dense: decile bins), highest first:",
        "",
        "| feature | NMI | MI (nats) |",
        "|---|---|---|",
    ]
    for col, mi in sorted(report["feature_mi"].items(), key=lambda t: -nmi.get(t[0], t[1])):
        shown = f"{nmi[col]:.3f}" if col in nmi else "–"
        lines.append(f"| {col} | {shown} | {mi:.4f} |")
    return "\n".join(lines) + "\n"
