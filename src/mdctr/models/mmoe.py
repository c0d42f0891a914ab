"""MMoE for domains (Ma et al. 2018): shared experts, a softmax gate per domain, a routed tower per domain.

The gate of row i is the gate of its domain and the tower of row i is the tower of its domain; both are
applied through :func:`~mdctr.models.base.route`, so their cost does not grow with the number of domains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mdctr.data.tensors import Batch
from mdctr.models.base import MLP, CTRModel, ModelInputs, register, route, scale_widths
from mdctr.models.shared_bottom import Tower


@register("mmoe")
class MMoE(CTRModel):
    """embed → E experts (expert·width) mixed by the domain's gate → domain tower (tower·width) → logit [B]."""

    @dataclass(frozen=True)
    class Config:
        num_experts: int = 4
        expert: tuple[int, ...] = (256, 128)
        tower: tuple[int, ...] = (64,)
        dropout: float = 0.0
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        expert = scale_widths(config.expert, width)
        self.experts = nn.ModuleList(
            MLP(inputs.input_dim, expert, batchnorm=config.batchnorm, dropout=config.dropout)
            for _ in range(config.num_experts)
        )
        self.gates = nn.ModuleList(
            nn.Linear(inputs.input_dim, config.num_experts) for _ in range(inputs.num_domains)
        )
        tower = scale_widths(config.tower, width)
        self.towers = nn.ModuleList(
            Tower(expert[-1], tower, batchnorm=config.batchnorm, dropout=config.dropout)
            for _ in range(inputs.num_domains)
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)  # [B, F]
        experts = torch.stack([e(x) for e in self.experts], dim=1)  # [B, E, H]
        gate = torch.softmax(route(x, batch.domain, list(self.gates), len(self.experts)), dim=1)  # [B, E]
        mixed = torch.einsum("be,beh->bh", gate, experts)  # [B, H]
        return route(mixed, batch.domain, list(self.towers), 1).squeeze(-1)
