"""PEPNet (Chang et al. 2023), single task: an EPNet gate over the embedding conditioned on a domain
embedding, and PPNet-style gates on every hidden layer of the DNN.

* **Gate NU**: Linear → ReLU → Linear → 2·sigmoid (values in (0, 2), 1 = neutral).
* **EPNet**: δ = GateNU(domain emb ‖ sg[x]); the DNN input is δ ⊙ x. The stop-gradient keeps the gate from
  reshaping the embedding it scales (as in the paper).
* **PPNet**: per hidden layer l, δ_l = GateNU_l(prior ‖ sg[δ ⊙ x]); h_l ← δ_l ⊙ ReLU(W_l h_{l−1}). The
  prior is the paper's personalisation prior, the embeddings of the user and item id features (no
  stop-gradient: the gates train them), plus the domain embedding. ``prior_features`` names them by position
  among the sparse features; the default, the first two, is (user id, item id) in the ML-1M, Epinions and
  KuaiRand adapters (Ali-CCP's item id, field 205, is sparse feature 9: ``prior_features=(0, 9)``).

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


def epnet_gate(gate: GateNU, dom: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """EPNet's gate δ = gate(domain emb ‖ sg[x]) [B, F]: the stop-gradient keeps the gate from reshaping the
    embedding it scales (as in the paper). ``pepnet`` and ``epnet`` both apply it as δ ⊙ x."""
    return gate(torch.cat([dom, x.detach()], dim=1))


def prior_columns(
    inputs: ModelInputs, prior_features: tuple[int, ...] | None, model: str
) -> tuple[tuple[int, ...], torch.Tensor]:
    """The prior's sparse-feature positions and their columns in the flattened embedding [B, S·E + D].

    ``prior_features``: the user and item ids' positions; None means the first two. An out-of-range position
    raises ``ValueError`` naming ``model``. Shared by PEPNet's and PPNet's personalisation priors.
    """
    num_sparse = len(inputs.vocab_sizes)
    prior = tuple(range(min(2, num_sparse))) if prior_features is None else tuple(prior_features)
    bad = [i for i in prior if not 0 <= i < num_sparse]
    if bad:
        raise ValueError(f"{model}: prior_features {bad} out of range for {num_sparse} sparse features")
    e = inputs.embed_dim
    return prior, torch.tensor([i * e + j for i in prior for j in range(e)], dtype=torch.int64)


@register("pepnet")
class PEPNet(CTRModel):
    """embed → EPNet gate → DNN (hidden·width) with PPNet gates (gate_hidden·width) → logit [B]."""

    @dataclass(frozen=True)
    class Config:
        hidden: tuple[int, ...] = (256, 128)
        gate_hidden: int = 64
        domain_embed_dim: int = 16
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md
        #: sparse-feature positions of the user and item ids (the PPNet prior); None: the first two
        prior_features: tuple[int, ...] | None = None

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        in_dim = inputs.input_dim
        prior, cols = prior_columns(inputs, config.prior_features, "pepnet")
        self.prior_features = prior
        self.register_buffer("prior_columns", cols, persistent=False)
        e = inputs.embed_dim
        prior_dim = config.domain_embed_dim + len(prior) * e
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
            self.ppnet.append(GateNU(prior_dim + in_dim, gate_hidden, h))
            prev = h
        self.head = nn.Linear(prev, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        dom = self.domain_embedding(batch.domain)
        h = epnet_gate(self.epnet, dom, x) * x
        # the ids' embeddings stay attached (the gates train them); the EPNet output is stop-gradient
        prior = torch.cat([x.index_select(1, self.prior_columns), dom, h.detach()], dim=1)
        for layer, gate in zip(self.layers, self.ppnet, strict=True):
            h = torch.relu(layer(h)) * gate(prior)
        return self.head(h).squeeze(-1)
