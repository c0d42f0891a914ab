"""SAR-Net (Shen et al. CIKM 2021, "A Scenario-Aware Ranking Network for Personalized Fair Recommendation in
Hundreds of Travel Scenarios"), single task: scenario-specific transfer, then a mixture of debias experts.

* **Scenario-specific transfer**: x̃ = γ_s ⊙ x + β_s, one (γ_s, β_s) per scenario (γ starts at ones, β at
  zeros: every scenario starts from the shared input). The paper's cross-scenario behaviour attention feeds
  this layer with an interest-transfer vector from behaviour sequences; the datasets here have no sequences,
  so the transfer acts on the embedded features.
* **Mixture of debias experts**: scenario-shared experts (every row) and scenario-specific experts (only the
  rows of their scenario, via :func:`~mdctr.models.base.route`). Each expert is a main network over x̃
  (BatchNorm → MLP → logit) plus, in training only, a bias network over the debias input; the paper's debias
  input is a fairness coefficient embedding, here it is the scenario embedding (the only bias source the
  datasets carry). The bias logit absorbs the scenario's selection bias in training and is dropped at
  inference, so served scores rank by the main networks alone (``debias=False`` keeps plain experts).
* **Gate**: per scenario, softmax(G_s x̃) over that scenario's specific experts and the shared ones; the logit
  is the gated sum of the experts' logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mdctr.data.tensors import Batch
from mdctr.models.base import MLP, BatchNorm1d, CTRModel, ModelInputs, register, route, scale_widths


class DebiasExpert(nn.Module):
    """Main network BN → MLP → logit over x̃ [B, F]; forward(x, bias_input or None) → logit [B, 1]."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], bias_dim: int | None, **mlp_kw):
        super().__init__()
        mlp = MLP(in_dim, hidden, **mlp_kw)
        self.main = nn.Sequential(BatchNorm1d(in_dim), mlp, nn.Linear(mlp.output_dim, 1))
        self.bias = nn.Linear(bias_dim, 1) if bias_dim is not None else None

    def forward(self, x: torch.Tensor, bias_input: torch.Tensor | None) -> torch.Tensor:
        out = self.main(x)
        if bias_input is not None and self.bias is not None:
            out = out + self.bias(bias_input)
        return out


class _ScenarioBlock(nn.Module):
    """One scenario's specific experts and gate. packed [n, F + n_shared + E] → logit [n, 1].

    Input layout: x̃ [n, F], the shared experts' logits [n, n_shared], then, only while the bias networks are
    on (training with ``debias``), the bias input [n, E].
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], n_specific: int, n_shared: int, bias_dim, **kw):
        super().__init__()
        self.in_dim, self.n_shared = in_dim, n_shared
        self.experts = nn.ModuleList(DebiasExpert(in_dim, hidden, bias_dim, **kw) for _ in range(n_specific))
        self.gate = nn.Linear(in_dim, n_specific + n_shared)
        self.use_bias = False  # set by SARNet before each routed call

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        f, s = self.in_dim, self.n_shared
        x, shared, bias_in = packed[:, :f], packed[:, f : f + s], packed[:, f + s :]
        bias_in = bias_in if self.use_bias else None
        logits = torch.cat([*(e(x, bias_in) for e in self.experts), shared], dim=1)
        gate = torch.softmax(self.gate(x), dim=1)
        return (gate * logits).sum(dim=1, keepdim=True)


@register("sarnet")
class SARNet(CTRModel):
    """embed → scenario transfer → shared + scenario experts (expert·width) mixed by a scenario gate → logit [B]."""

    @dataclass(frozen=True)
    class Config:
        num_shared: int = 4
        num_specific: int = 2
        expert: tuple[int, ...] = (128, 64)
        domain_embed_dim: int = 16
        debias: bool = True  # bias networks in training, dropped at inference
        dropout: float = 0.0
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        if config.num_shared < 0 or config.num_specific < 0 or config.num_shared + config.num_specific < 1:
            raise ValueError(
                f"sarnet: need num_shared, num_specific >= 0 and at least one expert, got "
                f"{config.num_shared}, {config.num_specific}"
            )
        f, n = inputs.input_dim, inputs.num_domains
        self.gamma = nn.Parameter(torch.ones(n, f))
        self.beta = nn.Parameter(torch.zeros(n, f))
        # the debias input (only the bias networks read it)
        self.domain_embedding = nn.Embedding(n, config.domain_embed_dim) if config.debias else None
        expert = scale_widths(config.expert, width)
        kw = {"batchnorm": config.batchnorm, "dropout": config.dropout}
        bias_dim = config.domain_embed_dim if config.debias else None
        self.shared = nn.ModuleList(DebiasExpert(f, expert, bias_dim, **kw) for _ in range(config.num_shared))
        self.blocks = nn.ModuleList(
            _ScenarioBlock(f, expert, config.num_specific, config.num_shared, bias_dim, **kw)
            for _ in range(n)
        )

    def transfer(self, batch: Batch) -> torch.Tensor:
        """x̃ = γ_s ⊙ x + β_s [B, F]: each row reads its own scenario's row of γ and β (a lookup, not a mask)."""
        x = self.embed(batch)
        return x * self.gamma.index_select(0, batch.domain) + self.beta.index_select(0, batch.domain)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.transfer(batch)
        use_bias = self.training and self.domain_embedding is not None
        bias_in = self.domain_embedding(batch.domain) if use_bias else None
        parts = [x]
        if self.shared:
            parts.append(torch.cat([e(x, bias_in) for e in self.shared], dim=1))
        if bias_in is not None:
            parts.append(bias_in)  # the bias input travels with the row into its scenario's block
        for block in self.blocks:
            block.use_bias = use_bias
        return route(torch.cat(parts, dim=1), batch.domain, list(self.blocks), 1).squeeze(-1)
