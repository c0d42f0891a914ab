"""STAR (Sheng et al. 2021, "One Model to Serve All"): partitioned normalisation, star-topology FCN and an
auxiliary network over the domain indicator.

* **Partitioned normalisation (PN)**: rows of domain d are normalised with domain d's statistics (batch
  statistics of its own rows in training, its own running statistics at eval) and scaled/shifted by
  (γ·γ_d, β + β_d).
* **Star-topology FCN**: layer weights of domain d are W ⊙ W_d (shared ⊙ domain-specific), biases b + b_d.
  W_d starts at ones and b_d at zeros, so every domain starts from the shared network.
* **Auxiliary network**: a small MLP over the domain embedding and the input; its logit is added.

Everything domain-specific is applied through :func:`~mdctr.models.base.route` to its own rows only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mdctr.data.tensors import Batch
from mdctr.models.base import MLP, BatchNorm1d, CTRModel, ModelInputs, register, route, scale_widths


class PartitionedNorm(nn.Module):
    """Per-domain statistics, shared ⊙ domain affine. forward(x [B, C], domain [B]) → [B, C]."""

    def __init__(self, num_features: int, num_domains: int, momentum: float = 0.1):
        super().__init__()
        # one affine-free BatchNorm per domain holds that domain's running statistics
        self.stats = nn.ModuleList(
            BatchNorm1d(num_features, affine=False, momentum=momentum) for _ in range(num_domains)
        )
        self.gamma = nn.Parameter(torch.ones(num_features))
        self.beta = nn.Parameter(torch.zeros(num_features))
        self.gamma_d = nn.Parameter(torch.ones(num_domains, num_features))
        self.beta_d = nn.Parameter(torch.zeros(num_domains, num_features))

    def _domain(self, d: int):
        def apply(x: torch.Tensor) -> torch.Tensor:
            return self.stats[d](x) * (self.gamma * self.gamma_d[d]) + (self.beta + self.beta_d[d])

        return apply

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        return route(x, domain, [self._domain(d) for d in range(len(self.stats))], x.shape[1])


class StarFCN(nn.Module):
    """Star-topology FCN: shared weights W_l, per-domain W_{d,l}, ReLU between layers.

    forward(x [B, in_dim], domain [B]) → [B, dims[-1]]; the last layer is linear.
    """

    def __init__(self, in_dim: int, dims: tuple[int, ...], num_domains: int):
        super().__init__()
        self.shared_w = nn.ParameterList()
        self.shared_b = nn.ParameterList()
        self.domain_w = nn.ParameterList()
        self.domain_b = nn.ParameterList()
        for out in dims:
            w = torch.empty(out, in_dim)
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # nn.Linear's default
            self.shared_w.append(nn.Parameter(w))
            self.shared_b.append(nn.Parameter(torch.zeros(out)))
            self.domain_w.append(nn.Parameter(torch.ones(num_domains, out, in_dim)))
            self.domain_b.append(nn.Parameter(torch.zeros(num_domains, out)))
            in_dim = out
        self.num_domains = num_domains
        self.out_dim = in_dim

    def _domain(self, d: int):
        def apply(x: torch.Tensor) -> torch.Tensor:
            n = len(self.shared_w)
            for i in range(n):
                w = self.shared_w[i] * self.domain_w[i][d]
                x = F.linear(x, w, self.shared_b[i] + self.domain_b[i][d])
                if i < n - 1:
                    x = F.relu(x)
            return x

        return apply

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        return route(x, domain, [self._domain(d) for d in range(self.num_domains)], self.out_dim)


class StarTower(nn.Module):
    """STAR's domain-adaptive tower over an input x: PN → star FCN (hidden sizes, then 1) + auxiliary net over
    (domain embedding ‖ x). forward(x [B, in_dim], domain [B]) → logit [B, 1].

    Used by :class:`STAR` (hand-crafted or externally mined domains) and by ``adaptive2`` with
    ``backbone="star"`` (its own mined codes).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: tuple[int, ...],
        num_domains: int,
        aux_hidden: tuple[int, ...],
        domain_embed_dim: int,
        pn_momentum: float = 0.1,
    ):
        super().__init__()
        self.pn = PartitionedNorm(in_dim, num_domains, pn_momentum)
        self.fcn = StarFCN(in_dim, (*hidden, 1), num_domains)
        self.domain_embedding = nn.Embedding(num_domains, domain_embed_dim)
        self.aux = nn.Sequential(MLP(in_dim + domain_embed_dim, aux_hidden), nn.Linear(aux_hidden[-1], 1))

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        main = self.fcn(self.pn(x, domain), domain)
        aux = self.aux(torch.cat([self.domain_embedding(domain), x], dim=1))
        return main + aux


@register("star")
class STAR(CTRModel):
    """embed → PN → star FCN (hidden·width, then 1) + auxiliary net(domain emb ‖ input) → logit [B]."""

    @dataclass(frozen=True)
    class Config:
        hidden: tuple[int, ...] = (256, 128)
        aux_hidden: tuple[int, ...] = (64,)
        domain_embed_dim: int = 16
        pn_momentum: float = 0.1

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        self.tower = StarTower(
            inputs.input_dim,
            scale_widths(config.hidden, width),
            inputs.num_domains,
            scale_widths(config.aux_hidden, width),
            config.domain_embed_dim,
            config.pn_momentum,
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.tower(self.embed(batch), batch.domain).squeeze(-1)
