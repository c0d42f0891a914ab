"""HAMUR (Li et al. 2023): per-domain towers with a hyper-network-generated adapter (DESIGN.md §3).

* **Towers**: one per domain, Linear–BN–ReLU layers (default (256, 128)), routed: a tower runs only on its
  domain's rows (the public code runs every tower on the whole batch and masks).
* **Hyper-network** (shared): an MLP over the full input embedding (default hidden (64,)) that outputs an
  instance matrix H(x) ∈ R^{k×k} (k = 35 by default).
* **Adapter** after the last hidden layer (``adapter_layers=2``: after each of the last two), on a hidden
  vector h ∈ R^d:  s = σ(h·W_down),  W_down = U₁·H(x)·V₁ (d → r, r = 32);  u = s·W_up,  W_up = U₂·H(x)·V₂
  (r → d);  out = h + γ ⊙ norm(u) + β.  The per-sample matrices are never materialised: h·U₁·H·V₁ is
  evaluated right to left as ((h @ U₁) ⊙bmm H) @ V₁, i.e. two shared GEMMs and one [n, 1, k] × [n, k, k]
  batched product per row instead of a d × r matrix per row.
* ``adapter_per_domain`` (default True) gives each tower its own U, V and norm (the paper's reading; the
  public code shares one adapter). ``adapter_norm="running"`` (default) is a BatchNorm with running
  statistics used at eval time; ``"batch"`` reproduces the public code (batch statistics at eval too).

**Initialisation.** ``adapter_init="ones"`` (default, as in the authors' code) sets U, V to ones. Note the
consequence: with U₂ rows and V₁ columns all equal, the r bottleneck units receive identical values and
identical gradients at every step, so they stay identical and the bottleneck acts as rank one (the model
still trains: the d-dimensional sides and H do break symmetry). ``"normal"`` draws U, V with std
1/√fan-in and gives a full-rank bottleneck.

One-row groups in training: tower BatchNorms fall back to running statistics
(:class:`~mdctr.models.base.BatchNorm1d`); the ``"batch"`` adapter norm uses biased statistics (no NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mdctr.data.tensors import Batch
from mdctr.models.base import MLP, BatchNorm1d, CTRModel, ModelInputs, register, route, scale_widths

ADAPTER_NORMS = ("running", "batch")
ADAPTER_INITS = ("ones", "normal")


class HyperAdapter(nn.Module):
    """Adapter whose weights are built per sample from the instance matrix H.

    forward(h [n, d], H [n, k, k]) → [n, d] = h + norm(σ(h U₁ H V₁) U₂ H V₂).
    """

    def __init__(self, dim: int, k: int, bottleneck: int, *, norm: str = "running", init: str = "ones"):
        super().__init__()
        shapes = {"u1": (dim, k), "v1": (k, bottleneck), "u2": (bottleneck, k), "v2": (k, dim)}
        for name, shape in shapes.items():
            p = torch.ones(shape) if init == "ones" else torch.randn(shape) / shape[0] ** 0.5
            setattr(self, name, nn.Parameter(p))
        self.norm_kind = norm
        if norm == "running":
            self.norm = BatchNorm1d(dim)
        else:
            self.norm = None
            self.gamma = nn.Parameter(torch.ones(dim))
            self.beta = nn.Parameter(torch.zeros(dim))
        self.eps = 1e-5

    @staticmethod
    def _lowrank(x: torch.Tensor, u: torch.Tensor, hyper: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """x [n, a] · U [a, k] · H [n, k, k] · V [k, b] → [n, b], right-to-left without per-row a×b."""
        return torch.bmm((x @ u).unsqueeze(1), hyper).squeeze(1) @ v

    def forward(self, h: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self._lowrank(h, self.u1, hyper, self.v1))  # [n, r]
        up = self._lowrank(s, self.u2, hyper, self.v2)  # [n, d]
        if self.norm is not None:
            up = self.norm(up)
        else:
            # batch statistics at train *and* eval time, as in the public code (biased var: no NaN at n=1)
            mean = up.mean(0, keepdim=True)
            var = up.var(0, unbiased=False, keepdim=True)
            up = (up - mean) * torch.rsqrt(var + self.eps) * self.gamma + self.beta
        return h + up


@register("hamur")
class HAMUR(CTRModel):
    """embed → routed tower of the row's domain with hyper-adapter(s) → logit [B].

    Width scales tower, hyper-network, k and the bottleneck r.
    """

    @dataclass(frozen=True)
    class Config:
        tower: tuple[int, ...] = (256, 128)
        hyper: tuple[int, ...] = (64,)
        k: int = 35
        bottleneck: int = 32
        adapter_layers: int = 1
        adapter_per_domain: bool = True
        adapter_norm: str = "running"
        adapter_init: str = "ones"
        dropout: float = 0.0

        def __post_init__(self) -> None:
            if self.adapter_norm not in ADAPTER_NORMS:
                raise ValueError(
                    f"hamur: adapter_norm must be one of {ADAPTER_NORMS}, got {self.adapter_norm!r}"
                )
            if self.adapter_init not in ADAPTER_INITS:
                raise ValueError(
                    f"hamur: adapter_init must be one of {ADAPTER_INITS}, got {self.adapter_init!r}"
                )
            if not 1 <= self.adapter_layers <= len(self.tower):
                raise ValueError(
                    f"hamur: adapter_layers must be in 1..{len(self.tower)} (tower depth), got {self.adapter_layers}"
                )

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        tower = scale_widths(config.tower, width)
        hyper = scale_widths(config.hyper, width)
        (k,) = scale_widths((config.k,), width)
        (r,) = scale_widths((config.bottleneck,), width)
        self.k = k
        self.hyper = nn.Sequential(MLP(inputs.input_dim, hyper), nn.Linear(hyper[-1], k * k))
        n_dom = inputs.num_domains
        self.towers = nn.ModuleList(
            MLP(inputs.input_dim, tower, batchnorm=True, dropout=config.dropout) for _ in range(n_dom)
        )
        self.heads = nn.ModuleList(nn.Linear(tower[-1], 1) for _ in range(n_dom))
        # index of the hidden layers followed by an adapter (the last ``adapter_layers``)
        self.adapted = tuple(range(len(tower) - config.adapter_layers, len(tower)))
        n_sets = n_dom if config.adapter_per_domain else 1
        self.adapters = nn.ModuleList(
            nn.ModuleList(
                HyperAdapter(tower[i], k, r, norm=config.adapter_norm, init=config.adapter_init)
                for i in self.adapted
            )
            for _ in range(n_sets)
        )
        # each hidden layer of an MLP is (Linear, BN, ReLU[, Dropout]); group the modules per layer
        self.per_layer = 3 + (config.dropout > 0)

    def _tower(self, d: int):
        tower = self.towers[d]
        adapters = self.adapters[d if self.config.adapter_per_domain else 0]
        head = self.heads[d]
        layers = list(tower)
        n_layers = len(layers) // self.per_layer

        def apply(x: torch.Tensor) -> torch.Tensor:  # x [n, F] → [n, 1]
            hyper = self.hyper(x).view(-1, self.k, self.k)  # shared network, run once per row
            h = x
            a = 0
            for i in range(n_layers):
                for m in layers[i * self.per_layer : (i + 1) * self.per_layer]:
                    h = m(h)
                if i in self.adapted:
                    h = adapters[a](h, hyper)
                    a += 1
            return head(h)

        return apply

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        experts = [self._tower(d) for d in range(self.inputs.num_domains)]
        return route(x, batch.domain, experts, 1).squeeze(-1)
