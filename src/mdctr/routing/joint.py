"""The ``mined-joint`` domain source: a VQ-VAE miner trained with the ranker, on the ranker's own embedding.

Any routed model (one that accepts ``mined`` and does not mine by itself) is wrapped in :class:`JointMined`:

    x = inner.embed(batch)                        [B, S·E + D], the ranker's own shared embedding
    k = argmin_j ‖P(x) − c_j‖²                    P: the VQ-VAE encoder, an FFN projection; c: m codes
    logit = inner(batch with domain = k)          the inner model's domain modules run on their code's rows

so no separate miner, embedding table or hand-crafted domain column is needed to train or to serve, and the
codes are part of the model's weights (like ``adaptive2``). The VQ-VAE is the one of
:mod:`mdctr.domains.vqvae` (β-commitment, straight-through estimator, usage regulariser, dead-code restart,
EMA codebook by default); in training its loss is returned by :meth:`JointMined.aux_loss`, which the trainer adds
to the CTR loss, so ranker and miner are trained together, step by step. The miner reads the embedding through a
stop-gradient (as ``adaptive2`` does with ``recon="embedding"``): the reconstruction target is the embedding
itself, and letting its loss move the embedding would let both shrink towards a trivially reconstructed one; the
embedding is shaped by the CTR loss and the codes follow it.

In eval mode only the encoder and the distances ‖z‖² − 2z·cᵀ + ‖c‖² run (no decoder), as matmuls, so
:func:`mdctr.routing.flops.flops_per_sample` counts the miner in the model's FLOPs and width fitting scales
the miner's hidden layer with the rest.

Its settings (:class:`JointMinerConfig`) travel in the model's config overrides under the key
:data:`JOINT_KEY` (``{"mined_joint": {"num_codes": 8}}``), which is removed before the inner model's strict
config sees them; the serving bundle therefore stores them in ``bundle.json``'s ``model_config``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from mdctr.config import from_dict
from mdctr.data.tensors import Batch, TensorData
from mdctr.domains.vqvae import VQVAE, VQConfig
from mdctr.models.base import CTRModel, eval_codes, scale_widths

log = logging.getLogger(__name__)

#: the domain source this module implements
JOINT_SOURCE = "mined-joint"
#: the key of the model config overrides that holds the joint miner's settings (a dict of JointMinerConfig)
JOINT_KEY = "mined_joint"


@dataclass(frozen=True)
class JointMinerConfig(VQConfig):
    """The joint miner's settings: :class:`~mdctr.domains.vqvae.VQConfig` (``num_codes`` m = 8 by default, as in
    the Adaptive² paper; ``hidden`` = the projection's hidden sizes, scaled by the model's width; β = 0.25) and:

    Attributes:
        vq_weight: weight of the VQ-VAE loss in :meth:`JointMined.aux_loss`.
        data_init: at the first training batch, set the codebook to encodings of random rows of that batch, so
            every code starts with rows (a random N(0, 1) codebook leaves most rows on one code at first).
        stats_rows: after each epoch, the code usage (and churn since the last epoch) is measured on this many
            training rows (a fixed sample); 0: not measured.
    """

    num_codes: int = 8
    #: the target is the ranker's embedding itself: a feature reconstruction would need an output table of its own
    recon: str = "embedding"
    vq_weight: float = 1.0
    data_init: bool = True
    stats_rows: int = 20_000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.recon != "embedding":
            raise ValueError(
                f"JointMinerConfig.recon must be 'embedding' (the joint miner has no table of its own), "
                f"got {self.recon!r}"
            )
        if self.vq_weight < 0 or self.stats_rows < 0:
            raise ValueError("JointMinerConfig: vq_weight and stats_rows must be >= 0")


def split_overrides(overrides: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, JointMinerConfig]:
    """Model config overrides → (the inner model's overrides, or None when empty; the joint miner's config).

    Raises :class:`~mdctr.config.ConfigError` naming an unknown or mistyped joint miner key.
    """
    rest = dict(overrides or {})
    joint = rest.pop(JOINT_KEY, None)
    config = from_dict(JointMinerConfig, joint, where=f"model config {JOINT_KEY!r}")
    return rest or None, config


class JointMined(CTRModel):
    """``inner`` routed by codes of a VQ-VAE over its own embedding → logits [B].

    Args:
        inner: a routed model built for ``config.num_codes`` domains; its embedding is shared (the wrapper's
            ``embedding`` is the same module, so the state dict holds it under both names).
        config: the joint miner's settings.
        width: the width multiplier; it scales the projection's hidden sizes (the inner model was built with it).
    """

    mines_domains = True
    domain_sources = (JOINT_SOURCE,)
    name = JOINT_SOURCE
    Config = JointMinerConfig

    def __init__(self, inner: CTRModel, config: JointMinerConfig, width: float = 1.0):
        if inner.inputs.num_domains != config.num_codes:
            raise ValueError(
                f"{JOINT_SOURCE}: the inner model {inner.name!r} was built for {inner.inputs.num_domains} domains; "
                f"the joint miner has {config.num_codes} codes"
            )
        if type(inner).mines_domains:
            raise ValueError(
                f"{JOINT_SOURCE}: model {inner.name!r} mines its own domains; it cannot be wrapped"
            )
        # not CTRModel.__init__: it would build a second embedding table; the inner model's is the one
        torch.nn.Module.__init__(self)
        self.inputs = inner.inputs
        self.config = config
        self.width = width
        self.embedding = inner.embedding  # registered first: named "embedding.*" (what the bundle checks)
        self.inner = inner
        self.vqvae = VQVAE.from_config(
            inner.inputs.input_dim, config, hidden=scale_widths(config.hidden, width)
        )
        self.embedding_prefixes = ("embedding.", *(f"inner.{p}" for p in inner.embedding_prefixes))
        # state that checkpoints and the best-epoch restore must carry: a buffer, not an attribute
        self.register_buffer("codebook_initialised", torch.tensor(False))
        self._aux: torch.Tensor | None = None
        self.last_codes: torch.Tensor | None = None
        self._stats_rows: TensorData | None = None
        self._stats_codes: torch.Tensor | None = None

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, S·E + D] (the inner model's embedding) → code per row [B] int64; in training also records the
        VQ loss (:meth:`aux_loss`) and updates the codebook (EMA, dead-code restarts)."""
        self._aux = None
        if not self.training:
            return self.vqvae.assign(x)
        x = x.detach()  # see the module docstring: the embedding is trained by the CTR loss only
        if self.config.data_init and not bool(self.codebook_initialised) and x.shape[0] > 1:
            self.vqvae.init_codebook(self.vqvae.encode(x))
            self.codebook_initialised.fill_(True)
        out = self.vqvae(x)
        self._aux = self.config.vq_weight * out.loss
        return out.codes

    def forward(self, batch: Batch) -> torch.Tensor:
        k = self.codes(self.embed(batch))
        self.last_codes = k.detach()
        # the inner model looks its embedding up again: lookups cost no FLOPs, and no model needs changing
        return self.inner(dataclasses.replace(batch, domain=k))

    def aux_loss(self) -> torch.Tensor | None:
        """The VQ-VAE loss (× vq_weight) of the last training forward, plus the inner model's own, if any."""
        inner = self.inner.aux_loss()
        if self._aux is None:
            return inner
        return self._aux if inner is None else self._aux + inner

    def assign_codes(self, data: TensorData, batch_size: int = 65536) -> torch.Tensor:
        """Serving-time code of every row of ``data`` → [N] int64 (eval mode; the mode is restored after)."""
        return eval_codes(self, data, lambda b: self.codes(self.embed(b)), batch_size)

    def end_epoch(self, train: TensorData) -> dict[str, float] | None:
        """Code usage on a fixed sample of training rows (and churn since the last epoch), then the inner
        model's own end of epoch on the training rows routed by their current codes (only if it has one)."""
        stats: dict[str, float] = {}
        n = self.config.stats_rows
        if n > 0 and len(train):
            if self._stats_rows is None:  # train arrives shuffled: its head is a random sample, kept fixed
                self._stats_rows = train.head(min(n, len(train)))
            codes = self.assign_codes(self._stats_rows)
            if self._stats_codes is not None:
                stats["code_churn"] = float((codes != self._stats_codes).float().mean())
            self._stats_codes = codes
            stats["codes_used"] = float((torch.bincount(codes, minlength=self.num_codes) > 0).sum())
            log.info("%s: %d of %d codes used", JOINT_SOURCE, int(stats["codes_used"]), self.num_codes)
        if type(self.inner).end_epoch is not CTRModel.end_epoch:
            stats |= self.inner.end_epoch(train.with_domain(self.assign_codes(train))) or {}
        return stats or None


def build_joint(inner: CTRModel, overrides: Mapping[str, Any] | None, width: float = 1.0) -> JointMined:
    """Wrap ``inner`` (built for the joint miner's ``num_codes`` domains) with the joint miner of ``overrides``."""
    return JointMined(inner, split_overrides(overrides)[1], width)
