"""PPNet alone (the parameter-personalised half of PEPNet, Chang et al. KDD 2023), single task.

Per hidden layer l of the DNN: δ_l = GateNU_l(prior ‖ sg[x]) and h_l = δ_l ⊙ ReLU(BN(W_l h_{l−1})), with
Gate NU = Linear → ReLU → Linear → 2·sigmoid (1 = neutral) imported from :mod:`mdctr.models.pepnet`. The DNN
input is the plain embedding x (no EPNet gate: that is ``epnet``/``pepnet``). The prior is the paper's
personalisation prior, the embeddings of the user and item id features (no stop-gradient: the gates train
them), plus a domain embedding, so the gates are domain-aware with the ``handcrafted`` or ``mined`` source and
personalised only with ``none``. The stop-gradient on x keeps the gates from reshaping the embedding they read.

All gates are shared networks conditioned on the prior; nothing is domain-masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mdctr.data.tensors import Batch
from mdctr.models.base import BatchNorm1d, CTRModel, ModelInputs, register, scale_widths
from mdctr.models.pepnet import GateNU, prior_columns


@register("ppnet")
class PPNet(CTRModel):
    """embed → DNN (hidden·width) whose every hidden layer is scaled by a Gate NU (gate_hidden·width) over
    (user/item id embeddings ‖ domain embedding ‖ sg[embedding]) → logit [B]."""

    @dataclass(frozen=True)
    class Config:
        hidden: tuple[int, ...] = (256, 128)
        gate_hidden: int = 64
        domain_embed_dim: int = 16
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md
        #: sparse-feature positions of the user and item ids (the prior); None: the first two (as in pepnet)
        prior_features: tuple[int, ...] | None = None

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        in_dim = inputs.input_dim
        prior, cols = prior_columns(inputs, config.prior_features, "ppnet")
        self.prior_features = prior
        self.register_buffer("prior_columns", cols, persistent=False)
        e = inputs.embed_dim
        gate_in = len(prior) * e + config.domain_embed_dim + in_dim
        gate_hidden = scale_widths((config.gate_hidden,), width)[0]
        self.domain_embedding = nn.Embedding(inputs.num_domains, config.domain_embed_dim)
        self.layers = nn.ModuleList()
        self.gates = nn.ModuleList()
        prev = in_dim
        for h in scale_widths(config.hidden, width):
            linear = nn.Linear(prev, h)
            self.layers.append(nn.Sequential(linear, BatchNorm1d(h)) if config.batchnorm else linear)
            self.gates.append(GateNU(gate_in, gate_hidden, h))
            prev = h
        self.head = nn.Linear(prev, 1)

    def gate_values(self, batch: Batch) -> list[torch.Tensor]:
        """Each layer's gate δ_l [B, hidden_l] (in (0, 2)); for diagnostics and tests."""
        x = self.embed(batch)
        prior = self._prior(x, batch)
        return [gate(prior) for gate in self.gates]

    def _prior(self, x: torch.Tensor, batch: Batch) -> torch.Tensor:
        # the ids' embeddings stay attached (the gates train them); the full embedding is stop-gradient
        ids = x.index_select(1, self.prior_columns)
        return torch.cat([ids, self.domain_embedding(batch.domain), x.detach()], dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        prior = self._prior(x, batch)
        h = x
        for layer, gate in zip(self.layers, self.gates, strict=True):
            h = torch.relu(layer(h)) * gate(prior)
        return self.head(h).squeeze(-1)
