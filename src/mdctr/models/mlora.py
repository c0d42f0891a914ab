"""MLoRA (Yang et al. CIKM 2024, "MLoRA: Multi-Domain Low-Rank Adaptive Network for CTR Prediction"): a shared
DNN whose every hidden layer carries a per-domain low-rank adapter.

Layer l for a row of domain d: h_l = ReLU(BN(W_l h_{l−1} + b_l + s·B_{d,l} A_{d,l} h_{l−1})), with A_{d,l} ∈
R^{r_l×n_in}, B_{d,l} ∈ R^{n_out×r_l} and the LoRA scale s = alpha / r_l. The shared W_l sees every row; the
adapter (A_d, B_d) of domain d sees the rows of domain d only: the batch is sorted by domain once, each domain's
adapter runs on its contiguous slice at every layer, and the output is put back in the original order.

**Zero delta at step 0.** LoRA starts B = 0 so the model starts as the shared network; but then A gets no
gradient in the first step (∂L/∂A = sBᵀ g hᵀ = 0). ``adapter_init="offset"`` (default) starts A and B random
and subtracts the frozen product of their initial values, ΔW = s(B A − B₀ A₀): the delta is exactly zero at
step 0, so the model starts as the shared network, and both factors learn from the first step. ``"zeros"`` is
the paper's B = 0 (A then learns from the second step on). ``"random"`` starts both random without the offset.

The paper pre-trains the shared network on all domains and then fine-tunes the adapters; here both train
jointly end to end (one run, like every other model of the zoo).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mdctr.data.tensors import Batch
from mdctr.models.base import BatchNorm1d, CTRModel, ModelInputs, register, scale_widths

ADAPTER_INITS = ("offset", "zeros", "random")


class DomainLoRA(nn.Module):
    """Per-domain low-rank deltas of one Linear(n_in → n_out).

    forward(slices) takes the rows of each domain (a list, one [n_d, n_in] tensor per domain, possibly empty)
    and returns their deltas [Σ n_d, n_out] in the same order.
    """

    def __init__(self, n_in: int, n_out: int, rank: int, num_domains: int, *, alpha: float, init: str):
        super().__init__()
        if init not in ADAPTER_INITS:
            raise ValueError(f"mlora: adapter_init must be one of {ADAPTER_INITS}, got {init!r}")
        self.scale = alpha / rank
        a = torch.empty(num_domains, rank, n_in)
        for d in range(num_domains):  # LoRA's A init: nn.Linear's default (Kaiming uniform)
            nn.init.kaiming_uniform_(a[d], a=math.sqrt(5))
        b = torch.zeros(num_domains, n_out, rank)
        if init != "zeros":
            nn.init.normal_(b, std=rank**-0.5)
        self.a = nn.Parameter(a)
        self.b = nn.Parameter(b)
        # the frozen initial product, subtracted so the delta starts at exactly zero ("offset")
        self.register_buffer("a0", a.clone() if init == "offset" else None)
        self.register_buffer("b0", b.clone() if init == "offset" else None)

    def delta_weight(self, d: int) -> torch.Tensor:
        """Domain d's ΔW [n_out, n_in] (materialised only for inspection; forward never builds it)."""
        w = self.b[d] @ self.a[d]
        if self.a0 is not None:
            w = w - self.b0[d] @ self.a0[d]
        return self.scale * w

    def _one(self, x: torch.Tensor, d: int) -> torch.Tensor:
        if self.a0 is None:
            return (x @ self.a[d].t()) @ (self.scale * self.b[d]).t()
        # (B A − B₀ A₀) x as one rank-2r product: [B, −B₀] · [A; A₀] x
        a = torch.cat([self.a[d], self.a0[d]], dim=0)
        b = torch.cat([self.b[d], -self.b0[d]], dim=1)
        return (x @ a.t()) @ (self.scale * b).t()

    def forward(self, slices: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([self._one(x, d) for d, x in enumerate(slices) if x.shape[0]], dim=0)


@register("mlora")
class MLoRA(CTRModel):
    """embed → shared DNN (hidden·width) with a per-domain rank-r adapter on every hidden layer → logit [B].

    Width scales the hidden sizes and the ranks.
    """

    @dataclass(frozen=True)
    class Config:
        hidden: tuple[int, ...] = (256, 128)
        #: adapter rank per hidden layer (the paper uses small ranks that shrink with the layer width)
        ranks: tuple[int, ...] = (16, 8)
        #: LoRA scale numerator: ΔW = (alpha / r) · B A; None: alpha = r (scale 1)
        alpha: float | None = None
        adapter_init: str = "offset"
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md

        def __post_init__(self) -> None:
            if len(self.ranks) != len(self.hidden):
                raise ValueError(
                    f"mlora: ranks {self.ranks} must give one rank per hidden layer {self.hidden}"
                )
            if any(r < 1 for r in self.ranks):
                raise ValueError(f"mlora: ranks must be >= 1, got {self.ranks}")
            if self.adapter_init not in ADAPTER_INITS:
                raise ValueError(
                    f"mlora: adapter_init must be one of {ADAPTER_INITS}, got {self.adapter_init!r}"
                )

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        hidden = scale_widths(config.hidden, width)
        ranks = scale_widths(config.ranks, width)
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.adapters = nn.ModuleList()
        prev = inputs.input_dim
        for h, r in zip(hidden, ranks, strict=True):
            self.linears.append(nn.Linear(prev, h))
            self.norms.append(BatchNorm1d(h) if config.batchnorm else nn.Identity())
            alpha = float(r) if config.alpha is None else config.alpha
            self.adapters.append(
                DomainLoRA(prev, h, r, inputs.num_domains, alpha=alpha, init=config.adapter_init)
            )
            prev = h
        self.head = nn.Linear(prev, 1)
        #: ablation switch: False drops every adapter (the shared network alone)
        self.use_adapters = True

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        n = self.inputs.num_domains
        # sort the rows by domain once: each domain's adapters then run on one contiguous slice per layer
        order = torch.argsort(batch.domain, stable=True) if n > 1 else None
        counts = torch.bincount(batch.domain, minlength=n).tolist() if n > 1 else [x.shape[0]]
        h = x if order is None else x.index_select(0, order)
        for linear, norm, adapter in zip(self.linears, self.norms, self.adapters, strict=True):
            z = linear(h)
            if self.use_adapters:
                z = z + adapter(list(torch.split(h, counts)))
            h = torch.relu(norm(z))
        logits = self.head(h).squeeze(-1)
        if order is None:
            return logits
        return torch.empty_like(logits).index_copy_(0, order, logits)
