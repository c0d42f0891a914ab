"""Step: fit the VQ-VAE domain miner on the train split only, code every row, and report the mined domains."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mdctr.io import atomic_dir, json_safe, write_json_atomic
from mdctr.steps.common import parse_options

log = logging.getLogger(__name__)

MINER_DIR = "miner"
CODES_FILE = "codes.npz"
REPORT_JSON = "domain_report.json"
REPORT_MD = "domain_report.md"
REPORT_HTML = "domain_report.html"
#: metric-key prefix of the domain report's numbers on the MLflow parent run
METRIC_PREFIX = "domains."


@dataclass(frozen=True)
class MineConfig:
    """Attributes: ``miner_options`` (JSON object of :class:`~mdctr.domains.MinerConfig` fields, strict) and
    the miner ``seed`` (overrides the options)."""

    miner_options: str = "{}"
    seed: int = 0


@dataclass(frozen=True)
class MineOutput:
    """Attributes: output ``path``; ``codes_used``: distinct codes assigned on train; ``summary``: finite
    scalar report values (perplexity, NMI/ARI with hand-crafted domains, …) for KFP metrics."""

    path: Path
    codes_used: int
    summary: dict[str, float]


def mine_domains(
    *, prepared_dir: Path | str, out_dir: Path | str, report_path: Path | str, config: MineConfig
) -> MineOutput:
    """Write ``out_dir/miner/`` (the fitted miner), ``codes.npz`` (train/valid/test codes) and the domain report
    (``domain_report.json``, ``.md`` and ``.html``; the Markdown also to ``report_path``). The report is computed
    on the test split, against planted domains when the data has them (synthetic); ``codes_used_train`` counts
    the codes assigned on train.

    This step takes no MLflow run, so the pipeline can cache it (the miner is fitted once per data version and
    options); :func:`log_domain_report` puts the report on a run's parent run afterwards."""
    from mdctr.config import from_dict
    from mdctr.data.encode import SPLIT_NAMES
    from mdctr.data.prepare import read_prepared
    from mdctr.domains import MinerConfig, domain_report, fit_miner, report_markdown
    from mdctr.routing import model_inputs
    from mdctr.steps.prepare_data import PLANTED_FILE

    prepared_dir = Path(prepared_dir)
    prepared = read_prepared(prepared_dir)
    options = {**parse_options(config.miner_options, what="miner_options"), "seed": config.seed}
    miner_cfg = from_dict(MinerConfig, options, where="miner_options")
    inputs = model_inputs(prepared, prepared.spec.schema.num_domains, embed_dim=miner_cfg.embed_dim)
    miner = fit_miner(prepared.train, inputs, miner_cfg)
    codes = {k: miner.assign(prepared.split(k)).numpy() for k in SPLIT_NAMES}
    planted_path = prepared_dir / PLANTED_FILE
    planted = np.load(planted_path)["test"] if planted_path.is_file() else None
    report = json_safe(
        domain_report(codes["test"], prepared.test, prepared.spec, planted, num_codes=miner.num_codes)
    )
    used = int(np.unique(codes["train"]).size)
    report["codes_used_train"] = used
    markdown = report_markdown(report)
    with atomic_dir(out_dir) as tmp:
        miner.save(tmp / MINER_DIR)
        np.savez(tmp / CODES_FILE, **codes)
        write_json_atomic(tmp / REPORT_JSON, report)
        (tmp / REPORT_MD).write_text(markdown)
        (tmp / REPORT_HTML).write_text(report_html(report))
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(markdown)
    summary = _scalars(report, keys=("perplexity", "dead_codes", "agreement"))
    log.info("mined %d/%d codes on %d train rows", used, miner.num_codes, len(prepared.train))
    return MineOutput(path=Path(out_dir), codes_used=used, summary=summary)


def _scalars(report: dict[str, Any], *, keys: tuple[str, ...]) -> dict[str, float]:
    """Finite numbers under ``keys`` of the report, nested keys joined with '.' (``agreement.planted.nmi``)."""
    out: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[prefix] = float(value)

    for key in keys:
        if key in report:
            walk(key, report[key])
    return out


