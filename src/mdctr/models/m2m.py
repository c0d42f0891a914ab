"""M2M (Zhang et al. CIKM 2022, "Leaving No One Behind: A Multi-Scenario Multi-Task Meta Learning Approach
for Advertiser Modeling"), single task: expert views mixed by a meta attention and read out by a meta tower,
both parameterised by the scenario's knowledge.

* **Expert views**: E_k = MLP_k(x), k = 1..K (the paper's Transformer backbone over behaviour sequences has no
  input here: the datasets carry no sequences, so the experts read the embedded features directly).
* **Scenario knowledge**: S = MLP(e_s), e_s the scenario (routing domain) embedding; **task**: a learned
  embedding T of the one CTR task.
* **Meta unit** (the paper's Eq. for the meta learner): its weights are generated from S,
  W = Reshape(V_W S + b_W), b = V_b S + b_b, and it maps h ↦ σ(W h + b) (σ = LeakyReLU).
* **Meta attention**: a_k = vᵀ MetaUnit_S([E_k ‖ T]), α = softmax(a), R = Σ_k α_k E_k.
* **Meta tower**: L_0 = R, L_j = σ(MetaUnit_{S,j}(L_{j−1})) + L_{j−1} (residual), logit = wᵀ L_J + c.

Speed: S depends only on the scenario, so the generated weights are per *scenario*, not per row. They are
generated once per batch for every scenario ([D, ·] products, cheap) and each row runs through its own
scenario's weights via :func:`~mdctr.models.base.route` (plain matrix products on the scenario's rows), instead
of a per-row batched matmul over per-row weight copies. The attention input [E_k ‖ T] is split the same way:
W [E_k ‖ T] + b = W_E E_k + (W_T T + b), and the bracket is one vector per scenario.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mdctr.data.tensors import Batch
from mdctr.models.base import MLP, CTRModel, ModelInputs, register, route, scale_widths


class MetaUnitGenerator(nn.Module):
    """Generates one meta unit's (W, b) per scenario from scenario knowledge S [D, s_dim].

    forward(S) → (W [D, out, in], b [D, out]). Generated weights are scaled by 1/√in so that, with
    nn.Linear's default initialisation of the generator, W starts at a fan-in scale like a fixed layer's.
    """

    def __init__(self, s_dim: int, in_dim: int, out_dim: int):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.weight = nn.Linear(s_dim, in_dim * out_dim)
        self.bias = nn.Linear(s_dim, out_dim)

    def forward(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weight(s).view(-1, self.out_dim, self.in_dim) / math.sqrt(self.in_dim)
        return w, self.bias(s)


@register("m2m")
class M2M(CTRModel):
    """embed → K experts (expert·width) → meta attention (attention_dim·width) → meta tower → logit [B]."""

    @dataclass(frozen=True)
    class Config:
        num_experts: int = 4
        expert: tuple[int, ...] = (128, 64)
        domain_embed_dim: int = 16
        scenario_dim: int = 32  # scenario knowledge S
        task_dim: int = 16  # task embedding T
        attention_dim: int = 32  # meta unit width inside the meta attention
        tower_layers: int = 2  # residual meta-unit layers of the meta tower
        negative_slope: float = 0.01  # LeakyReLU of the meta units
        dropout: float = 0.0
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        if config.num_experts < 1 or config.tower_layers < 0:
            raise ValueError(
                f"m2m: num_experts must be >= 1 and tower_layers >= 0, got {config.num_experts}, "
                f"{config.tower_layers}"
            )
        expert = scale_widths(config.expert, width)
        self.view_dim = view = expert[-1]
        att = scale_widths((config.attention_dim,), width)[0]
        self.experts = nn.ModuleList(
            MLP(inputs.input_dim, expert, batchnorm=config.batchnorm, dropout=config.dropout)
            for _ in range(config.num_experts)
        )
        self.domain_embedding = nn.Embedding(inputs.num_domains, config.domain_embed_dim)
        self.scenario = nn.Sequential(nn.Linear(config.domain_embed_dim, config.scenario_dim), nn.ReLU())
        self.task = nn.Parameter(torch.randn(config.task_dim) * 0.1)
        s = config.scenario_dim
        self.attention_unit = MetaUnitGenerator(s, view + config.task_dim, att)
        self.attention_v = nn.Linear(att, 1, bias=False)
        self.tower = nn.ModuleList(MetaUnitGenerator(s, view, view) for _ in range(config.tower_layers))
        self.head = nn.Linear(view, 1)

    def _scenario_weights(self) -> dict[str, torch.Tensor]:
        """Every scenario's generated meta-unit weights (one [D, ...] product per generator)."""
        s = self.scenario(self.domain_embedding.weight)  # [D, s_dim]
        w, b = self.attention_unit(s)
        view = self.view_dim
        w_e, w_t = w[:, :, :view], w[:, :, view:]
        # the task part of the attention input is the same for every row of a scenario: fold it into b
        out: dict[str, torch.Tensor] = {"att_w": w_e, "att_b": b + torch.einsum("dat,t->da", w_t, self.task)}
        for j, unit in enumerate(self.tower):
            out[f"tower_w{j}"], out[f"tower_b{j}"] = unit(s)
        return out

    def _attend(self, views: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """views [n, K, V] of one scenario → attention weights α [n, K]."""
        n, k, v = views.shape
        hidden = F.leaky_relu(F.linear(views.reshape(n * k, v), w, b), self.config.negative_slope)
        return torch.softmax(self.attention_v(hidden).view(n, k), dim=1)

    def _scenario_fn(self, d: int, gen: dict[str, torch.Tensor], what: str):
        k, v = self.config.num_experts, self.view_dim

        def apply(flat: torch.Tensor) -> torch.Tensor:
            views = flat.view(-1, k, v)
            alpha = self._attend(views, gen["att_w"][d], gen["att_b"][d])
            if what == "attention":
                return alpha
            h = torch.einsum("nk,nkv->nv", alpha, views)
            for j in range(len(self.tower)):
                w, b = gen[f"tower_w{j}"][d], gen[f"tower_b{j}"][d]
                h = F.leaky_relu(F.linear(h, w, b), self.config.negative_slope) + h
            return self.head(h)

        return apply

    def _views(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        return torch.stack([e(x) for e in self.experts], dim=1).flatten(1)  # [B, K·V]

    def attention(self, batch: Batch) -> torch.Tensor:
        """The meta attention's weights α [B, K] over the experts (for inspection and tests)."""
        gen = self._scenario_weights()
        fns = [self._scenario_fn(d, gen, "attention") for d in range(self.inputs.num_domains)]
        return route(self._views(batch), batch.domain, fns, self.config.num_experts)

    def forward(self, batch: Batch) -> torch.Tensor:
        gen = self._scenario_weights()
        fns = [self._scenario_fn(d, gen, "logit") for d in range(self.inputs.num_domains)]
        return route(self._views(batch), batch.domain, fns, 1).squeeze(-1)
