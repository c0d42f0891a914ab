"""The trainer's configuration (a frozen dataclass, loaded strictly with :func:`mdctr.config.from_dict`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mdctr.config import ConfigError

#: validation metrics early stopping can follow: AUC (higher is better) or logloss (lower is better)
EARLY_STOP_METRICS = ("auc", "logloss")
#: post-training calibrations (:mod:`mdctr.training.calibration`)
CALIBRATIONS = ("none", "temperature")


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`mdctr.training.fit` trains a model.

    Attributes:
        epochs: maximum number of passes over the train split: a cap, generous on purpose (20); early stopping
            (``patience``) is what normally ends a run. Tiny-data tests pass a small cap explicitly.
        batch_size: rows per optimiser step.
        lr: Adam learning rate.
        weight_decay: Adam (L2) weight decay.
        patience: stop after this many epochs without a better validation ``early_stop_metric``; the weights of
            the epoch with the best value are restored (whether the run stopped early or reached ``epochs``).
        early_stop_metric: what early stopping and the restored weights follow: ``"auc"`` (validation AUC,
            higher is better; the default) or ``"logloss"`` (validation logloss, lower is better). AUC alone can
            keep an epoch whose probabilities are worse than the base rate's (issue #23).
        calibrate: ``"none"`` (default) or ``"temperature"``: after training, fit one temperature per hand-crafted
            domain on the validation split (:mod:`mdctr.training.calibration`); test metrics and the bundle are
            then the calibrated model's. It does not change training, so a resume may change it.
        seed: seeds model initialisation (in :func:`train_model`), shuffling and dropout.
        device: ``"auto"`` (a GPU when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, …
        eval_batch_size: rows per forward pass when predicting (no gradients, so large batches are cheap).
        checkpoint_dir: where a checkpoint is written after every epoch and resumed from; None disables both.
        aux_loss_weight: weight of the model's auxiliary loss (e.g. the VQ loss of ``adaptive2``).
        num_threads: CPU threads for torch (None keeps torch's default).
        streaming: how the train split is read: ``False`` (in memory, the default), ``True`` (batches streamed
            from the parquet shards by :class:`mdctr.data.stream.ParquetStream`), or ``"auto"`` (stream when
            the split has more than ``streaming_threshold_rows`` rows); see :meth:`wants_streaming`.
        streaming_threshold_rows: the row count above which ``"auto"`` streams.
        stream_window_rows: rows read and shuffled together when streaming (bounds the reader's memory).
    """

    epochs: int = 20
    batch_size: int = 4096
    lr: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 2
    early_stop_metric: str = "auc"
    calibrate: str = "none"
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 65536
    checkpoint_dir: str | None = None
    aux_loss_weight: float = 1.0
    num_threads: int | None = None
    streaming: bool | str = False
    streaming_threshold_rows: int = 20_000_000
    stream_window_rows: int = 1 << 18

    def __post_init__(self) -> None:
        checks = (
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.patience >= 1, "patience must be >= 1"),
            (
                self.early_stop_metric in EARLY_STOP_METRICS,
                f"early_stop_metric must be one of {EARLY_STOP_METRICS}",
            ),
            (self.calibrate in CALIBRATIONS, f"calibrate must be one of {CALIBRATIONS}"),
            (self.num_threads is None or self.num_threads >= 1, "num_threads must be >= 1 or None"),
            (self.streaming in (True, False, "auto"), "streaming must be true, false or 'auto'"),
            (self.streaming_threshold_rows >= 0, "streaming_threshold_rows must be >= 0"),
            (self.stream_window_rows >= 1, "stream_window_rows must be >= 1"),
        )
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"train config: {msg}; got {self}")

    def wants_streaming(self, rows: int) -> bool:
        """Whether a train split of ``rows`` rows is streamed under this config."""
        if self.streaming == "auto":
            return rows > self.streaming_threshold_rows
        return bool(self.streaming)

    def resolve_device(self) -> torch.device:
        """The torch device this config names (``auto`` → ``cuda`` when available, else ``cpu``)."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)
