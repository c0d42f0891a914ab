"""AdaptDHM (Li et al. 2022, "AdaptDHM: Adaptive Distribution Hierarchical Model for Multi-Domain CTR
Prediction"): the model clusters samples into K distributions by itself and routes each row to the head of its
distribution. Hand-crafted domain ids are not used.

* **Distribution routing** (no gradient; the centres are a buffer, not parameters): K unit-norm centres c_k.
  A row's input x (its embedding, stop-gradient) scores s_k = x·c_k, r = softmax(s); in training the
  centres are refined by ``routing_iters`` dynamic-routing steps over the batch, c_k ← normalise(β c_k +
  (1−β) Σ_i r_ik x_i), and the row's distribution is argmax_k s_k under the refined centres. At eval the
  centres are fixed and only the scores run (one [B, F]×[F, K] product).
* **Distribution-specific heads**: STAR's star-topology FCN (:class:`~mdctr.models.star.StarFCN`): layer l
  of distribution k has weights W_l ⊙ W_{k,l} (shared ⊙ specific) and bias b_l + b_{k,l}, run on the rows
  routed to k only. W_{k,l} start at ones (the public code draws both factors at random, so their product
  starts near zero).
* A BatchNorm over the input (``batchnorm``), like the other models' normalised blocks.

**Empty distributions.** The EMA pull of the routing steps can leave a centre that no row chooses; its head
then never trains (the public code has no remedy). In training, a centre that no row of the batch chooses is
moved onto the batch's worst-fitting row (lowest best score, one distinct row per empty centre) before the
final assignment, so every head sees rows whenever the batch has at least K of them — the dead-code restart
used for VQ-VAE codebooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mdctr.data.tensors import Batch
from mdctr.models.base import BatchNorm1d, CTRModel, ModelInputs, register, scale_widths
from mdctr.models.star import StarFCN


@register("adaptdhm")
class AdaptDHM(CTRModel):
    """embed → distribution k (dynamic routing over K centres) → star FCN_k (hidden·width, then 1) → logit [B]."""

    @dataclass(frozen=True)
    class Config:
        num_clusters: int = 3
        hidden: tuple[int, ...] = (256, 128)
        #: EMA weight of the old centre in a routing step (the paper's β)
        beta: float = 0.9
        #: dynamic-routing refinement steps per training batch (none at eval)
        routing_iters: int = 3
        #: move centres no row chose onto the worst-fitting rows (training only)
        restart_empty: bool = True
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md

        def __post_init__(self) -> None:
            if self.num_clusters < 1:
                raise ValueError(f"adaptdhm: num_clusters must be >= 1, got {self.num_clusters}")
            if not 0.0 <= self.beta < 1.0:
                raise ValueError(f"adaptdhm: beta must be in [0, 1), got {self.beta}")
            if self.routing_iters < 0:
                raise ValueError(f"adaptdhm: routing_iters must be >= 0, got {self.routing_iters}")

    domain_sources = ("mined",)
    mines_domains = True

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        in_dim = inputs.input_dim
        self.register_buffer("centers", F.normalize(torch.randn(config.num_clusters, in_dim), dim=1))
        self.norm = BatchNorm1d(in_dim) if config.batchnorm else nn.Identity()
        self.fcn = StarFCN(in_dim, (*scale_widths(config.hidden, width), 1), config.num_clusters)
        #: the distribution of each row of the last forward [B] (diagnostics)
        self.last_codes: torch.Tensor | None = None

    @torch.no_grad()
    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Each row's distribution [B] int64; in training also refines the centres on this batch."""
        x = x.detach()
        if self.training and x.shape[0] > 0:
            c = self.centers
            for _ in range(self.config.routing_iters):
                r = torch.softmax(x @ c.t(), dim=1)  # [B, K]
                c = F.normalize(self.config.beta * c + (1 - self.config.beta) * (r.t() @ x), dim=1)
            scores = x @ c.t()
            if self.config.restart_empty:
                c, scores = self._restart_empty(x, c, scores)
            self.centers.copy_(c)
        else:
            scores = x @ self.centers.t()
        return scores.argmax(dim=1)

    def _restart_empty(
        self, x: torch.Tensor, c: torch.Tensor, scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        codes = scores.argmax(dim=1)
        empty = (torch.bincount(codes, minlength=c.shape[0]) == 0).nonzero().flatten()
        if len(empty) == 0 or x.shape[0] < c.shape[0]:
            return c, scores
        worst = scores.max(dim=1).values.argsort()[: len(empty)]  # the rows the centres fit worst
        c = c.clone()
        c[empty] = F.normalize(x[worst], dim=1)
        return c, x @ c.t()

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        codes = self.assign(x)
        self.last_codes = codes
        return self.fcn(self.norm(x), codes).squeeze(-1)
