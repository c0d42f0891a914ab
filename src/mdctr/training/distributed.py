"""Data-parallel training with PyTorch DDP under ``torchrun`` (gloo on CPU, NCCL on CUDA).

The trainer calls :func:`context` once: a plain run (no ``WORLD_SIZE`` > 1 in the environment and no process
group) gets the single-process context and nothing changes; under ``torchrun --nproc-per-node N`` the process
group is initialised from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``).

Rules the trainer follows with it:

* every rank draws the same global batch order and keeps its stride of each global batch, so all ranks run the
  same number of steps and the gradient all-reduce always has every rank;
* the model is wrapped with ``find_unused_parameters=True``: a routed model whose domain tower sees no row of
  this rank's batch leaves that tower out of the graph, and DDP must not wait for its gradient;
* buffers are not broadcast at each forward (``broadcast_buffers=False``): each rank keeps BatchNorm running
  statistics of its own rows, and after every epoch the floating-point buffers are averaged over ranks. The
  running mean is an exponential average, which is linear, so the average of the ranks' running means is the
  running mean of the global batches' means (ranks hold equal shares of each batch); the running variance
  misses only the spread between the ranks' shares. Rank 0's statistics alone (DDP's default) come from half
  the rows: with 16 rows per rank they sat ~10x further from one process's (tests/training/test_distributed.py);
  at 2,048 rows per rank the difference is negligible (docs/benchmarks.md, "Scaling"). Integer buffers
  (``num_batches_tracked``) are the same on every rank and are broadcast from rank 0. Validation, early
  stopping and checkpoints then see identical models on every rank;
* rank 0 alone writes checkpoints and calls the per-epoch callback (MLflow logging, bundles).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel run (``world_size`` 1: a plain single-process run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that checkpoints, logs and writes artifacts."""
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """The device of this rank: ``cuda:<local_rank>`` when the run asks for CUDA, else ``requested``."""
        if self.enabled and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def context(device: torch.device) -> DistContext:
    """The data-parallel context of this process, initialising the process group when torchrun started us.

    Args:
        device: the device the training config resolves to; CUDA selects NCCL, anything else gloo.
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank)
    log.info(
        "data-parallel: rank %d of %d (%s, local rank %d)", ctx.rank, ctx.world_size, backend, local_rank
    )
    return ctx


def wrap(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """The module to call in the training loop: ``model`` itself, or DDP around it in a data-parallel run."""
    if not ctx.enabled:
        return model
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        # a domain absent from this rank's batch leaves its tower unused in this step
        find_unused_parameters=True,
        # running statistics stay per rank during the epoch and are averaged by sync_buffers after it
        broadcast_buffers=False,
    )


def sync_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Make every rank's buffers equal: floating-point ones (BatchNorm running statistics) become their mean
    over ranks, the others (``num_batches_tracked``) rank 0's."""
    if not ctx.enabled:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf.data, op=dist.ReduceOp.SUM)
            buf.data.div_(ctx.world_size)
        else:
            dist.broadcast(buf.data, src=0)


def all_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise sum of ``values`` over ranks (returned; ``values`` is left as it was)."""
    if not ctx.enabled:
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
