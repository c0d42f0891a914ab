"""Building blocks every model shares: the embedding layer, an MLP, domain routing and the registry.

A model maps a :class:`~mdctr.data.tensors.Batch` to logits ``[B]``: no loss, optimiser, device moves or
I/O inside. A model with an auxiliary loss (the VQ-VAE of ``adaptive2``) exposes it via :meth:`CTRModel.aux_loss`
after each forward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from mdctr.config import from_dict
from mdctr.data.tensors import Batch, TensorData

DOMAIN_SOURCES = ("handcrafted", "mined", "none")


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


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


class CTRModel(nn.Module):
    """Base class. Subclasses define ``Config`` (a frozen dataclass) and ``forward(batch) -> logits [B]``.

    Class attributes:
        domain_sources: which routing sources the model accepts (``dnn`` only ``none``; ``adaptive2`` only
            ``mined``, from its own VQ-VAE).
        mines_domains: whether the model mines its own routing domains inside forward.
    """

    Config: ClassVar[type] = object
    domain_sources: ClassVar[tuple[str, ...]] = DOMAIN_SOURCES
    #: True for a model that picks its routing domain inside forward (adaptive2): ``batch.domain`` is
    #: ignored, no external miner is needed to train or serve it, and its FLOPs already include mining.
    mines_domains: ClassVar[bool] = False
    name: ClassVar[str] = ""

    def __init__(self, inputs: ModelInputs, config: Any, width: float = 1.0):
        super().__init__()
        self.inputs = inputs
        self.config = config
        self.width = width
        self.embedding = FeatureEmbedding(inputs.vocab_sizes, inputs.num_dense, inputs.embed_dim)

    def embed(self, batch: Batch) -> torch.Tensor:
        """[B, S·E + D] input representation."""
        return self.embedding(batch.sparse, batch.dense)

    def forward(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def aux_loss(self) -> torch.Tensor | None:
        """Extra training loss from the last forward (e.g. VQ loss), or None."""
        return None

    def end_epoch(self, train: TensorData) -> None:
        """Called by the trainer after each training epoch, before validation (default: nothing)."""

    def dense_parameters(self) -> int:
        """Parameters outside the embedding table (reported beside FLOPs)."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("embedding."))


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


_MODELS: dict[str, type[CTRModel]] = {}


def register(name: str) -> Callable[[type[CTRModel]], type[CTRModel]]:
    def deco(cls: type[CTRModel]) -> type[CTRModel]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        if not dataclasses.is_dataclass(cls.Config):
            raise TypeError(f"model {name!r}: Config must be a dataclass")
        cls.name = name
        _MODELS[name] = cls
        return cls

    return deco


def model_names() -> list[str]:
    return sorted(_MODELS)


def model_class(name: str) -> type[CTRModel]:
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered: {model_names()}") from None


def plan_pairs(
    models: Sequence[str], domain_sources: Sequence[str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(model, domain source) pairs to train, and the requested pairs a model does not accept.

    A model keeps the requested sources it accepts (``CTRModel.domain_sources``). A model with a single
    source (``dnn``: ``none``; ``adaptive2``: ``mined``) always runs with it, so the requested sources choose
    how the multi-domain models route without dropping the single-domain baseline. Duplicates are dropped,
    order kept. Raises ``KeyError`` for an unknown model, ``ValueError`` for an unknown source.
    """
    unknown = sorted(set(domain_sources) - set(DOMAIN_SOURCES))
    if unknown:
        raise ValueError(f"unknown domain source(s) {unknown}; expected some of {list(DOMAIN_SOURCES)}")
    pairs: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    for name in dict.fromkeys(models):
        accepted = model_class(name).domain_sources
        skipped += [(name, s) for s in dict.fromkeys(domain_sources) if s not in accepted]
        requested = accepted if len(accepted) == 1 else domain_sources
        pairs += [(name, s) for s in dict.fromkeys(requested) if s in accepted]
    return pairs, skipped


def build_model(
    name: str, inputs: ModelInputs, *, width: float = 1.0, config: dict[str, Any] | None = None
) -> CTRModel:
    """Instantiate a registered model; ``config`` overrides its defaults strictly (unknown keys fail)."""
    cls = model_class(name)
    cfg = from_dict(cls.Config, config, where=f"model {name!r} config")
    return cls(inputs, cfg, width=width)