def report_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The domain report's key numbers as metrics (``domains.`` + key): rows, codes, codes used on train,
    perplexity, number of dead codes, NMI/ARI with the hand-crafted (and planted) domains, NMI with every input
    feature (``domains.feature_nmi.<feature>``) and the largest of those (``domains.feature_nmi_max``: near 1
    means the codes merely re-encode one feature)."""
    from mdctr.tracking.runs import metric_key_part

    nmi = {metric_key_part(k): v for k, v in (report.get("feature_nmi") or {}).items()}
    values: dict[str, Any] = {
        "rows": report.get("rows"),
        "num_codes": report.get("num_codes"),
        "codes_used_train": report.get("codes_used_train"),
        "perplexity": report.get("perplexity"),
        "dead_codes": len(report.get("dead_codes") or []),
        **_scalars(report, keys=("agreement",)),
        **{f"feature_nmi.{k}": v for k, v in nmi.items()},
    }
    if nmi:
        values["feature_nmi_max"] = max(nmi.values())
    return {
        METRIC_PREFIX + k: float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def report_html(report: dict[str, Any]) -> str:
    """The domain report as one self-contained HTML page (tables only; the same content as the Markdown)."""
    import html

    import pandas as pd

    esc = html.escape
    agreement = pd.DataFrame(
        [{"reference": ref, "NMI": a["nmi"], "ARI": a["ari"]} for ref, a in report["agreement"].items()]
    )
    codes = pd.DataFrame(
        [
            {
                "code": c["code"],
                "rows": c["rows"],
                "share": c["share"],
                "positive rate": c["positive_rate"],
                "hand-crafted mix": ", ".join(f"{k} {v:.2f}" for k, v in c["handcrafted_mix"].items()),
                "distinctive values": ", ".join(
                    f"{t['feature']}={t['value']} (×{t['lift']:.1f})" for t in c["top_values"]
                ),
                **{f"mean {k}": v for k, v in c["dense_means"].items()},
            }
            for c in report["codes"]
        ]
    )
    nmi = report.get("feature_nmi") or {}
    features = pd.DataFrame(
        [{"feature": k, "NMI": nmi.get(k), "MI (nats)": v} for k, v in report["feature_mi"].items()]
    ).sort_values("NMI", ascending=False, na_position="last")

    def table(df: pd.DataFrame) -> str:
        return df.to_html(index=False, border=0, float_format=lambda x: f"{x:.3f}", na_rep="–")

    used = report.get("codes_used_train")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Mined domains</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px;margin-bottom:1.5em}}
td,th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}}</style></head><body>
<h1>Mined domains</h1>
<p>{report["rows"]} test rows, {report["num_codes"]} codes{"" if used is None else f" ({used} used on train)"},
perplexity {report["perplexity"]:.2f}, dead codes: {esc(str(report["dead_codes"] or "none"))}.</p>
<h2>Agreement with reference domains</h2>{table(agreement)}
<h2>Codes</h2>{table(codes)}
<h2>Agreement of the codes with each input feature</h2>
<p>Sparse features by id, dense ones by decile bins; NMI near 1 means the codes re-encode that feature.</p>
{table(features)}
</body></html>
"""


def log_domain_report(domains_dir: Path | str, *, tracking_uri: str | None, parent_run_id: str) -> str:
    """Log the domain report in ``domains_dir`` (a :func:`mine_domains` output) on ``parent_run_id``: JSON,
    Markdown and HTML under ``domains/`` and :func:`report_metrics` as metrics; return where it is."""
    import json
    import tempfile

    from mdctr.domains import report_markdown
    from mdctr.tracking.names import DOMAIN_REPORT_PATH
    from mdctr.tracking.reports import log_report

    domains_dir = Path(domains_dir)
    report = json.loads((domains_dir / REPORT_JSON).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        write_json_atomic(out / REPORT_JSON, report)
        (out / REPORT_MD).write_text(report_markdown(report))
        (out / REPORT_HTML).write_text(report_html(report))
        return log_report(
            tracking_uri,
            parent_run_id,
            files=out,
            artifact_path=DOMAIN_REPORT_PATH,
            metrics=report_metrics(report),
        )
