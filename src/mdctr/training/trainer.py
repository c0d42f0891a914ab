"""The one trainer: Adam + BCE-with-logits (+ the model's auxiliary loss), early stopping on validation AUC
or logloss (``TrainConfig.early_stop_metric``),
per-epoch checkpoints and exact resume.

Determinism: shuffling draws from a private ``torch.Generator`` seeded with ``config.seed`` and dropout from
the global torch RNG (seeded here too); both states go into every checkpoint, together with the model,
the optimiser and the early-stopping state, so a run killed after epoch k and resumed ends with bit-identical
weights to an uninterrupted run (on CPU).

The hot loop keeps the running loss on the device and synchronises once per epoch; validation runs under
``torch.no_grad`` in batches of ``eval_batch_size``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import pickle
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mdctr.data.stream import ParquetStream, rows
from mdctr.data.tensors import TensorData
from mdctr.models.base import CTRModel
from mdctr.training import distributed
from mdctr.training.config import TrainConfig
from mdctr.training.distributed import DistContext
from mdctr.training.metrics import auc_logloss

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "epoch-{:03d}.pt"
_CHECKPOINT_RE = re.compile(r"^epoch-(\d{3,})\.pt$")
#: config fields that may change between a run and its resume without changing the result
_RESUME_FREE_FIELDS = ("epochs", "checkpoint_dir", "device", "num_threads", "eval_batch_size", "calibrate")

EpochCallback = Callable[[dict[str, float]], None]
#: train rows handed to ``model.end_epoch`` when streaming (a bounded sample instead of the whole split)
_STREAM_END_EPOCH_ROWS = 1 << 18


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, or a checkpoint does not belong to this run)."""


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` reports.

    Attributes:
        history: one dict per epoch: ``epoch`` (1-based), ``train_loss`` (mean BCE), ``valid_auc``,
            ``valid_logloss``, ``samples_per_s`` and ``train_seconds`` (train loop only), ``seconds``
            (train + validation), plus any metrics the model's ``end_epoch`` returns (adaptive2: code churn).
        best_epoch: epoch whose weights the model holds after :func:`fit` (1-based): the best validation
            ``early_stop_metric`` (highest AUC or lowest logloss).
        best_valid_auc: validation AUC of that epoch.
        best_valid_logloss: validation logloss of that epoch (NaN for a result built without it).
        early_stop_metric: the metric that chose ``best_epoch`` (``"auc"`` or ``"logloss"``).
        train_samples_per_s: train rows per second over all epochs (train loop only, no validation).
        wall_s: wall-clock seconds of the whole fit, including epochs run before a resume.
        resumed_from: epoch of the checkpoint this call resumed from, or None.
    """

    history: list[dict[str, float]]
    best_epoch: int
    best_valid_auc: float
    train_samples_per_s: float
    wall_s: float
    resumed_from: int | None = None
    best_valid_logloss: float = math.nan
    early_stop_metric: str = "auc"


def _data_to(data: TensorData, device: torch.device) -> TensorData:
    if device.type == "cpu":
        return data
    return TensorData(
        *(t.to(device) for t in (data.sparse, data.dense, data.domain, data.label, data.handcrafted))
    )


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def predict_logits(model: CTRModel, data: TensorData, batch_size: int = 65536) -> np.ndarray:
    """Logits [N] float64 for every row of ``data``, in order (eval mode, no gradients).

    Calibration works on these: a logit of 40 is still distinct from 50, while both probabilities round to 1.
    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    device = _model_device(model)
    out = np.empty(len(data), dtype=np.float64)
    try:
        for start in range(0, len(data), batch_size):
            batch = data.batch(start, start + batch_size).to(device)
            out[start : start + len(batch)] = model(batch).double().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def predict(model: CTRModel, data: TensorData, batch_size: int = 65536) -> np.ndarray:
    """Click probabilities [N] float64 for every row of ``data``, in order (eval mode, no gradients).

    The model's train/eval mode is restored afterwards.
    """
    # sigmoid in float64 so that confident rows do not round to exactly 0 or 1
    return torch.sigmoid(torch.from_numpy(predict_logits(model, data, batch_size))).numpy()


# -- checkpoints -------------------------------------------------------------------------------------------
def _resume_key(config: TrainConfig) -> dict[str, Any]:
    d = dataclasses.asdict(config)
    for key in _RESUME_FREE_FIELDS:
        d.pop(key)
    if d["early_stop_metric"] == "auc":  # the default: keeps checkpoints written before the option resumable
        d.pop("early_stop_metric")
    return d


def latest_checkpoint(checkpoint_dir: Path | str) -> Path | None:
    """The checkpoint with the highest epoch in ``checkpoint_dir``, or None."""
    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _CHECKPOINT_RE.match(p.name))]
    return max(found)[1] if found else None


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a kill while saving never leaves a truncated checkpoint under the real name


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: the unpickler builds tensors and plain containers only.

    Every field is saved in such a form (RNG states are byte tensors, the optimiser state is tensors and
    numbers, the history plain dicts), so a planted pickle that would run code fails to load instead.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise TrainingError(
            f"checkpoint {path} holds more than tensors and plain data; refusing it ({e})"
        ) from None


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# -- the loop ----------------------------------------------------------------------------------------------
@dataclass
class _FitState:
    """What the loop carries from epoch to epoch (and what a checkpoint restores)."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_auc: float = -math.inf
    #: the early-stopping score of the best epoch, higher is better (AUC, or minus the logloss)
    best_score: float = -math.inf
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    stopped: bool = False
    prior_wall: float = 0.0
    resumed_from: int | None = None


def fit(
    model: CTRModel,
    train: TensorData | ParquetStream,
    valid: TensorData,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Train ``model`` in place and leave it holding the weights of its best validation epoch.

    With ``config.checkpoint_dir`` set, a checkpoint is written after every epoch (before ``on_epoch`` is
    called) and a later call with the same directory resumes from the latest one, so an interrupted run ends
    exactly as an uninterrupted one would.

    Under ``torchrun`` (see :mod:`mdctr.training.distributed`) every rank calls ``fit`` with the same arguments:
    each trains on its stride of every global batch of ``config.batch_size`` rows, DDP all-reduces the
    gradients, and rank 0 alone writes checkpoints and calls ``on_epoch``; every rank ends with the same model.

    Args:
        model: a freshly built model (initialised with the seed of ``config``).
        train: rows to train on (``domain`` already holds the routing domain): tensors in memory, or a
            :class:`~mdctr.data.stream.ParquetStream` read batch by batch (its ``batch_size`` must equal
            ``config.batch_size`` and its seed ``config.seed``; see :func:`stream_train`).
        valid: rows for early stopping.
        config: see :class:`TrainConfig`.
        on_epoch: called with each epoch's history record after its checkpoint is written.
    """
    t_call = time.perf_counter()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    ctx = distributed.context(config.resolve_device())
    device = ctx.device(config.resolve_device())
    _check_stream(train, config)
    model.to(device)
    net = distributed.wrap(model, ctx, device)
    optimizer = _optimizer(model, config, device)
    shuffle_gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # dropout and any other in-model randomness
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    state = _resume(ckpt_dir, config, model, optimizer, shuffle_gen)

    train_dev = _data_to(train, device) if isinstance(train, TensorData) else train
    for epoch in range(len(state.history) + 1, config.epochs + 1):
        if state.stopped:
            break
        t0 = time.perf_counter()
        shuffled, train_loss, train_s = _train_epoch(
            model, net, train_dev, optimizer, shuffle_gen, config, epoch, ctx
        )
        distributed.sync_buffers(model, ctx)  # BatchNorm statistics saw only this rank's rows
        extra = model.end_epoch(shuffled)  # e.g. recalibrate normalisation statistics before validation
        record = _validate(model, valid, config, state, epoch, train_loss, len(train_dev), train_s, t0)
        record.update(extra or {})  # the model's own epoch metrics (e.g. code churn); record is in history
        if ckpt_dir is not None and ctx.is_main:
            _save_checkpoint(
                ckpt_dir / CHECKPOINT_FORMAT.format(epoch),
                _checkpoint(epoch, config, model, optimizer, shuffle_gen, state, t_call),
            )
        ctx.barrier()  # no rank runs ahead of a checkpoint it might resume from
        if on_epoch is not None and ctx.is_main:
            on_epoch(dict(record))

    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    return _fit_result(state, config, len(train_dev), t_call)


def _check_stream(train: TensorData | ParquetStream, config: TrainConfig) -> None:
    """A stream must batch and shuffle as the config says: its batches are the optimiser's steps."""
    if isinstance(train, ParquetStream) and (train.batch_size, train.seed) != (
        config.batch_size,
        config.seed,
    ):
        raise TrainingError(
            f"stream batch_size/seed {train.batch_size}/{train.seed} differ from the train config's "
            f"{config.batch_size}/{config.seed}"
        )


def _fit_result(state: _FitState, config: TrainConfig, n: int, t_call: float) -> FitResult:
    """What :func:`fit` returns once its loop has ended: ``n`` train rows per epoch, ``t_call`` its start."""
    train_seconds = sum(h["train_seconds"] for h in state.history)
    best_record = state.history[state.best_epoch - 1] if state.best_epoch >= 1 else {}
    return FitResult(
        history=copy.deepcopy(state.history),
        best_epoch=state.best_epoch,
        best_valid_auc=state.best_auc,
        best_valid_logloss=float(best_record.get("valid_logloss", math.nan)),
        early_stop_metric=config.early_stop_metric,
        train_samples_per_s=(n * len(state.history) / train_seconds) if train_seconds > 0 else math.nan,
        wall_s=state.prior_wall + time.perf_counter() - t_call,
        resumed_from=state.resumed_from,
    )


def _optimizer(model: CTRModel, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # the fused kernel updates all parameters in one pass: ~3-4× cheaper steps than foreach on CPU
    return torch.optim.Adam(
        model.parameters(),
        lr=config.lr,
        weight_decay=config.weight_decay,
        fused=device.type in ("cpu", "cuda"),
    )


def _resume(
    ckpt_dir: Path | None,
    config: TrainConfig,
    model: CTRModel,
    optimizer: torch.optim.Optimizer,
    shuffle_gen: torch.Generator,
) -> _FitState:
    """The loop state: fresh, or restored (with model, optimiser and RNGs) from the latest checkpoint."""
    if ckpt_dir is None or (path := latest_checkpoint(ckpt_dir)) is None:
        return _FitState()
    saved = load_checkpoint(path)
    if saved["resume_key"] != _resume_key(config):
        raise TrainingError(
            f"checkpoint {path} was written with train config {saved['resume_key']}, which differs from "
            f"{_resume_key(config)}; use another checkpoint_dir or delete {ckpt_dir}"
        )
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    shuffle_gen.set_state(saved["rng"]["shuffle"])
    torch.set_rng_state(saved["rng"]["torch"])
    if saved["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    state = _FitState(
        history=list(saved["history"]),
        best_epoch=saved["best_epoch"],
        best_auc=saved["best_auc"],
        # a checkpoint from before early_stop_metric existed followed AUC
        best_score=saved.get("best_score", saved["best_auc"]),
        bad_epochs=saved["bad_epochs"],
        best_state=saved["best_state"],
        stopped=saved["stopped"],
        prior_wall=saved["wall_s"],
        resumed_from=saved["epoch"],
    )
    log.info("resuming from %s (epoch %d, best epoch %d)", path, state.resumed_from, state.best_epoch)
    return state


def _global_batches(
    train: TensorData | ParquetStream,
    shuffle_gen: torch.Generator,
    config: TrainConfig,
    epoch: int,
    ctx: DistContext,
) -> tuple[TensorData, Iterator[tuple[TensorData, int]]]:
    """(rows for ``model.end_epoch``, iterator of (this rank's rows of a global batch, global batch rows))."""
    if isinstance(train, ParquetStream):
        batches = ((b.data, b.global_rows) for b in train.batches(epoch))
        return train.head(_STREAM_END_EPOCH_ROWS), batches
    n = len(train)
    perm = torch.randperm(n, generator=shuffle_gen).to(train.label.device)
    shuffled = train.take(perm)  # one gather per epoch; batches below are slices

    def gen() -> Iterator[tuple[TensorData, int]]:
        for start in range(0, n, config.batch_size):
            stop = min(start + config.batch_size, n)
            # rank r keeps rows r, r+w, … of the global batch: the ranks together see exactly one process's batch
            yield rows(shuffled, start + ctx.rank, stop, ctx.world_size), stop - start

    return shuffled, gen()


def _train_epoch(
    model: CTRModel,
    net: torch.nn.Module,
    train: TensorData | ParquetStream,
    optimizer: torch.optim.Optimizer,
    shuffle_gen: torch.Generator,
    config: TrainConfig,
    epoch: int,
    ctx: DistContext,
) -> tuple[TensorData, float, float]:
    """One pass over shuffled ``train`` → (rows for ``end_epoch``, mean train BCE over all ranks, seconds).

    ``net`` is ``model`` or its DDP wrapper. With several ranks each rank's loss is its rows' BCE *sum* scaled by
    ``world_size / global batch rows``: DDP averages gradients over ranks, so the step equals one process's step
    on the whole global batch. A global batch with fewer rows than ranks (a tail) is skipped on every rank.
    """
    t0 = time.perf_counter()
    device = _model_device(model)
    model.train()
    shuffled, batches = _global_batches(train, shuffle_gen, config, epoch, ctx)
    loss_sum = torch.zeros(2, device=device, dtype=torch.float64)  # [BCE sum, rows]
    bar = tqdm(
        batches,
        total=-(-len(train) // config.batch_size),
        desc=f"epoch {epoch}/{config.epochs}",
        disable=not sys.stderr.isatty() or not ctx.is_main,
        leave=False,
    )
    skipped = 0
    for local, global_rows in bar:
        if global_rows < ctx.world_size:
            skipped += global_rows
            continue
        batch = local.batch(0, len(local)).to(device)
        logits = net(batch)
        if ctx.enabled:
            bce_sum = F.binary_cross_entropy_with_logits(logits, batch.label, reduction="sum")
            loss = bce_sum * (ctx.world_size / global_rows)
            loss_sum[0] += bce_sum.detach()
        else:
            loss = F.binary_cross_entropy_with_logits(logits, batch.label)
            loss_sum[0] += loss.detach() * len(batch)
        loss_sum[1] += len(batch)
        aux = model.aux_loss()
        total = loss if aux is None else loss + config.aux_loss_weight * aux
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    if skipped:
        log.info("epoch %d: skipped a tail of %d rows (fewer than %d ranks)", epoch, skipped, ctx.world_size)
    totals = distributed.all_sum(loss_sum, ctx)
    train_loss = float(totals[0]) / max(float(totals[1]), 1.0)  # the one host sync of the epoch
    train_s = time.perf_counter() - t0
    if not math.isfinite(train_loss):
        raise TrainingError(f"epoch {epoch}: train loss is {train_loss}; training diverged")
    return shuffled, train_loss, train_s


def _validate(
    model: CTRModel,
    valid: TensorData,
    config: TrainConfig,
    state: _FitState,
    epoch: int,
    train_loss: float,
    n: int,
    train_s: float,
    t0: float,
) -> dict[str, float]:
    """Score ``valid``, update the early-stopping state (best weights, patience) and record the epoch."""
    valid_auc, valid_logloss = auc_logloss(valid.label, predict(model, valid, config.eval_batch_size))
    score = early_stop_score(config.early_stop_metric, valid_auc, valid_logloss)
    # NaN (e.g. AUC of a one-class validation set) never counts as an improvement after the first epoch
    if state.best_state is None or score > state.best_score:
        state.best_epoch, state.best_auc, state.bad_epochs = epoch, valid_auc, 0
        state.best_score = score
        state.best_state = _cpu_state(model)
    else:
        state.bad_epochs += 1
    state.stopped = state.bad_epochs >= config.patience or epoch == config.epochs
    record = {
        "epoch": epoch,
        "train_loss": train_loss,
        "valid_auc": valid_auc,
        "valid_logloss": valid_logloss,
        "samples_per_s": n / train_s if train_s > 0 else math.inf,
        "train_seconds": train_s,
        "seconds": time.perf_counter() - t0,
    }
    state.history.append(record)
    log.info(
        "epoch %d/%d: train_loss=%.5f valid_auc=%.5f valid_logloss=%.5f %.0f samples/s %.1fs%s",
        epoch,
        config.epochs,
        train_loss,
        valid_auc,
        valid_logloss,
        record["samples_per_s"],
        record["seconds"],
        " (early stop)" if state.bad_epochs >= config.patience else "",
    )
    return record


def early_stop_score(metric: str, valid_auc: float, valid_logloss: float) -> float:
    """The score early stopping maximises: validation AUC, or minus the validation logloss."""
    if metric == "auc":
        return valid_auc
    if metric == "logloss":
        return -valid_logloss
    raise ValueError(f"unknown early-stopping metric {metric!r}; expected 'auc' or 'logloss'")


def _checkpoint(
    epoch: int,
    config: TrainConfig,
    model: CTRModel,
    optimizer: torch.optim.Optimizer,
    shuffle_gen: torch.Generator,
    state: _FitState,
    t_call: float,
) -> dict[str, Any]:
    """Everything :func:`_resume` needs to continue bit-identically after ``epoch``."""
    return {
        "epoch": epoch,
        "resume_key": _resume_key(config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {
            "shuffle": shuffle_gen.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        "history": state.history,
        "best_epoch": state.best_epoch,
        "best_auc": state.best_auc,
        "best_score": state.best_score,
        "bad_epochs": state.bad_epochs,
        "best_state": state.best_state,
        "stopped": state.stopped,
        "wall_s": state.prior_wall + time.perf_counter() - t_call,
    }
