"""HAMUR (Li et al. 2023): per-domain towers with a hyper-network-generated adapter (DESIGN.md §3).

* **Towers**: one per domain, built from named blocks ``layer1``, ``layer2``, … (each Linear–BN–ReLU
  [–Dropout]) and a ``head``. At eval a tower always runs on its own domain's rows only (routed: serving cost
  does not grow with the number of domains, and the counted FLOPs are the served ones). What the towers' batch
  norms see in training is ``tower_batch``:

  - ``"masked"`` runs every tower on the whole batch, as the authors' code does, so its BatchNorms normalise with
    every row's statistics and keep the whole population's running statistics; each row's loss reads its own
    domain's output (n_domains × the towers' training FLOPs; H(x) is computed once for all towers);
  - ``"sampled"`` (default) gets the same statistics at nearly the routed cost: tower d runs on its own rows plus
    the other domains' rows of one random sample of the batch (``stats_sample`` rows, 256), weighted so that
    the statistics estimate the whole batch's (exactly the masked ones when the sample is the whole batch);
  - ``"routed"``: each tower trains on its own domain's rows only, so its BatchNorms normalise with its domain's
    statistics (≈ 0.005 validation AUC behind the other two on ML-1M).

  Eval-mode BatchNorms use running statistics, so routing a row at eval scores it exactly as the masked
  computation would.
* **Hyper-network** (shared): Linear–BN–ReLU on every layer, as in the authors' code (default hidden (64,)),
  over the full input embedding; its last block outputs the instance matrix H(x) ∈ R^{k×k} (k = 35).
  ``hyper_output_block=False`` ends it with a bare Linear instead. ``hyper_domain=True`` also feeds it an
  embedding of the row's routing domain (the paper's input; the public code's domain id never reaches it).
* **Adapter** hooked by block name after the last ``adapter_layers`` blocks, on a hidden vector h ∈ R^d:
  s = σ(h·W_down + b₁),  W_down = U₁·H(x)·V₁ (d → r, r = 32);  u = s·W_up + b₂,  W_up = U₂·H(x)·V₂ (r → d);
  out = h + norm(u), the norm with learnable scale/shift (b₂ only where the norm does not cancel it, i.e. not
  before a batch norm). ``model.adapter_mode`` = ``"off"`` / ``"constant"`` (H = 0) ablates the adapter at
  eval (``benchmarks/hamur_adapter.py``). The per-sample matrices are never materialised:
  h·U₁·H·V₁ is evaluated right to left as ((h @ U₁) ⊙bmm H) @ V₁, i.e. two shared GEMMs and one
  [n, 1, k] × [n, k, k] batched product per row instead of a d × r matrix per row.
* ``adapter_layers=0`` is the adapter-off ablation as an entry of its own (``hamur[adapter_layers=0]`` in a
  grid): the same towers trained without adapter or hyper-network, so its FLOPs are the towers' alone.
* ``adapter_per_domain`` (default True) gives each tower its own U, V, biases and norm (the paper's reading;
  the public code shares one adapter).
* ``adapter_norm``: ``"layer"`` (default, chosen on validation) normalises each row over its d features;
  ``"batch"`` normalises with the batch's statistics in training, like the public code, but with running
  statistics at eval, so a row's score never depends on the other rows of a test batch; ``"none"`` keeps
  the learnable scale/shift only. ``adapter_scale`` is the initial scale γ (default 0.01, chosen on validation
  AUC over 5 seeds against 0.1 and 0.03: docs/benchmarks.md; the adapter starts close to the identity, so its
  random initial output does not drown the tower's signal; the authors use 1).

**Initialisation.** ``adapter_init="ones"`` is the authors' setting (U, V = ones). At real sizes it saturates
the sigmoid: h·U₁ sums all d units into every one of the k entries, H multiplies by a sum over k, V₁ by another,
so the pre-sigmoid values are in the thousands, every bottleneck unit is saturated and all r units are
identical (zero gradient for U₁, V₁). ``"scaled"`` (default) draws U, V from N(0, σ²) with σ chosen so that
the pre-activations keep unit variance through the product x·U·H·V, given that h and H are BN–ReLU outputs
(second moment ≈ ½): the bottleneck starts in the sigmoid's responsive range. ``"normal"`` is N(0, 1/fan-in) for
every factor (a generic init that ignores H's scale).

One-row groups in training: the BatchNorms fall back to running statistics
(:class:`~mdctr.models.base.BatchNorm1d`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from mdctr.blocks import weighted_statistics
from mdctr.data.tensors import Batch
from mdctr.models.base import BatchNorm1d, CTRModel, ModelInputs, register, route, scale_widths

ADAPTER_NORMS = ("batch", "layer", "none")
ADAPTER_INITS = ("scaled", "ones", "normal")
ADAPTER_MODES = ("on", "off", "constant")
TOWER_BATCHES = ("routed", "masked", "sampled")


def layer_block(in_dim: int, out_dim: int, *, dropout: float = 0.0) -> nn.Sequential:
    """One named block: ``linear`` → ``norm`` (BatchNorm) → ``act`` (ReLU) [→ ``dropout``]. [n, in] → [n, out]."""
    parts: OrderedDict[str, nn.Module] = OrderedDict(
        linear=nn.Linear(in_dim, out_dim), norm=BatchNorm1d(out_dim), act=nn.ReLU()
    )
    if dropout > 0:
        parts["dropout"] = nn.Dropout(dropout)
    return nn.Sequential(parts)


class HyperNetwork(nn.Sequential):
    """Shared hyper-network: [n, F] → H [n, k, k]; Linear–BN–ReLU on every layer (the authors' code).

    With ``output_block=False`` the last layer is a bare Linear (H may be negative and unnormalised).
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], k: int, *, output_block: bool = True):
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        for i, h in enumerate(hidden, start=1):
            blocks[f"layer{i}"] = layer_block(in_dim, h)
            in_dim = h
        blocks["out"] = layer_block(in_dim, k * k) if output_block else nn.Linear(in_dim, k * k)
        super().__init__(blocks)
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).view(-1, self.k, self.k)


