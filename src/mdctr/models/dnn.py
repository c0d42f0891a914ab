"""Single-domain DNN: one MLP over every sample, no domain input — the fair-FLOPs baseline of Adaptive²."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mdctr.data.tensors import Batch
from mdctr.models.base import MLP, CTRModel, ModelInputs, register, scale_widths


@register("dnn")
class DNN(CTRModel):
    """embed → MLP(hidden·width) → linear → logit. Batch → logits [B]."""

    @dataclass(frozen=True)
    class Config:
        hidden: tuple[int, ...] = (256, 128)
        dropout: float = 0.0
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md

    domain_sources = ("none",)

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        self.mlp = MLP(
            inputs.input_dim,
            scale_widths(config.hidden, width),
            batchnorm=config.batchnorm,
            dropout=config.dropout,
        )
        self.head = nn.Linear(self.mlp.output_dim, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.head(self.mlp(self.embed(batch))).squeeze(-1)
