"""PEPNet (Chang et al. 2023), single task: an EPNet gate over the embedding conditioned on a domain
embedding, and PPNet-style gates on every hidden layer of the DNN.

* **Gate NU**: Linear → ReLU → Linear → 2·sigmoid (values in (0, 2), 1 = neutral).
* **EPNet**: δ = GateNU(domain emb ‖ sg[x]); the DNN input is δ ⊙ x. The stop-gradient keeps the gate from
  reshaping the embedding it scales (as in the paper).
* **PPNet**: per hidden layer l, δ_l = GateNU_l(prior ‖ sg[δ ⊙ x]); h_l ← δ_l ⊙ ReLU(W_l h_{l−1}). With no
  user/item roles in :class:`ModelInputs`, the prior is the domain embedding (the personalisation signal
  available to every dataset here).

All gates are shared networks conditioned on the domain embedding, so nothing is domain-masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mdctr.data.tensors import Batch
from mdctr.models.base import BatchNorm1d, CTRModel, ModelInputs, register, scale_widths


class GateNU(nn.Sequential):
    """[B, in_dim] → [B, out_dim] gate in (0, 2)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * super().forward(x)


@register("pepnet")
class PEPNet(CTRModel):
    """embed → EPNet gate → DNN (hidden·width) with PPNet gates (gate_hidden·width) → logit [B]."""

    @dataclass(frozen=True)
    class Config:
        hidden: tuple[int, ...] = (256, 128)
        gate_hidden: int = 64
        domain_embed_dim: int = 16
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        in_dim = inputs.input_dim
        gate_hidden = scale_widths((config.gate_hidden,), width)[0]
        self.domain_embedding = nn.Embedding(inputs.num_domains, config.domain_embed_dim)
        self.epnet = GateNU(config.domain_embed_dim + in_dim, gate_hidden, in_dim)
        hidden = scale_widths(config.hidden, width)
        self.layers = nn.ModuleList()
        self.ppnet = nn.ModuleList()
        prev = in_dim
        for h in hidden:
            linear = nn.Linear(prev, h)
            self.layers.append(nn.Sequential(linear, BatchNorm1d(h)) if config.batchnorm else linear)
            self.ppnet.append(GateNU(config.domain_embed_dim + in_dim, gate_hidden, h))
            prev = h
        self.head = nn.Linear(prev, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        dom = self.domain_embedding(batch.domain)
        h = self.epnet(torch.cat([dom, x.detach()], dim=1)) * x
        prior = torch.cat([dom, h.detach()], dim=1)
        for layer, gate in zip(self.layers, self.ppnet, strict=True):
            h = torch.relu(layer(h)) * gate(prior)
        return self.head(h).squeeze(-1)