class HyperAdapter(nn.Module):
    """Adapter whose weights are built per sample from the instance matrix H.

    forward(h [n, d], H [n, k, k]) → [n, d] = h + norm(σ(h U₁ H V₁ + b₁) U₂ H V₂ + b₂).
    ``pre_activation`` holds the last forward's pre-sigmoid values [n, r] (for diagnostics and tests).
    """

    def __init__(
        self,
        dim: int,
        k: int,
        bottleneck: int,
        *,
        norm: str = "batch",
        init: str = "scaled",
        scale: float = 1.0,
    ):
        super().__init__()
        if norm not in ADAPTER_NORMS:
            raise ValueError(f"hamur: adapter_norm must be one of {ADAPTER_NORMS}, got {norm!r}")
        if init not in ADAPTER_INITS:
            raise ValueError(f"hamur: adapter_init must be one of {ADAPTER_INITS}, got {init!r}")
        # "scaled": unit-variance pre-activations through x·U·H·V. The input h is a BN–ReLU output
        # (E[h²] ≈ ½), so U₁ ~ √(2/d) gives var(h·U₁) ≈ 1; H is a BN–ReLU output too (E[H²] ≈ ½), so a
        # sum over k entries has var ≈ k/2 and V ~ √2/k brings the k-sum after it back to 1. The sigmoid
        # output s has E[s²] ≈ ¼, hence U₂ ~ 2/√r.
        stds = {
            "scaled": {"u1": (2 / dim) ** 0.5, "v1": 2**0.5 / k, "u2": 2 / bottleneck**0.5, "v2": 2**0.5 / k},
            "normal": {"u1": dim**-0.5, "v1": k**-0.5, "u2": bottleneck**-0.5, "v2": k**-0.5},
        }
        shapes = {"u1": (dim, k), "v1": (k, bottleneck), "u2": (bottleneck, k), "v2": (k, dim)}
        for name, shape in shapes.items():
            p = torch.ones(shape) if init == "ones" else torch.randn(shape) * stds[init][name]
            setattr(self, name, nn.Parameter(p))
        self.b1 = nn.Parameter(torch.zeros(bottleneck))
        # the up-projection's bias (the authors' b₂) would be cancelled exactly by a batch norm's centring,
        # so it exists only where the norm keeps it: there the norm's own shift plays its part
        self.b2 = None if norm == "batch" else nn.Parameter(torch.zeros(dim))
        if norm == "batch":
            self.norm: nn.Module = BatchNorm1d(dim)
        elif norm == "layer":
            self.norm = nn.LayerNorm(dim)
        else:
            self.norm = _ScaleShift(dim)
        with torch.no_grad():  # the norm's scale γ: 1 as in the authors' code; small starts near identity
            self.norm.weight.fill_(scale)
        self.pre_activation: torch.Tensor | None = None

    @staticmethod
    def _lowrank(x: torch.Tensor, u: torch.Tensor, hyper: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """x [n, a] · U [a, k] · H [n, k, k] · V [k, b] → [n, b], right-to-left without per-row a×b."""
        return torch.bmm((x @ u).unsqueeze(1), hyper).squeeze(1) @ v

    def delta(self, h: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """The adapter's residual branch norm(u) [n, d] (what it adds to h)."""
        pre = self._lowrank(h, self.u1, hyper, self.v1) + self.b1  # [n, r]
        self.pre_activation = pre.detach()
        up = self._lowrank(torch.sigmoid(pre), self.u2, hyper, self.v2)  # [n, d]
        if self.b2 is not None:
            up = up + self.b2
        return self.norm(up)

    def forward(self, h: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        return h + self.delta(h, hyper)


class _ScaleShift(nn.Module):
    """Learnable per-feature scale and shift, no normalisation. [n, d] → [n, d]."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


class HamurTower(nn.Module):
    """One domain's tower: named blocks ``layer1..layerN`` then ``head``. [n, F] → [n, 1].

    forward(x, hyper, adapters) applies ``adapters[name]`` right after the block called ``name``.
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], *, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleDict()
        for i, h in enumerate(hidden, start=1):
            self.blocks[f"layer{i}"] = layer_block(in_dim, h, dropout=dropout)
            in_dim = h
        self.head = nn.Linear(in_dim, 1)

    def hidden(
        self, x: torch.Tensor, hyper: torch.Tensor, adapters: nn.ModuleDict, keep: int | None = None
    ) -> torch.Tensor:
        """Last hidden vector [n, hidden[-1]] with the adapters applied.

        ``keep``: only the first ``keep`` rows leave the last block (the others were there for the blocks' batch
        statistics only), so the last block's adapter and the head run on those rows, and ``hyper`` may hold
        just them."""
        unknown = set(adapters) - set(self.blocks)
        if unknown:
            raise KeyError(f"hamur: adapters name blocks the tower lacks: {sorted(unknown)}")
        last = next(reversed(self.blocks.keys()))
        for name, block in self.blocks.items():
            x = block(x)
            if name == last and keep is not None:
                x, hyper = x[:keep], hyper[:keep]
            if name in adapters:
                x = adapters[name](x, hyper)
        return x

    def forward(self, x: torch.Tensor, hyper: torch.Tensor, adapters: nn.ModuleDict) -> torch.Tensor:
        return self.head(self.hidden(x, hyper, adapters))


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
        # defaults chosen on validation AUC (docs/benchmarks.md, "HAMUR quality"); the authors' code has
        # adapter_norm="batch" (batch statistics at eval too), adapter_init="ones", adapter_scale=1
        adapter_norm: str = "layer"
        adapter_init: str = "scaled"
        hyper_output_block: bool = True
        adapter_scale: float = 0.01
        #: the paper feeds the domain id to the hyper-network: an embedding of the routing domain (dim E) is
        #: concatenated to the input embedding before H(x) is computed (default False: the input alone)
        hyper_domain: bool = False
        dropout: float = 0.0
        #: training only (eval always routes; see the module docstring): ``"sampled"`` (default: validation AUC
        #: 0.8005 against 0.8001 for ``"masked"`` over 5 seeds on ML-1M with hand-crafted domains, at about the
        #: routed cost; docs/benchmarks.md), ``"masked"`` (the authors' computation) or ``"routed"``
        tower_batch: str = "sampled"
        #: ``tower_batch="sampled"``: how many rows of the batch, drawn afresh each step, every tower also runs
        #: on so that its BatchNorms can estimate the whole batch's statistics (its own rows + the weighted
        #: sample of the others' rows); the loss still reads each row's own tower only
        stats_sample: int = 256

        def __post_init__(self) -> None:
            if self.adapter_norm not in ADAPTER_NORMS:
                raise ValueError(
                    f"hamur: adapter_norm must be one of {ADAPTER_NORMS}, got {self.adapter_norm!r}"
                )
            if self.adapter_init not in ADAPTER_INITS:
                raise ValueError(
                    f"hamur: adapter_init must be one of {ADAPTER_INITS}, got {self.adapter_init!r}"
                )
            if self.tower_batch not in TOWER_BATCHES:
                raise ValueError(
                    f"hamur: tower_batch must be one of {TOWER_BATCHES}, got {self.tower_batch!r}"
                )
            if not 0 <= self.adapter_layers <= len(self.tower):
                raise ValueError(
                    f"hamur: adapter_layers must be in 0..{len(self.tower)} (tower depth), got {self.adapter_layers}"
                )

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        tower = scale_widths(config.tower, width)
        hyper = scale_widths(config.hyper, width)
        (k,) = scale_widths((config.k,), width)
        (r,) = scale_widths((config.bottleneck,), width)
        self.k = k
        # adapter_layers=0 is the adapter-off ablation trained as its own entry: the same towers with no adapter
        # and no hyper-network, so it costs exactly their FLOPs (not built at all: no idle parameters)
        hyper_in = inputs.input_dim + (inputs.embed_dim if config.hyper_domain else 0)
        self.hyper = (
            HyperNetwork(hyper_in, hyper, k, output_block=config.hyper_output_block)
            if config.adapter_layers
            else None
        )
        self.hyper_domain_embedding = (
            nn.Embedding(inputs.num_domains, inputs.embed_dim)
            if config.hyper_domain and config.adapter_layers
            else None
        )
        n_dom = inputs.num_domains
        self.towers = nn.ModuleList(
            HamurTower(inputs.input_dim, tower, dropout=config.dropout) for _ in range(n_dom)
        )
        # the blocks followed by an adapter (the last ``adapter_layers``), by name
        names = list(self.towers[0].blocks)
        self.adapted = tuple(names[len(names) - config.adapter_layers :])
        dims = dict(zip(names, tower, strict=True))
        n_sets = n_dom if config.adapter_per_domain else 1
        self.adapters = nn.ModuleList(
            nn.ModuleDict(
                {
                    name: HyperAdapter(
                        dims[name],
                        k,
                        r,
                        norm=config.adapter_norm,
                        init=config.adapter_init,
                        scale=config.adapter_scale,
                    )
                    for name in self.adapted
                }
            )
            for _ in range(n_sets)
        )
        #: ablation switch (see :data:`ADAPTER_MODES`): ``"on"``; ``"off"`` drops the adapters' residual
        #: branch; ``"constant"`` feeds H = 0, so each adapter adds the same vector to every row
        self.adapter_mode = "on"

    def domain_adapters(self, d: int) -> nn.ModuleDict:
        """The adapters hooked into domain ``d``'s tower (empty when ``adapter_mode`` is ``"off"``)."""
        if self.adapter_mode not in ADAPTER_MODES:
            raise ValueError(f"hamur: adapter_mode must be one of {ADAPTER_MODES}, got {self.adapter_mode!r}")
        if self.adapter_mode == "off" or self.hyper is None:
            return nn.ModuleDict()
        return self.adapters[d if self.config.adapter_per_domain else 0]

    def _hyper(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """H(x) [n, k, k] for rows x [n, F] of routing domains ``domain`` [n] (zeros when ``adapter_mode`` is
        ``"constant"``)."""
        if self.hyper_domain_embedding is not None:
            x = torch.cat([x, self.hyper_domain_embedding(domain)], dim=1)
        hyper = self.hyper(x)
        return torch.zeros_like(hyper) if self.adapter_mode == "constant" else hyper

    def _tower(self, d: int, x: torch.Tensor, hyper: torch.Tensor | None = None) -> torch.Tensor:
        """Domain ``d``'s tower on rows x [n, F] → [n, 1]; ``hyper`` is H of those rows, computed here if None."""
        adapters = self.domain_adapters(d)
        if not len(adapters):
            return self.towers[d](x, x.new_empty(0), adapters)
        if hyper is None:
            hyper = self._hyper(x, torch.full((x.shape[0],), d, dtype=torch.long, device=x.device))
        return self.towers[d](x, hyper, adapters)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        n_dom = self.inputs.num_domains
        if self.config.tower_batch == "sampled" and self.training and n_dom > 1:
            return self._sampled_towers(x, batch.domain)
        if self.config.tower_batch == "masked" and self.training and n_dom > 1:
            # every tower reads the same rows, so H(x) is computed once for all of them, as in the authors' code
            hyper = None if self.adapter_mode == "off" or self.hyper is None else self._hyper(x, batch.domain)
            every = torch.cat([self._tower(d, x, hyper) for d in range(n_dom)], dim=1)  # [B, n_domains]
            return every.gather(1, batch.domain.unsqueeze(1)).squeeze(1)
        return route(x, batch.domain, [partial(self._tower, d) for d in range(n_dom)], 1).squeeze(-1)

    def _sampled_towers(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """Training with the masked towers' statistics at nearly the routed cost: tower d runs on its own rows
        plus the rows of other domains in one random sample S of the batch (``stats_sample`` rows), and its
        BatchNorms weight those rows so that the statistics estimate the whole batch's: each own row 1/B, each
        sampled row of another domain (B − n_d) / (B · |S ∖ d|). The sampled rows leave the tower after its
        last block (they only feed its statistics), unless an adapter needs them before that (an adapter inside
        the tower, or one with batch statistics). x [B, F], domain [B] → logits [B]."""
        rows = x.shape[0]
        order = torch.argsort(domain, stable=True)
        x, domain = x.index_select(0, order), domain.index_select(0, order)  # each domain's rows contiguous
        hyper = None if self.adapter_mode == "off" or self.hyper is None else self._hyper(x, domain)
        if rows <= self.config.stats_sample:  # the whole batch: exactly the masked statistics, no random draw
            sample = torch.arange(rows, device=x.device)
        else:
            sample = torch.randperm(rows, device=x.device)[: self.config.stats_sample]
        sample_domain = domain.index_select(0, sample)
        counts = torch.bincount(domain, minlength=self.inputs.num_domains).tolist()
        sample_needs_adapter = len(self.adapted) > 1 or self.config.adapter_norm == "batch"
        # one split per tensor (its backward is one concatenation), not a slice per domain (each slice's backward
        # would write into a zero-filled gradient of the whole batch)
        x_own = x.split(counts)
        hyper_own = [None] * len(counts) if hyper is None else hyper.split(counts)
        out = []
        for d, n_own in enumerate(counts):
            others = sample[sample_domain != d]
            if not n_own:
                # as the masked towers do, the running statistics still see this batch (no loss reads it)
                self._update_statistics(d, x, hyper, others, rows)
                continue
            if n_own + len(others) == 1:
                # one row has no statistics: BatchNorm1d's running-statistics fallback
                out.append(self._tower(d, x_own[d], hyper_own[d]))
                continue
            weight = x.new_full((n_own + len(others),), 1.0 / rows)
            if len(others):
                weight[n_own:] = (rows - n_own) / (rows * len(others))
            else:  # no other domain's row in the sample: the own rows' statistics
                weight.fill_(1.0 / n_own)
            if hyper is None:
                tower_hyper = x.new_empty(0)
            elif sample_needs_adapter:
                tower_hyper = torch.cat([hyper_own[d], hyper.index_select(0, others)])
            else:
                tower_hyper = hyper_own[d]
            adapters = self.domain_adapters(d)
            with weighted_statistics(weight, rows, self.towers[d], adapters):
                h = self.towers[d].hidden(
                    torch.cat([x_own[d], x.index_select(0, others)]),
                    tower_hyper,
                    adapters,
                    keep=None if sample_needs_adapter else n_own,
                )
            out.append(self.towers[d].head(h[:n_own]))
        return torch.empty_like(domain, dtype=x.dtype).index_copy_(0, order, torch.cat(out).squeeze(1))

    @torch.no_grad()
    def _update_statistics(
        self, d: int, x: torch.Tensor, hyper: torch.Tensor | None, sample: torch.Tensor, rows: int
    ) -> None:
        """Tower ``d`` has no row in this batch: run it on the sample alone (equal weights: a uniform sample of the
        batch) so that its BatchNorms' running statistics move as the masked towers' do; nothing is returned."""
        if len(sample) < 2:
            return
        tower_hyper = x.new_empty(0) if hyper is None else hyper.index_select(0, sample)
        adapters = self.domain_adapters(d)
        with weighted_statistics(
            x.new_full((len(sample),), 1.0 / len(sample)), rows, self.towers[d], adapters
        ):
            self.towers[d].hidden(x.index_select(0, sample), tower_hyper, adapters)
