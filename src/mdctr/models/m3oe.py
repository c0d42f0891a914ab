"""M3oE (Zhang et al. SIGIR 2024, "M3oE: Multi-Domain Multi-Task Mixture-of-Experts Recommendation
Framework"), single task (CTR): its multi-domain bottom and its shared- and domain-expert fusion. The task
experts and the task-balance weight of the paper have nothing to fuse with one task and are left out.

* **Domain bottom** (STAR-style): z = MLP(StarFCN_d(x)) + MLP(x) (skip), where StarFCN_d's weights are
  W ⊙ W_d for a row of domain d (:class:`~mdctr.models.star.StarFCN`, routed).
* **Shared experts**, mixed per row by its domain's softmax gate over sg[z] (the gate reads z through a
  stop-gradient, as in the authors' code): s = Σ_e g_{d,e}(z) E_e(z).
* **Domain experts** with the paper's balance weight α = σ(w_bal): a row of domain d gets
  u_d = α·D_d(z) + (1−α)/(D−1)·Σ_{j≠d} D_j(z) — the other domains' experts transfer knowledge to it with
  weight (1−α)/(D−1). Every domain expert therefore runs on every row and every output is used (nothing is
  computed and thrown away, so this is not masking, but the cost grows with the number of domains).
  ``domain_mix="own"`` routes instead: a row gets α·D_d(z) from its own expert only, run on its rows only.
* **Fusion**: f = s + σ(w_exp)·u, then the domain's tower (Linear–BN–ReLU–Linear, routed) → logit.

The fusion weights σ(w_bal), σ(w_exp) are searched by bi-level optimisation in the paper (on validation
data); here, as in the authors' public code, they train jointly with the rest. ``own_domain_init`` and
``domain_weight_init`` are their initial values.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from mdctr.data.tensors import Batch
from mdctr.models.base import MLP, BatchNorm1d, CTRModel, ModelInputs, register, route, scale_widths
from mdctr.models.shared_bottom import Tower
from mdctr.models.star import StarFCN

DOMAIN_MIXES = ("all", "own")


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class ParallelExperts(nn.Module):
    """E independent expert MLPs (Linear → [BatchNorm] → ReLU per hidden size) over the same input, computed
    as one block: the first layer is one Linear(in → E·h₀), later layers one batched product over the E
    experts, and a BatchNorm over the E·h features normalises each expert's units by themselves — the same
    function as E separate MLPs, with one kernel per layer instead of E. [B, in] → [B, E, hidden[-1]]."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], num: int, *, batchnorm: bool, dropout: float):
        super().__init__()
        self.num = num
        self.hidden = hidden
        self.first = nn.Linear(in_dim, num * hidden[0])
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for prev, h in itertools.pairwise(hidden):
            w = torch.empty(num, prev, h)
            for e in range(num):  # nn.Linear's default init, per expert
                nn.init.kaiming_uniform_(w[e].t(), a=math.sqrt(5))
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.empty(num, 1, h).uniform_(-(prev**-0.5), prev**-0.5)))
        self.norms = nn.ModuleList(BatchNorm1d(num * h) if batchnorm else nn.Identity() for h in hidden)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(torch.relu(self.norms[0](self.first(x))))  # [B, E·h₀]
        for w, b, norm in zip(self.weights, self.biases, self.norms[1:], strict=True):
            per_expert = h.view(h.shape[0], self.num, -1).transpose(0, 1)  # [E, B, h]
            h = torch.baddbmm(b, per_expert, w).transpose(0, 1).reshape(h.shape[0], -1)
            h = self.dropout(torch.relu(norm(h)))
        return h.view(h.shape[0], self.num, self.hidden[-1])


