"""AdaSparse (Yang et al. CIKM 2022, "Learning Adaptively Sparse Structures for Multi-Domain CTR
Prediction"): one shared DNN whose neurons are weighted, and pruned, per domain by light pruners.

* **Domain-adaptive pruner** (one per hidden layer l): z_l = P_l [h_{l−1} ‖ e_d] + p_l, with e_d the domain
  embedding and h_{l−1} the layer's input; the weighting factors π_l = f(z_l) ∈ [0, β]^{H_l}.
* **Weighting forms** f (the paper's three):
  - ``binarization``: π = 1[σ(αz) ≥ 0.5], trained with a straight-through estimator (gradient of σ(αz));
  - ``scaling``: π = β·σ(αz) (neuron-level weighting, nothing pruned);
  - ``fusion`` (the paper's best): π = β·σ(αz) where that is ≥ ε, else 0 (weighting and pruning).
* **Pruned layer**: h_l = π_l ⊙ ReLU(BN(W_l h_{l−1} + b_l)); a neuron with π = 0 is exactly zero for that
  sample, so each domain (and sample) runs its own sparse sub-network of the shared DNN.

The pruners are shared networks conditioned on the domain embedding (as in the paper), so nothing is
domain-masked: every row pays one pruner evaluation per layer, whatever its domain. The paper's optional
sparsity-ratio regulariser is not implemented (see :meth:`AdaSparse.sparsity` to measure the ratio).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mdctr.data.tensors import Batch
from mdctr.models.base import BatchNorm1d, CTRModel, ModelInputs, register, scale_widths

FORMS = ("binarization", "scaling", "fusion")


@register("adasparse")
class AdaSparse(CTRModel):
    """embed → DNN (hidden·width) with a domain-adaptive pruner per hidden layer → logit [B]."""

    @dataclass(frozen=True)
    class Config:
        hidden: tuple[int, ...] = (256, 128)
        domain_embed_dim: int = 16
        form: str = "fusion"
        alpha: float = 1.0  # slope of σ(αz)
        beta: float = 2.0  # upper bound of the weighting factor (2: neutral 1 at z = 0)
        epsilon: float = 0.25  # fusion: factors below ε prune the neuron
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        if config.form not in FORMS:
            raise ValueError(f"adasparse: form must be one of {list(FORMS)}, got {config.form!r}")
        if not 0.0 <= config.epsilon < config.beta:
            raise ValueError(f"adasparse: need 0 <= epsilon < beta, got {config.epsilon}, {config.beta}")
        self.domain_embedding = nn.Embedding(inputs.num_domains, config.domain_embed_dim)
        self.layers = nn.ModuleList()
        self.pruners = nn.ModuleList()
        prev = inputs.input_dim
        for h in scale_widths(config.hidden, width):
            linear = nn.Linear(prev, h)
            self.layers.append(nn.Sequential(linear, BatchNorm1d(h)) if config.batchnorm else linear)
            self.pruners.append(nn.Linear(prev + config.domain_embed_dim, h))
            prev = h
        self.head = nn.Linear(prev, 1)

    def _factors(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        soft = torch.sigmoid(cfg.alpha * z)
        if cfg.form == "binarization":
            hard = (soft >= 0.5).to(soft.dtype)
            return hard + (soft - soft.detach())  # straight-through: forward exactly hard, backward σ'
        pi = cfg.beta * soft
        if cfg.form == "fusion":
            pi = torch.where(pi >= cfg.epsilon, pi, torch.zeros_like(pi))
        return pi

    def _run(self, batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.embed(batch)
        dom = self.domain_embedding(batch.domain)
        factors = []
        for layer, pruner in zip(self.layers, self.pruners, strict=True):
            pi = self._factors(pruner(torch.cat([h, dom], dim=1)))
            h = torch.relu(layer(h)) * pi
            factors.append(pi)
        return self.head(h).squeeze(-1), factors

    def weighting_factors(self, batch: Batch) -> list[torch.Tensor]:
        """π_l [B, H_l] per hidden layer (for inspection and tests)."""
        return self._run(batch)[1]

    @torch.no_grad()
    def sparsity(self, batch: Batch) -> torch.Tensor:
        """[num_domains, num_layers] fraction of pruned neurons (π = 0) per domain present in ``batch``
        (NaN for an absent domain)."""
        factors = self.weighting_factors(batch)
        n = self.inputs.num_domains
        out = torch.full((n, len(factors)), float("nan"))
        for d in range(n):
            rows = batch.domain == d
            if rows.any():
                out[d] = torch.stack([(pi[rows] == 0).float().mean() for pi in factors])
        return out

    def forward(self, batch: Batch) -> torch.Tensor:
        return self._run(batch)[0]
