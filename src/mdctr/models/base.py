"""What every model shares: the :class:`CTRModel` interface, the registry, and (re-exported from
:mod:`mdctr.blocks`) the embedding layer, an MLP and row routing.

A model maps a :class:`~mdctr.data.tensors.Batch` to logits ``[B]``: no loss, optimiser, device moves or
I/O inside. A model with an auxiliary loss (the VQ-VAE of ``adaptive2``) exposes it via :meth:`CTRModel.aux_loss`
after each forward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from mdctr.blocks import (
    MLP,
    BatchNorm1d,
    FeatureEmbedding,
    ModelInputs,
    recalibrate_batchnorm,
    route,
    scale_widths,
)
from mdctr.config import from_dict
from mdctr.data.tensors import Batch, TensorData
from mdctr.registry import Registry

# the building blocks are defined in mdctr.blocks (shared with the miner); every model imports them from here
__all__ = [
    "DOMAIN_SOURCES",
    "MLP",
    "BatchNorm1d",
    "CTRModel",
    "FeatureEmbedding",
    "ModelInputs",
    "build_model",
    "model_class",
    "model_config",
    "model_names",
    "plan_pairs",
    "recalibrate_batchnorm",
    "register",
    "route",
    "scale_widths",
]

#: every routing source a model can declare it accepts (``CTRModel.domain_sources``); what each means is
#: decided in mdctr.routing: the dataset's id, mined codes, one domain, the two control sources, and codes of
#: a VQ-VAE trained with the model on its own embedding (``mined-joint``, mdctr.routing.joint)
DOMAIN_SOURCES = ("handcrafted", "mined", "none", "random", "binned", "mined-joint")


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
    #: parameter-name prefixes of embedding tables, which :meth:`dense_parameters` leaves out
    embedding_prefixes: ClassVar[tuple[str, ...]] = ("embedding.",)
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

    @classmethod
    def holds_miner(cls, config: Any) -> bool:
        """Whether a model built with ``config`` carries a pre-trained miner inside (attached by
        :meth:`load_miner` before training; its FLOPs then belong to the model's forward). Default: no."""
        return False

    def load_miner(self, miner: nn.Module) -> None:
        """Attach a pre-trained miner (only models whose :meth:`holds_miner` is true accept one)."""
        raise TypeError(f"model {self.name!r} does not hold a miner")

    def aux_loss(self) -> torch.Tensor | None:
        """Extra training loss from the last forward (e.g. VQ loss), or None."""
        return None

    def end_epoch(self, train: TensorData) -> dict[str, float] | None:
        """Called by the trainer after each training epoch, before validation (default: nothing); metrics it
        returns are added to the epoch's history record."""
        return None

    def dense_parameters(self) -> int:
        """Parameters outside embedding tables (reported beside FLOPs): the one definition."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith(self.embedding_prefixes))


@torch.no_grad()
def eval_codes(
    model: nn.Module, data: TensorData, codes_of: Callable[[Batch], torch.Tensor], batch_size: int = 65536
) -> torch.Tensor:
    """``codes_of(batch)`` over every row of ``data`` in eval mode → [N] int64 (the mode is restored after): the
    serving-time mined domain of each row, for the models that mine inside their forward."""
    was_training = model.training
    model.eval()
    try:
        parts = [codes_of(data.batch(s, s + batch_size)) for s in range(0, len(data), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)


def _check_config(name: str, cls: type[CTRModel]) -> None:
    if not dataclasses.is_dataclass(cls.Config):
        raise TypeError(f"model {name!r}: Config must be a dataclass")


_MODELS: Registry[type[CTRModel]] = Registry("model", check=_check_config)


def register(name: str) -> Callable[[type[CTRModel]], type[CTRModel]]:
    """Class decorator: register a model under ``name`` (its ``Config`` must be a dataclass)."""
    return _MODELS.register(name)


def model_names() -> list[str]:
    return _MODELS.names()


def model_class(name: str) -> type[CTRModel]:
    return _MODELS.get(name)


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


def model_config(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """The registered model's ``Config`` with ``overrides`` applied strictly (unknown keys fail, naming them)."""
    return from_dict(model_class(name).Config, overrides, where=f"model {name!r} config")


def build_model(
    name: str, inputs: ModelInputs, *, width: float = 1.0, config: dict[str, Any] | None = None
) -> CTRModel:
    """Instantiate a registered model; ``config`` overrides its defaults strictly (unknown keys fail)."""
    return model_class(name)(inputs, model_config(name, config), width=width)
