"""PLE / CGC for domains (Tang et al. 2020): shared experts plus experts specific to each domain.

Per level, a row of domain d sees the shared experts and *its own domain's* specific experts only; the
specific experts and the gate of domain d are routed (they run on rows of d only). With more than one level,
a shared branch is carried forward as in PLE; its gate mixes the shared experts with the row's own domain's
specific experts (the multi-domain reading of "all experts": the other domains' experts are never run on a
row). ``num_levels=1`` is CGC.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mdctr.data.tensors import Batch
from mdctr.models.base import MLP, CTRModel, ModelInputs, register, route, scale_widths
from mdctr.models.shared_bottom import Tower


class _SpecificBlock(nn.Module):
    """Domain d's specific experts and gate. [B_d, F + n_shared·H] → [B_d, H + n_specific·H].

    Input layout: the domain-branch input x_d [B_d, F] followed by the flattened shared-expert outputs
    [B_d, n_shared·H]; routing one concatenated tensor keeps the gather/scatter to a single pass. Output: the
    gated mixture [B_d, H] followed by the flattened own-expert outputs [B_d, n_specific·H].
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], n_specific: int, n_shared: int, **mlp_kw):
        super().__init__()
        self.in_dim = in_dim
        self.n_shared = n_shared
        self.experts = nn.ModuleList(MLP(in_dim, hidden, **mlp_kw) for _ in range(n_specific))
        self.gate = nn.Linear(in_dim, n_specific + n_shared)
        self.out_dim = hidden[-1]

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        x, shared = packed[:, : self.in_dim], packed[:, self.in_dim :]
        shared = shared.reshape(x.shape[0], self.n_shared, self.out_dim)
        own = torch.stack([e(x) for e in self.experts], dim=1)  # [B_d, n_specific, H]
        experts = torch.cat([own, shared], dim=1)
        w = torch.softmax(self.gate(x), dim=1)
        # also return the own experts so a shared gate at this level can mix them without recomputing
        return torch.cat([torch.einsum("be,beh->bh", w, experts), own.flatten(1)], dim=1)


@register("ple")
class PLE(CTRModel):
    """embed → num_levels CGC levels (expert·width) → routed domain tower (tower·width) → logit [B]."""

    @dataclass(frozen=True)
    class Config:
        num_levels: int = 2  # PLE; 1 is CGC
        num_shared: int = 2
        num_specific: int = 1
        expert: tuple[int, ...] = (256, 128)
        tower: tuple[int, ...] = (64,)
        dropout: float = 0.0
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        if config.num_levels < 1:
            raise ValueError(f"ple: num_levels must be >= 1, got {config.num_levels}")
        expert = scale_widths(config.expert, width)
        kw = {"batchnorm": config.batchnorm, "dropout": config.dropout}
        self.levels = nn.ModuleList()
        in_dim = inputs.input_dim
        for level in range(config.num_levels):
            last = level == config.num_levels - 1
            block = nn.Module()
            block.shared = nn.ModuleList(MLP(in_dim, expert, **kw) for _ in range(config.num_shared))
            block.specific = nn.ModuleList(
                _SpecificBlock(in_dim, expert, config.num_specific, config.num_shared, **kw)
                for _ in range(inputs.num_domains)
            )
            # the last level has no shared branch to carry forward
            block.shared_gate = None if last else nn.Linear(in_dim, config.num_specific + config.num_shared)
            self.levels.append(block)
            in_dim = expert[-1]
        self.towers = nn.ModuleList(
            Tower(in_dim, scale_widths(config.tower, width), **kw) for _ in range(inputs.num_domains)
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        x_dom, x_shared = x, x
        cfg = self.config
        for block in self.levels:
            shared = torch.stack([e(x_shared) for e in block.shared], dim=1)  # [B, n_shared, H]
            h = shared.shape[-1]
            packed = torch.cat([x_dom, shared.flatten(1)], dim=1)
            out = route(packed, batch.domain, list(block.specific), h * (1 + cfg.num_specific))
            new_dom, own = out[:, :h], out[:, h:].reshape(-1, cfg.num_specific, h)
            if block.shared_gate is not None:
                w = torch.softmax(block.shared_gate(x_shared), dim=1)
                x_shared = torch.einsum("be,beh->bh", w, torch.cat([own, shared], dim=1))
            x_dom = new_dom
        return route(x_dom, batch.domain, list(self.towers), 1).squeeze(-1)
