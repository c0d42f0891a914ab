"""M3oE (Zhang et al. SIGIR 2024, "M3oE: Multi-Domain Multi-Task Mixture-of-Experts Recommendation
Framework"), single task (CTR): its multi-domain bottom and its shared- and domain-expert fusion. The task
experts and the task-balance weight of the paper have nothing to fuse with one task and are left out.

* **Domain bottom** (STAR-style): z = MLP(StarFCN_d(x)) + MLP(x) (skip), where StarFCN_d's weights are
  W ⊙ W_d for a row of domain d (:class:`~mdctr.models.star.StarFCN`, routed).
* **Shared experts**, mixed per row by its domain's softmax gate over sg[z] (the gate reads z through a
  stop-gradient, as in the authors' code): s = Σ_e g_{d,e}(z) E_e(z).
* **Domain experts** with the paper's balance weight α = σ(w_bal): a row of domain d gets
  u_d = α·D_d(z) + (1−α)/(D−1)·Σ_{j≠d} D_j(z) — the other domains' experts transfer knowledge to it with
  weight (1−α)/(D−1). Every domain expert therefore runs on every row and every output is used (nothing is
  computed and thrown away, so this is not masking, but the cost grows with the number of domains).
  ``domain_mix="own"`` routes instead: a row gets α·D_d(z) from its own expert only, run on its rows only.
* **Fusion**: f = s + σ(w_exp)·u, then the domain's tower (Linear–BN–ReLU–Linear, routed) → logit.

The fusion weights σ(w_bal), σ(w_exp) are searched by bi-level optimisation in the paper (on validation
data); here, as in the authors' public code, they train jointly with the rest. ``own_domain_init`` and
``domain_weight_init`` are their initial values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mdctr.data.tensors import Batch
from mdctr.models.base import MLP, CTRModel, ModelInputs, register, route, scale_widths
from mdctr.models.shared_bottom import Tower
from mdctr.models.star import StarFCN

DOMAIN_MIXES = ("all", "own")


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@register("m3oe")
class M3oE(CTRModel):
    """embed → star layer_d + MLP, skip → [gate_d-mixed shared experts + σ(w_exp)·balanced domain experts]
    → tower_d → logit [B]. Width scales every hidden size."""

    @dataclass(frozen=True)
    class Config:
        star: int = 256  # the star layer's width
        bottom: int = 128  # the bottom's output width z (after the MLP and the skip)
        num_experts: int = 4
        expert: tuple[int, ...] = (64,)
        domain_mix: str = "all"
        own_domain_init: float = 0.8  # initial α
        domain_weight_init: float = 0.5  # initial σ(w_exp)
        dropout: float = 0.0
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md

        def __post_init__(self) -> None:
            if self.domain_mix not in DOMAIN_MIXES:
                raise ValueError(f"m3oe: domain_mix must be one of {DOMAIN_MIXES}, got {self.domain_mix!r}")
            for name in ("own_domain_init", "domain_weight_init"):
                if not 0.0 < getattr(self, name) < 1.0:
                    raise ValueError(f"m3oe: {name} must be in (0, 1), got {getattr(self, name)}")

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        n_dom = inputs.num_domains
        (star,) = scale_widths((config.star,), width)
        (bottom,) = scale_widths((config.bottom,), width)
        expert = scale_widths(config.expert, width)
        kw = {"batchnorm": config.batchnorm, "dropout": config.dropout}
        self.star = StarFCN(inputs.input_dim, (star,), n_dom)
        self.star_mlp = MLP(star, (bottom,), **kw)
        self.skip = MLP(inputs.input_dim, (bottom,), **kw)
        self.experts = nn.ModuleList(MLP(bottom, expert, **kw) for _ in range(config.num_experts))
        self.gates = nn.ModuleList(nn.Linear(bottom, config.num_experts) for _ in range(n_dom))
        self.domain_experts = nn.ModuleList(MLP(bottom, expert, **kw) for _ in range(n_dom))
        # with one domain there is nothing to balance: the row's own expert has weight 1
        self.w_bal = nn.Parameter(torch.tensor(_logit(config.own_domain_init))) if n_dom > 1 else None
        self.w_exp = nn.Parameter(torch.tensor(_logit(config.domain_weight_init)))
        self.towers = nn.ModuleList(Tower(expert[-1], (expert[-1],), **kw) for _ in range(n_dom))
        self.expert_dim = expert[-1]

    def own_weight(self) -> torch.Tensor:
        """α, the weight of a row's own domain expert."""
        return torch.sigmoid(self.w_bal) if self.w_bal is not None else torch.ones(())

    def domain_part(self, z: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """u [B, H]: the balanced domain-expert representation of each row."""
        n_dom = len(self.domain_experts)
        alpha = self.own_weight()
        if n_dom == 1 or self.config.domain_mix == "own":
            own = route(z, domain, list(self.domain_experts), self.expert_dim)
            return alpha * own
        outs = torch.stack([e(z) for e in self.domain_experts], dim=1)  # [B, D, H]
        # per-row mixing weights: α on the own domain, (1 − α)/(D − 1) on each other one
        other = (1 - alpha) / (n_dom - 1)
        own_mask = (domain.unsqueeze(1) == torch.arange(n_dom, device=z.device)).to(z.dtype)
        w = other + (alpha - other) * own_mask  # [B, D]
        return torch.einsum("bd,bdh->bh", w, outs)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        d = batch.domain
        z = self.star_mlp(self.star(x, d)) + self.skip(x)
        shared = torch.stack([e(z) for e in self.experts], dim=1)  # [B, E, H]
        gate = torch.softmax(route(z.detach(), d, list(self.gates), len(self.experts)), dim=1)
        fused = torch.einsum("be,beh->bh", gate, shared) + torch.sigmoid(self.w_exp) * self.domain_part(z, d)
        return route(fused, d, list(self.towers), 1).squeeze(-1)
