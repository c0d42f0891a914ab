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
    (``domain_report.json`` + ``.md``; the Markdown also to ``report_path``). The report is computed on the test
    split, against planted domains when the data has them (synthetic)."""
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
    markdown = report_markdown(report)
    with atomic_dir(out_dir) as tmp:
        miner.save(tmp / MINER_DIR)
        np.savez(tmp / CODES_FILE, **codes)
        write_json_atomic(tmp / REPORT_JSON, report)
        (tmp / REPORT_MD).write_text(markdown)
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(markdown)
    used = int(np.unique(codes["train"]).size)
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
