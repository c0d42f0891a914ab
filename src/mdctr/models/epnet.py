"""EPNet alone (Chang et al. 2023, the embedding half of PEPNet): a domain-conditioned gate on the embedding
in front of a plain DNN.

* **EPNet**: δ = GateNU(e_d ‖ sg[x]) ∈ (0, 2)^F, with e_d the domain embedding and sg the stop-gradient;
  the DNN input is δ ⊙ x. One shared gate network conditioned on the domain, so nothing is domain-masked.
* **DNN**: Linear → BatchNorm → ReLU per hidden size (the normalised blocks of every model), then a logit.

The gate is pepnet's (:class:`~mdctr.models.pepnet.GateNU` applied by :func:`~mdctr.models.pepnet.epnet_gate`); ``epnet`` isolates what the
embedding gate alone adds over ``dnn`` (``ppnet`` isolates the per-layer gates).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mdctr.data.tensors import Batch
from mdctr.models.base import MLP, CTRModel, ModelInputs, register, scale_widths
from mdctr.models.pepnet import GateNU, epnet_gate


@register("epnet")
class EPNet(CTRModel):
    """embed → EPNet gate (gate_hidden·width) → MLP(hidden·width) → logit [B]."""

    @dataclass(frozen=True)
    class Config:
        hidden: tuple[int, ...] = (256, 128)
        gate_hidden: int = 64
        domain_embed_dim: int = 16
        dropout: float = 0.0
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        in_dim = inputs.input_dim
        self.domain_embedding = nn.Embedding(inputs.num_domains, config.domain_embed_dim)
        gate_hidden = scale_widths((config.gate_hidden,), width)[0]
        self.epnet = GateNU(config.domain_embed_dim + in_dim, gate_hidden, in_dim)
        self.mlp = MLP(
            in_dim, scale_widths(config.hidden, width), batchnorm=config.batchnorm, dropout=config.dropout
        )
        self.head = nn.Linear(self.mlp.output_dim, 1)

    def gate(self, batch: Batch) -> torch.Tensor:
        """The embedding gate δ [B, F] of each row (for inspection and tests)."""
        x = self.embed(batch)
        return epnet_gate(self.epnet, self.domain_embedding(batch.domain), x)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        h = epnet_gate(self.epnet, self.domain_embedding(batch.domain), x) * x
        return self.head(self.mlp(h)).squeeze(-1)
