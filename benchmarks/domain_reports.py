"""Per-feature domain reports: what do the mined codes track? One dataset per call; Markdown + JSON to ``--out``.

For each source in ``--sources``:

* ``mined``: the default external miner (``MinerConfig()`` with ``--seed``), fitted on the train split, as
  ``mdctr benchmark`` and the pipeline's ``mine_domains`` step fit it;
* ``mined-joint``: the codes of one trained ranker (``shared_bottom`` with source ``mined-joint`` at the dnn's
  FLOP budget, ``--epochs`` epochs, chosen on validation as usual).

The report (``mdctr.domains.report.domain_report``) is computed on the test split: per code its size (rows,
share), CTR, hand-crafted mix and the most over-represented value of every feature (lift); NMI/ARI with the
hand-crafted domain; NMI with every input feature (sparse by id, dense by decile bins fitted on train).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/domain_reports.py --dataset ml-1m --out runs/domain-reports \
        --sources mined,mined-joint
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mdctr.data import load_dataset
from mdctr.data.prepare import PreparedData, prepare_in_memory
from mdctr.domains import MinerConfig, domain_report, fit_miner, report_markdown
from mdctr.domains.report import dense_bin_edges
from mdctr.io import json_safe, write_json_atomic
from mdctr.routing import model_inputs
from mdctr.training import TrainConfig, train_model

log = logging.getLogger("domain_reports")

SOURCES = ("mined", "mined-joint")
#: the ranker whose mined-joint codes are reported, and its FLOP budget
JOINT_MODEL = "shared_bottom"
JOINT_BUDGET = "model:dnn"
#: file stem per dataset (docs/benchmarks/domains/<stem>.md)
STEMS = {"ml-1m": "ml1m", "epinions": "epinions"}
#: dataset label in the docs
LABELS = {"ml-1m": "ML-1M (users 1–2999)", "epinions": "Epinions"}


def _mined(prepared: PreparedData, seed: int) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Fit the default external miner on train → (test codes [N_test], m, facts for the header)."""
    config = MinerConfig(seed=seed)
    t0 = time.perf_counter()
    miner = fit_miner(prepared.train, model_inputs(prepared, 1), config)
    fit_s = time.perf_counter() - t0
    used = int(np.unique(miner.assign(prepared.train).numpy()).size)
    facts = {
        "what": f"the default external miner, `MinerConfig(seed={seed})`, fitted on the train split",
        "config": {k: v for k, v in vars(config).items()},
        "fit_seconds": round(fit_s, 1),
        "codes_used_train": used,
    }
    return miner.assign(prepared.test).numpy(), config.num_codes, facts


