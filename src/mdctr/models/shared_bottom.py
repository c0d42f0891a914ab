"""Shared-bottom: one MLP over every sample, then one tower per domain (routed: a tower sees only its rows)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mdctr.data.tensors import Batch
from mdctr.models.base import MLP, CTRModel, ModelInputs, register, route, scale_widths


class Tower(nn.Sequential):
    """MLP (+ BatchNorm, one-row safe) → Linear → 1. [B, in_dim] → [B, 1]."""

    def __init__(self, in_dim: int, hidden: Sequence[int], *, batchnorm: bool = False, dropout: float = 0.0):
        mlp = MLP(in_dim, hidden, batchnorm=batchnorm, dropout=dropout)
        super().__init__(mlp, nn.Linear(mlp.output_dim, 1))


@register("shared_bottom")
class SharedBottom(CTRModel):
    """embed → shared MLP(bottom·width) → tower of the row's domain (tower·width) → logit [B]."""

    @dataclass(frozen=True)
    class Config:
        bottom: tuple[int, ...] = (256,)
        tower: tuple[int, ...] = (128,)
        dropout: float = 0.0
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        self.bottom = MLP(
            inputs.input_dim,
            scale_widths(config.bottom, width),
            batchnorm=config.batchnorm,
            dropout=config.dropout,
        )
        tower = scale_widths(config.tower, width)
        self.towers = nn.ModuleList(
            Tower(self.bottom.output_dim, tower, batchnorm=config.batchnorm, dropout=config.dropout)
            for _ in range(inputs.num_domains)
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        h = self.bottom(self.embed(batch))  # [B, H]
        return route(h, batch.domain, list(self.towers), 1).squeeze(-1)
