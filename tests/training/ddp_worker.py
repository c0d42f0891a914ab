"""One rank of the 2-process DDP test (launched by ``torch.distributed.run`` from test_distributed.py), and the
scenarios it runs, which the test also runs in one process (it loads this file by path).

Usage: ddp_worker.py OUT_DIR main|resume. ``main``: each rank saves, per scenario, its final model state and
fit history to ``OUT_DIR/<scenario>-rank<r>.pt``, then starts a checkpointed dnn run that rank 0 kills after
epoch 1. ``resume``: the same dnn run resumes from rank 0's checkpoint and saves ``resume-rank<r>.pt``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from mdctr.data.prepare import PreparedData, prepare_in_memory
from mdctr.data.synthetic import generate
from mdctr.routing import DomainRouting
from mdctr.training import TrainConfig
from mdctr.training.trainer import fit

# dnn and mmoe without BatchNorm: each rank normalises by its own rows, where one process uses the global batch;
# without it, DDP must reproduce the one-process model up to float summation order
CASES: dict[str, dict[str, Any]] = {
    "dnn": {"model": "dnn", "source": "none", "overrides": {"batchnorm": False}},
    # routed gates and towers; with 4 domains and 16 rows per rank, steps leave a domain out of one rank's batch
    "mmoe": {"model": "mmoe", "source": "handcrafted", "overrides": {"batchnorm": False}},
    # routed towers with BatchNorm (per-rank statistics, averaged over ranks after every epoch)
    "hamur": {"model": "hamur", "source": "handcrafted", "overrides": None},
}
EPOCHS = 2
BATCH = 32
SEED = 7


class Killed(Exception):
    """Rank 0 stops the job after epoch 1 (the resume test's simulated node failure)."""


def prepared() -> PreparedData:
    return prepare_in_memory(
        generate(rows=1500, num_sparse=3, num_dense=2, vocab_size=40, num_domains=4, seed=2)
    )


def run_case(
    name: str, ckpt: Path | None = None, kill_after: int | None = None
) -> tuple[dict[str, torch.Tensor], list[dict[str, float]], int | None]:
    """Train scenario ``name`` → (final state dict on CPU, history, epoch resumed from)."""
    case = CASES[name]
    routing = DomainRouting.for_model(case["model"], case["source"], model_overrides=case["overrides"])
    routed = routing.route(prepared())
    config = TrainConfig(
        epochs=EPOCHS,
        batch_size=BATCH,
        seed=SEED,
        patience=5,
        device="cpu",
        checkpoint_dir=str(ckpt) if ckpt else None,
    )

    def on_epoch(record: dict[str, float]) -> None:
        if kill_after is not None and record["epoch"] == kill_after:
            os._exit(3)  # a hard kill of rank 0: torchrun then stops the other rank, as a lost node would

    torch.manual_seed(config.seed)
    model = routing.build(routed.inputs)
    result = fit(model, routed.data.train, routed.data.valid, config, on_epoch=on_epoch)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, result.history, result.resumed_from


def main() -> None:
    out, phase = Path(sys.argv[1]), sys.argv[2]
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    if phase == "main":
        for name in CASES:
            state, history, resumed_from = run_case(name)
            torch.save({"state": state, "history": history}, out / f"{name}-rank{rank}.pt")
        run_case("dnn", out / "ckpt", kill_after=1)  # never returns: rank 0 exits after epoch 1
    else:
        state, history, resumed_from = run_case("dnn", out / "ckpt")
        torch.save(
            {"state": state, "history": history, "resumed_from": resumed_from}, out / f"resume-rank{rank}.pt"
        )
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