def _mined_joint(prepared: PreparedData, seed: int, epochs: int) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Train ``shared_bottom``/``mined-joint`` at the dnn budget → (test codes, m, facts for the header)."""
    config = TrainConfig(epochs=epochs, patience=epochs, seed=seed, num_threads=1, device="cpu")
    t0 = time.perf_counter()
    trained = train_model(prepared, JOINT_MODEL, "mined-joint", config=config, budget=JOINT_BUDGET)
    train_s = time.perf_counter() - t0
    model: Any = trained.model
    history = [
        {
            k: round(float(v), 4)
            for k, v in h.items()
            if k in ("epoch", "valid_auc", "codes_used", "code_churn")
        }
        for h in trained.fit.history
    ]
    facts = {
        "what": (
            f"`{JOINT_MODEL}` with source `mined-joint` at the dnn budget (`{JOINT_BUDGET}`), "
            f"{epochs} epochs, seed {seed}; the weights of its best validation epoch"
        ),
        "width": round(float(trained.width), 4),
        "flops_per_sample": int(trained.flops),
        "best_valid_auc": round(float(trained.fit.best_valid_auc), 4),
        "test_auc": round(float(trained.metrics["auc"]), 4),
        "train_seconds": round(train_s, 1),
        "history": history,
    }
    return model.assign_codes(prepared.test).numpy(), int(model.num_codes), facts


def _reading(report: dict[str, Any]) -> str:
    """One factual line: the features the codes agree with most beyond chance, and the range of per-code CTR."""
    chance = report["feature_nmi_chance"]
    nmi = sorted(report["feature_nmi"].items(), key=lambda t: -(t[1] - chance[t[0]]))
    top = ", ".join(f"{k} {v:.3f} (chance {chance[k]:.3f})" for k, v in nmi[:3])
    rates = [c["positive_rate"] for c in report["codes"] if c["positive_rate"] is not None]
    hand = report["agreement"]["handcrafted"]
    return (
        f"Highest NMI with a feature, beyond chance: {top}; with the hand-crafted domain {hand['nmi']:.3f} (ARI {hand['ari']:.3f}). "
        f"Per-code CTR {min(rates):.3f}–{max(rates):.3f} (test overall {report['positive_rate']:.3f})."
    )


def _legend(prepared: PreparedData) -> str:
    """A sparse feature each of whose values lies in one hand-crafted domain (Epinions' ``category``) is listed by
    id in the report; name its values after their domains. Empty when there is none."""
    spec, train = prepared.spec, prepared.train
    domain = train.handcrafted.numpy()
    out = []
    for j, col in enumerate(spec.schema.sparse):
        pairs = np.unique(np.stack([train.sparse[:, j].numpy(), domain], axis=1), axis=0)  # [P, 2]
        if len(spec.vocab[col]) > 100 or len(np.unique(pairs[:, 0])) != len(pairs):
            continue  # many ids, or some value in several domains
        names = ", ".join(
            f"{spec.vocab[col][v - 1]} = {spec.schema.domain_names[d]}" for v, d in pairs.tolist() if v > 0
        )
        out.append(f"Each `{col}` value is one hand-crafted domain: {names}.")
    return " ".join(out)


def _section(source: str, facts: dict[str, Any], report: dict[str, Any]) -> str:
    """Markdown for one source: what produced the codes, a one-line summary, the report's tables."""
    lines = [f"## `{source}`", "", f"Codes of {facts['what']}."]
    if "fit_seconds" in facts:
        lines.append(
            f"Fit in {facts['fit_seconds']} s on the train split; {facts['codes_used_train']} of "
            f"{report['num_codes']} codes used on train. Config: `{json.dumps(json_safe(facts['config']))}`."
        )
    else:
        lines.append(
            f"Width {facts['width']}, {facts['flops_per_sample']:,} FLOPs per sample (miner included); best "
            f"validation AUC {facts['best_valid_auc']}, test AUC {facts['test_auc']}; trained in "
            f"{facts['train_seconds']} s. Per epoch: "
            + "; ".join(", ".join(f"{k} {v:g}" for k, v in h.items()) for h in facts["history"])
            + "."
        )
    lines += ["", _reading(report), "", report_markdown(report, title="Report (test split)", level=3)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(STEMS))
    parser.add_argument(
        "--out", required=True, type=Path, help="directory for <dataset>.md and <dataset>.json"
    )
    parser.add_argument("--sources", default="mined", help=f"comma-separated, from {SOURCES}")
    parser.add_argument("--seed", type=int, default=0, help="miner/ranker seed (the split is seed 0)")
    parser.add_argument("--epochs", type=int, default=3, help="mined-joint: training epochs")
    parser.add_argument("--datasets-dir", default=os.environ.get("DATASETS_DIR", "../shared/datasets"))
    args = parser.parse_args(argv)
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        parser.error(f"--sources: expected some of {list(SOURCES)}, found {unknown or 'none'}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)  # the machine is shared; the numbers below are for one thread

    t0 = time.perf_counter()
    prepared = prepare_in_memory(load_dataset(args.dataset, args.datasets_dir), seed=0)
    edges = dense_bin_edges(prepared.train, prepared.spec)
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/domain_reports.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    header = [
        f"# Mined domains on {LABELS[args.dataset]}: per-feature report",
        "",
        f"Produced by `{command}` (one CPU thread; {len(prepared.train):,} train / {len(prepared.test):,} test "
        f"rows, random 80/10/10 split, seed 0). Reports are on the test split; dense features are binned by "
        "deciles of the train split.",
    ]
    if legend := _legend(prepared):
        header += ["", legend]
    sections, reports = [], {}
    for source in sources:
        if source == "mined":
            codes, m, facts = _mined(prepared, args.seed)
        else:
            codes, m, facts = _mined_joint(prepared, args.seed, args.epochs)
        report = json_safe(domain_report(codes, prepared.test, prepared.spec, num_codes=m, dense_edges=edges))
        reports[source] = {"facts": json_safe(facts), "report": report}
        sections.append(_section(source, facts, report))
        log.info("%s: %s", source, _reading(report))
    stem = STEMS[args.dataset]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.md").write_text("\n".join(header) + "\n\n" + "\n".join(sections))
    write_json_atomic(args.out / f"{stem}.json", {"command": command, "sources": reports})
    log.info("wrote %s in %.0f s", args.out / f"{stem}.md", time.perf_counter() - t0)


if __name__ == "__main__":
    main()