@register("m3oe")
class M3oE(CTRModel):
    """embed → star layer_d + MLP, skip → [gate_d-mixed shared experts + σ(w_exp)·balanced domain experts]
    → tower_d → logit [B]. Width scales every hidden size."""

    @dataclass(frozen=True)
    class Config:
        star: int = 256  # the star layer's width
        bottom: int = 128  # the bottom's output width z (after the MLP and the skip)
        num_experts: int = 4
        expert: tuple[int, ...] = (64,)
        domain_mix: str = "all"
        own_domain_init: float = 0.8  # initial α
        domain_weight_init: float = 0.5  # initial σ(w_exp)
        dropout: float = 0.0
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md

        def __post_init__(self) -> None:
            if self.domain_mix not in DOMAIN_MIXES:
                raise ValueError(f"m3oe: domain_mix must be one of {DOMAIN_MIXES}, got {self.domain_mix!r}")
            for name in ("own_domain_init", "domain_weight_init"):
                if not 0.0 < getattr(self, name) < 1.0:
                    raise ValueError(f"m3oe: {name} must be in (0, 1), got {getattr(self, name)}")

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        n_dom = inputs.num_domains
        (star,) = scale_widths((config.star,), width)
        (bottom,) = scale_widths((config.bottom,), width)
        expert = scale_widths(config.expert, width)
        kw = {"batchnorm": config.batchnorm, "dropout": config.dropout}
        self.star = StarFCN(inputs.input_dim, (star,), n_dom)
        self.star_mlp = MLP(star, (bottom,), **kw)
        self.skip = MLP(inputs.input_dim, (bottom,), **kw)
        self.experts = ParallelExperts(bottom, expert, config.num_experts, **kw)
        self.gates = nn.ModuleList(nn.Linear(bottom, config.num_experts) for _ in range(n_dom))
        # routed ("own"): one MLP per domain on its rows; "all": every domain expert on every row, as one block
        if config.domain_mix == "own" or n_dom == 1:
            self.domain_experts: nn.Module = nn.ModuleList(MLP(bottom, expert, **kw) for _ in range(n_dom))
        else:
            self.domain_experts = ParallelExperts(bottom, expert, n_dom, **kw)
        # with one domain there is nothing to balance: the row's own expert has weight 1
        self.w_bal = nn.Parameter(torch.tensor(_logit(config.own_domain_init))) if n_dom > 1 else None
        self.w_exp = nn.Parameter(torch.tensor(_logit(config.domain_weight_init)))
        self.towers = nn.ModuleList(Tower(expert[-1], (expert[-1],), **kw) for _ in range(n_dom))
        self.expert_dim = expert[-1]

    def own_weight(self) -> torch.Tensor:
        """α, the weight of a row's own domain expert."""
        return torch.sigmoid(self.w_bal) if self.w_bal is not None else torch.ones(())

    def domain_part(self, z: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """u [B, H]: the balanced domain-expert representation of each row."""
        n_dom = self.inputs.num_domains
        alpha = self.own_weight()
        if isinstance(self.domain_experts, nn.ModuleList):
            own = route(z, domain, list(self.domain_experts), self.expert_dim)
            return alpha * own
        outs = self.domain_experts(z)  # [B, D, H]
        # per-row mixing weights: α on the own domain, (1 − α)/(D − 1) on each other one
        other = (1 - alpha) / (n_dom - 1)
        own_mask = (domain.unsqueeze(1) == torch.arange(n_dom, device=z.device)).to(z.dtype)
        w = other + (alpha - other) * own_mask  # [B, D]
        return (w.unsqueeze(2) * outs).sum(dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        d = batch.domain
        n_dom = self.inputs.num_domains
        # route by sorting the rows by domain once: every routed module (star layer, gate, tower) then runs
        # on one contiguous slice per domain, and the logits go back to the batch order at the end
        order = torch.argsort(d, stable=True) if n_dom > 1 else None
        if order is not None:
            x, d = x.index_select(0, order), d.index_select(0, order)
        counts = torch.bincount(d, minlength=n_dom).tolist() if n_dom > 1 else [x.shape[0]]

        def by_domain(t: torch.Tensor, modules) -> torch.Tensor:
            parts = torch.split(t, counts)
            return torch.cat([modules[k](p) for k, p in enumerate(parts) if p.shape[0]], dim=0)

        z = self.star_mlp(by_domain(x, [self.star._domain(k) for k in range(n_dom)])) + self.skip(x)
        shared = self.experts(z)  # [B, E, H]
        gate = torch.softmax(by_domain(z.detach(), self.gates), dim=1)  # [B, E]
        # the gate mix as a broadcast product (a [1, E]×[E, H] bmm per row is several times slower)
        mixed = (gate.unsqueeze(2) * shared).sum(dim=1)
        fused = mixed + torch.sigmoid(self.w_exp) * self.domain_part(z, d)
        logits = by_domain(fused, self.towers).squeeze(-1)
        if order is None:
            return logits
        return torch.empty_like(logits).index_copy_(0, order, logits)
