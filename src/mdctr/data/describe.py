"""Summary statistics of a canonical table: rows, users, items, positive rate, per hand-crafted domain."""

from __future__ import annotations

from typing import Any

from mdctr.data.base import LoadedDataset


def describe(loaded: LoadedDataset) -> dict[str, Any]:
    t, s = loaded.table, loaded.schema
    grouped = t.groupby(s.domain)[s.label].agg(["size", "mean"])
    domains = []
    for d, name in enumerate(s.domain_names):
        rows = int(grouped["size"].get(d, 0))
        domains.append(
            {
                "domain": d,
                "name": name,
                "rows": rows,
                "positive_rate": float(grouped["mean"].get(d, float("nan"))) if rows else None,
            }
        )
    return {
        "dataset": s.name,
        "rows": len(t),
        "users": int(t[s.user].nunique()) if s.user else None,
        "items": int(t[s.item].nunique()) if s.item else None,
        "positive_rate": float(t[s.label].mean()),
        "num_domains": s.num_domains,
        "domains": domains,
    }


def format_description(d: dict[str, Any]) -> str:
    width = max([24, *(len(row["name"]) for row in d["domains"])])  # long category names stay aligned
    lines = [
        f"dataset {d['dataset']}: {d['rows']:,} rows, "
        f"{d['users'] if d['users'] is not None else '-'} users, "
        f"{d['items'] if d['items'] is not None else '-'} items, positive rate {d['positive_rate']:.3f}",
        f"{'domain':>6}  {'name':<{width}} {'rows':>10} {'pos.rate':>9}",
    ]
    for row in d["domains"]:
        rate = "-" if row["positive_rate"] is None else f"{row['positive_rate']:.3f}"
        lines.append(f"{row['domain']:>6}  {row['name']:<{width}} {row['rows']:>10,} {rate:>9}")
    return "\n".join(lines)
