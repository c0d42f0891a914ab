"""Neural building blocks shared by the domain miner and every model: the input description, the embedding
layer, a normalised MLP, row routing and BatchNorm recalibration.

They live below both :mod:`mdctr.domains` and :mod:`mdctr.models` (see docs/architecture.md), so that the
miner's VQ-VAE and the models that hold one build on the same layers without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from mdctr.data.tensors import TensorData


@dataclass(frozen=True)
class ModelInputs:
    """What a model needs to know about the data (derived from the feature spec).

    Attributes:
        vocab_sizes: embedding table size per sparse feature (includes the OOV bucket).
        num_dense: number of dense features.
        num_domains: number of routing domains (1 for the ``none`` source).
        embed_dim: embedding dimension shared by every model (16 by default).
    """

    vocab_sizes: tuple[int, ...]
    num_dense: int
    num_domains: int
    embed_dim: int = 16

    @property
    def input_dim(self) -> int:
        """Width of the flattened input representation: S·E + D."""
        return len(self.vocab_sizes) * self.embed_dim + self.num_dense


class FeatureEmbedding(nn.Module):
    """All sparse features in one table (offsets per feature) + raw dense values.

    forward(sparse [B, S] int64, dense [B, D] float32) → [B, S·E + D].
    Initialised N(0, init_std²) (1e-4 as in the HAMUR code), identically for every model.
    """

    def __init__(
        self, vocab_sizes: Sequence[int], num_dense: int, embed_dim: int = 16, init_std: float = 1e-4
    ):
        super().__init__()
        self.num_sparse = len(vocab_sizes)
        self.embed_dim = embed_dim
        self.num_dense = num_dense
        starts = [0]
        for size in list(vocab_sizes)[:-1]:
            starts.append(starts[-1] + int(size))
        offsets = torch.tensor(starts[: len(vocab_sizes)], dtype=torch.int64)
        self.register_buffer("offsets", offsets, persistent=False)
        self.table = nn.Embedding(int(sum(vocab_sizes)) or 1, embed_dim)
        nn.init.normal_(self.table.weight, std=init_std)

    @property
    def output_dim(self) -> int:
        return self.num_sparse * self.embed_dim + self.num_dense

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        emb = self.table(sparse + self.offsets).flatten(1)  # [B, S·E]
        return torch.cat([emb, dense], dim=1) if self.num_dense else emb


class BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm that tolerates one-row inputs in training mode. [B, C] → [B, C].

    A routed domain group can hold a single row; one row has no variance, so plain BatchNorm raises. For
    such a group we normalise with the running statistics (as in eval) and leave them unchanged: the
    population estimate is the best statistic available, and one sample must not skew it.
    """

    #: per-row weights (summing to 1) for the batch statistics in training, set by :func:`weighted_statistics`;
    #: None: every row counts equally (plain BatchNorm)
    stat_weight: torch.Tensor | None = None
    #: the number of rows the weighted statistics stand for (the running variance's Bessel correction)
    stat_rows: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.stat_weight is not None:
            return self._weighted(x, self.stat_weight)
        if self.training and x.shape[0] == 1:
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)

    def _weighted(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Normalise x [n, C] with the w-weighted mean and (biased) variance over its rows; running statistics
        move towards them as plain BatchNorm's do (unbiased variance over ``stat_rows`` rows)."""
        w = w.unsqueeze(1)
        mean = (w * x).sum(0)
        var = (w * (x - mean).square()).sum(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                n = max(self.stat_rows, 2)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1), m)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


@contextmanager
def weighted_statistics(weight: torch.Tensor, rows: int, *modules: nn.Module) -> Iterator[None]:
    """Within the block, every :class:`BatchNorm1d` in ``modules`` normalises in training with per-row weights
    ``weight`` [n] (summing to 1) standing for ``rows`` rows, e.g. a domain's rows plus a weighted sample of the
    others, so the statistics estimate those of the whole batch without running the module on all of it."""
    norms = [m for module in modules for m in module.modules() if isinstance(m, BatchNorm1d)]
    for m in norms:
        m.stat_weight, m.stat_rows = weight, rows
    try:
        yield
    finally:
        for m in norms:
            m.stat_weight, m.stat_rows = None, 0


class MLP(nn.Sequential):
    """Linear → [BatchNorm] → ReLU → [Dropout] per hidden size. [B, in_dim] → [B, hidden[-1]]."""

    def __init__(self, in_dim: int, hidden: Sequence[int], *, batchnorm: bool = False, dropout: float = 0.0):
        layers: list[nn.Module] = []
        for h in hidden:
            layers.append(nn.Linear(in_dim, h))
            if batchnorm:
                layers.append(BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = h
        super().__init__(*layers)
        self.output_dim = in_dim


def route(
    x: torch.Tensor,
    domain: torch.Tensor,
    experts: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    out_dim: int,
) -> torch.Tensor:
    """Route, don't mask: rows of domain d go through ``experts[d]`` only (gather → module → scatter).

    x [B, F], domain [B] int64 in range(len(experts)) → [B, out_dim]. Absent domains cost nothing.
    """
    n = len(experts)
    if n == 1:
        return experts[0](x)
    order = torch.argsort(domain, stable=True)
    counts = torch.bincount(domain, minlength=n).tolist()
    out = x.new_empty((x.shape[0], out_dim))
    for d, idx in enumerate(torch.split(order, counts)):
        if counts[d]:
            out.index_copy_(0, idx, experts[d](x.index_select(0, idx)))
    return out


def scale_widths(hidden: Sequence[int], width: float) -> tuple[int, ...]:
    """Hidden sizes multiplied by ``width`` (the FLOP-budget knob), at least 1 unit each."""
    return tuple(max(1, round(h * width)) for h in hidden)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, data: TensorData, rows: int, batch_size: int = 4096, frozen: nn.Module | None = None
) -> None:
    """Recompute every BatchNorm's running statistics under the model's current weights and routing.

    Running statistics are moving averages over training batches, so they mix in batches from weights (and,
    for routed norms, row populations) that have since changed; evaluation then normalises differently from
    training. This runs the first ``rows`` rows of ``data`` through the model in eval mode with the
    BatchNorms normalising by their batch, and sets each running statistic to the average of its batch
    statistics over those batches. A BatchNorm that sees no batch (a routed group with no rows) keeps its
    statistics, and so do the BatchNorms inside ``frozen`` (e.g. a pre-trained miner). Nothing else changes;
    the model is left in eval mode.
    """
    keep = set(frozen.modules()) if frozen is not None else set()
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.BatchNorm1d) and m.track_running_stats and m not in keep
    ]
    momenta = {m: m.momentum for m in norms}
    model.eval()
    for m in norms:
        m.num_batches_tracked.zero_()  # with momentum None the first batch replaces the old statistics
        m.momentum = None  # cumulative average over the batches below
        m.train()
    try:
        for start in range(0, min(rows, len(data)), batch_size):
            model(data.batch(start, min(start + batch_size, rows, len(data))))
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
            m.eval()
