"""Domain sources: which routing domain a model sees, where its miner sits, and what serving must keep.

Every domain source is handled here and nowhere else:

* ``handcrafted``: the dataset's own domain id;
* ``none``: one domain for every row;
* the **control sources** ``random`` (a stable hash of the user id into ``buckets`` domains) and ``binned``
  (quantile bins of one feature, fitted on train): what mined domains must beat before they can be called
  useful (see :class:`ControlState`);
* ``mined`` by an **external miner** (a pre-trained :class:`~mdctr.domains.miner.DomainMiner` routes the rows
  from outside the model; its forward is part of serving, so its FLOPs are counted beside the model's and it
  is saved with the serving bundle);
* ``mined`` by **the model itself** (a model whose ``mines_domains`` is true picks its codes inside forward,
  either with its own VQ-VAE or with a pre-trained miner it holds — :meth:`CTRModel.holds_miner` — which is
  attached when the model is built; either way the routing column is unused, the FLOPs are the model's and
  nothing beside the model is saved);
* ``mined-joint``: any model that accepts ``mined`` (and does not mine by itself) wrapped in
  :class:`~mdctr.routing.joint.JointMined`, a VQ-VAE over the model's own embedding trained with it; the codes
  are computed inside the wrapper's forward, so, as for a self-mining model, the routing column is unused, the
  FLOPs are the wrapper's and nothing beside it is saved.

:class:`DomainRouting` is the one object the budget fitting, the benchmark, the trainer, the train step and
serving ask. The routing domain lives in ``TensorData.domain``; the hand-crafted id stays in
``TensorData.handcrafted`` whatever the source, so per-domain metrics never change meaning.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mdctr.data.prepare import PreparedData
from mdctr.data.tensors import Batch, TensorData
from mdctr.models.base import DOMAIN_SOURCES, CTRModel, ModelInputs, build_model, model_class, model_config
from mdctr.routing.flops import flops_per_sample
from mdctr.routing.joint import JOINT_SOURCE, JointMined, split_overrides

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
CONTROL_SOURCES = ("random", "binned")
#: default number of control domains (the miner's default codebook size, so controls match mined domains)
CONTROL_DOMAINS = 4
#: Knuth's multiplicative hash constant: a fixed, process-independent scramble of the user index
_HASH_MULTIPLIER = 2654435761


class DomainSourceError(ValueError):
    """A model was asked to route by a domain source it does not accept, or the source lacks its input."""


def check_domain_source(model_name: str, source: str) -> None:
    """Raise :class:`DomainSourceError` unless ``model_name`` accepts ``source``."""
    _check_known(source)
    accepted = tuple(model_class(model_name).domain_sources)
    if source not in accepted:
        raise DomainSourceError(
            f"model {model_name!r} does not accept domain source {source!r}; it accepts {list(accepted)}"
        )


def _check_known(source: str) -> None:
    if source not in DOMAIN_SOURCES:
        raise DomainSourceError(f"unknown domain source {source!r}; expected one of {list(DOMAIN_SOURCES)}")


def build_routed(
    model_name: str,
    source: str,
    inputs: ModelInputs,
    *,
    width: float = 1.0,
    config: dict[str, Any] | None = None,
) -> CTRModel:
    """The model as ``source`` runs it: for ``mined-joint`` the registered model built for the joint miner's
    codes and wrapped in :class:`~mdctr.routing.joint.JointMined` (``config`` may hold the miner's settings
    under ``"mined_joint"``); for any other source the registered model itself. No pre-trained miner is
    attached (see :meth:`DomainRouting.build`). Serving rebuilds a bundle's model with this."""
    if source != JOINT_SOURCE:
        return build_model(model_name, inputs, width=width, config=config)
    inner_config, joint = split_overrides(config)
    inner = build_model(model_name, inputs, width=width, config=inner_config)
    return JointMined(inner, joint, width)


def check_routed_config(model_name: str, source: str, overrides: dict[str, Any] | None) -> None:
    """Raise (:class:`~mdctr.config.ConfigError`, ``TypeError``, ``ValueError``) unless ``overrides`` are a
    valid config of ``model_name`` routed by ``source`` (``mined-joint``: plus the joint miner's settings)."""
    if source == JOINT_SOURCE:
        overrides = split_overrides(overrides)[0]
    model_config(model_name, overrides)


def mines_own_domains(model_name: str) -> bool:
    """True for models that pick their routing domain inside forward (``CTRModel.mines_domains``)."""
    return model_class(model_name).mines_domains


def model_inputs(prepared: PreparedData, num_domains: int, embed_dim: int = 16) -> ModelInputs:
    """:class:`ModelInputs` of prepared data with ``num_domains`` routing domains."""
    spec = prepared.spec
    return ModelInputs(tuple(spec.vocab_sizes), spec.num_dense, num_domains, embed_dim)


@dataclass(frozen=True)
class Routed:
    """Prepared data routed by one source.

    Attributes:
        data: the splits, each ``domain`` column holding the routing domain.
        num_domains: number of routing domains the model is built for.
        inputs: :class:`ModelInputs` with that number of domains.
        control: the fitted control source (``random``/``binned``), which serving must keep; else None.
    """

    data: PreparedData
    num_domains: int
    inputs: ModelInputs
    control: ControlState | None = None


@dataclass(frozen=True)
class ControlState:
    """A fitted control source: everything needed to give any row (training or serving) its domain.

    Attributes:
        source: ``random`` or ``binned``.
        column: the user-id column (``random``) or the binned feature (``binned``): a dense feature, or, for
            data without dense features, a sparse one whose ids are binned by their train frequency.
        num_domains: number of routing domains.
        edges: ``binned`` only: bin edges in the binned value's units (a dense feature's encoded, standardised
            units; an id's train row count); a value v falls in bin ``#{e ∈ edges : e ≤ v}``.
        counts: ``binned`` by a sparse feature only: train rows per encoded id (ids beyond it count 0).
    """

    source: str
    column: str
    num_domains: int
    edges: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()

    @classmethod
    def fit(
        cls,
        source: str,
        prepared: PreparedData,
        *,
        buckets: int = CONTROL_DOMAINS,
        feature: str | None = None,
    ) -> ControlState:
        """``random``: ``buckets`` hash buckets of ``schema.user`` (or of the first sparse feature when the data
        have no user column). ``binned``: ``buckets`` quantile bins of ``feature`` on the train split (default:
        the first dense feature; for data without dense features, the user column's per-id train row count,
        i.e. user activity); tied quantiles merge bins."""
        schema = prepared.spec.schema
        if buckets < 1:
            raise DomainSourceError(f"control source {source!r}: buckets must be >= 1, got {buckets}")
        if source == "random":
            # the user id; data without one (e.g. synthetic) hash their first sparse feature instead
            column = (
                schema.user if schema.user in schema.sparse else (schema.sparse[0] if schema.sparse else None)
            )
            if column is None:
                raise DomainSourceError(
                    f"domain source 'random' needs a sparse column; {schema.name} has none"
                )
            return cls("random", column, buckets)
        if source != "binned":
            raise DomainSourceError(
                f"{source!r} is not a control source; expected one of {list(CONTROL_SOURCES)}"
            )
        # default: the first dense feature; data without one bin their users (else first sparse column) by
        # activity, the train row count of each id
        fallback = (
            schema.user if schema.user in schema.sparse else (schema.sparse[0] if schema.sparse else None)
        )
        feature = feature or (schema.dense[0] if schema.dense else fallback)
        counts: tuple[int, ...] = ()
        if feature in schema.dense:
            values = prepared.train.dense[:, schema.dense.index(feature)].to(torch.float64)
        elif feature in schema.sparse:
            ids = prepared.train.sparse[:, schema.sparse.index(feature)].to(torch.int64)
            per_id = torch.bincount(ids)
            counts = tuple(int(c) for c in per_id.tolist())
            values = per_id[ids].to(torch.float64)
        else:
            raise DomainSourceError(
                f"domain source 'binned': no feature {feature!r} to bin in {schema.name}; dense features: "
                f"{list(schema.dense)}, sparse features: {list(schema.sparse)}"
            )
        qs = torch.linspace(0, 1, buckets + 1, dtype=torch.float64)[1:-1]
        edges = torch.unique(torch.quantile(values, qs)) if buckets > 1 else values.new_empty(0)
        return cls("binned", feature, len(edges) + 1, tuple(float(e) for e in edges), counts)

    def assign(self, data: TensorData, schema: Any) -> torch.Tensor:
        """Domain of every row of ``data`` (encoded with ``schema``'s feature spec) → [N] int64."""
        if self.source == "random":
            user = data.sparse[:, schema.sparse.index(self.column)].to(torch.int64)
            return (user * _HASH_MULTIPLIER) % (2**32) % self.num_domains
        if self.counts:  # a sparse feature, binned by its ids' train frequency (unseen ids count 0)
            ids = data.sparse[:, schema.sparse.index(self.column)].to(torch.int64)
            counts = torch.tensor(self.counts, dtype=torch.float64)
            seen = ids < len(counts)
            values = torch.where(
                seen, counts[ids.clamp(max=len(counts) - 1)], torch.zeros((), dtype=torch.float64)
            )
        else:
            values = data.dense[:, schema.dense.index(self.column)].to(torch.float64).contiguous()
        edges = torch.tensor(self.edges, dtype=torch.float64)
        return torch.bucketize(values, edges, right=True).to(torch.int64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (what a serving bundle saves)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ControlState:
        return cls(
            d["source"],
            d["column"],
            int(d["num_domains"]),
            tuple(float(e) for e in d.get("edges", ())),
            tuple(int(c) for c in d.get("counts", ())),
        )


@dataclass(frozen=True)
class DomainRouting:
    """How one model (or, without ``model_name``, any model) is routed by one domain source.

    Attributes:
        source: one of :data:`~mdctr.models.base.DOMAIN_SOURCES`.
        model_name: the registered model, or None when routing data for no particular model.
        model_overrides: the model's config overrides (they decide, e.g., whether it holds a miner).
        miner: the fitted pre-trained miner for ``mined`` (None for other sources and for a model that
            mines with its own VQ-VAE).
        buckets: number of domains of a control source (``random`` buckets, ``binned`` quantile bins).
        bin_feature: the feature ``binned`` bins (default: the first dense feature, else user activity).
    """

    source: str
    model_name: str | None = None
    model_overrides: dict[str, Any] | None = None
    miner: nn.Module | None = None
    buckets: int = CONTROL_DOMAINS
    bin_feature: str | None = None

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def for_model(
        cls,
        model_name: str,
        source: str,
        *,
        miner: nn.Module | None = None,
        model_overrides: dict[str, Any] | None = None,
        buckets: int = CONTROL_DOMAINS,
        bin_feature: str | None = None,
    ) -> DomainRouting:
        """Routing of ``model_name`` by ``source`` (which the model must accept); ``miner`` is kept only for
        ``mined``, and only if the model needs it (see :meth:`needs_miner`)."""
        check_domain_source(model_name, source)
        routing = cls(source, model_name, dict(model_overrides or {}) or None, None, buckets, bin_feature)
        return dataclasses.replace(routing, miner=miner) if routing.needs_miner else routing

    @classmethod
    def for_source(cls, source: str, *, miner: nn.Module | None = None) -> DomainRouting:
        """Routing by ``source`` for no particular model (e.g. to count a budget model's FLOPs)."""
        _check_known(source)
        return cls(source, miner=miner if source == "mined" else None)

    # -- what the source needs ------------------------------------------------------------------------------
    @property
    def mines_inside(self) -> bool:
        """The model picks its own codes in forward (own VQ-VAE or a held miner, or the ``mined-joint``
        wrapper's VQ-VAE)."""
        if self.source == JOINT_SOURCE:
            return True
        return self.model_name is not None and mines_own_domains(self.model_name)

    @property
    def holds_miner(self) -> bool:
        """The model carries the pre-trained miner inside (attached at build time)."""
        if self.model_name is None or self.source == JOINT_SOURCE:
            return False
        cls = model_class(self.model_name)
        return cls.holds_miner(model_config(self.model_name, self.model_overrides))

    @property
    def needs_miner(self) -> bool:
        """A fitted pre-trained miner is needed: ``mined`` routed from outside, or held inside the model."""
        return self.source == "mined" and (not self.mines_inside or self.holds_miner)

    @property
    def external_miner(self) -> nn.Module | None:
        """The miner that routes rows from outside the model: counted beside it and saved for serving."""
        return None if self.mines_inside else self.miner

    # -- what domain does each row have ---------------------------------------------------------------------
    def route(self, prepared: PreparedData) -> Routed:
        """Every split routed by the source; the model is built for ``Routed.num_domains`` domains."""
        control = self.fit_control(prepared)
        num = control.num_domains if control is not None else self.num_domains(prepared)
        schema = prepared.spec.schema

        def domains(split: TensorData) -> torch.Tensor:
            return control.assign(split, schema) if control is not None else self.domains(split)

        routed = {k: prepared.split(k).with_domain(domains(prepared.split(k))) for k in SPLITS}
        data = dataclasses.replace(prepared, **routed)
        if control is not None or (self.source == "mined" and self.external_miner is not None):
            sizes = torch.bincount(data.train.domain, minlength=num).tolist()
            log.info("routing by %d %s domains; train rows per domain %s", num, self.source, sizes)
        return Routed(data=data, num_domains=num, inputs=model_inputs(prepared, num), control=control)

    def fit_control(self, prepared: PreparedData) -> ControlState | None:
        """The fitted control source (``random``/``binned``) on ``prepared``'s train split, else None."""
        if self.source not in CONTROL_SOURCES:
            return None
        return ControlState.fit(self.source, prepared, buckets=self.buckets, feature=self.bin_feature)

    def num_domains(self, prepared: PreparedData) -> int:
        """Number of routing domains the model is built for."""
        if self.source in CONTROL_SOURCES:
            return self.fit_control(prepared).num_domains  # type: ignore[union-attr]
        if self.source == "handcrafted":
            return prepared.spec.schema.num_domains
        if self.source == "mined" and self.external_miner is not None:
            return int(self.external_miner.num_codes)
        if self.source == JOINT_SOURCE:  # the inner model gets one domain per code of the joint miner
            return split_overrides(self.model_overrides)[1].num_codes
        return 1

    def domains(self, data: TensorData) -> torch.Tensor:
        """Routing domain of every row of one split → [N] int64 (control sources: see :meth:`route`)."""
        if self.source in CONTROL_SOURCES:
            raise DomainSourceError(f"domain source {self.source!r} is fitted on train: use route(prepared)")
        if self.source == "handcrafted":
            return data.handcrafted
        if self.source == "mined" and self.external_miner is not None:
            return self.external_miner.assign(data)
        if self.source == "mined" and not self.mines_inside:
            raise DomainSourceError(
                "domain source 'mined' needs a fitted miner (mdctr.domains.fit_miner)"
                + (f" for model {self.model_name!r}" if self.model_name else "")
            )
        # none, a model that mines its own domains or mined-joint (the routing column is unused): one domain
        return torch.zeros(len(data), dtype=torch.int64)

    # -- build, cost, serve -----------------------------------------------------------------------------------
    def build(
        self,
        inputs: ModelInputs,
        *,
        width: float = 1.0,
        model_name: str | None = None,
        model_overrides: dict[str, Any] | None = None,
    ) -> CTRModel:
        """Build the model (``model_name``/``model_overrides`` default to the routing's own) and attach the
        pre-trained miner if the model holds one; ``mined-joint``: the model wrapped with its joint miner."""
        name = model_name or self.model_name
        if name is None:
            raise ValueError("DomainRouting.build needs a model name")
        overrides = self.model_overrides if model_overrides is None else model_overrides
        model = build_routed(name, self.source, inputs, width=width, config=overrides)
        if type(model).holds_miner(model.config):
            if self.miner is None:
                raise DomainSourceError(f"model {name!r} holds a pre-trained miner; none was given")
            model.load_miner(self.miner)
        return model

    def flops(self, model: CTRModel, batch: Batch) -> float:
        """Forward FLOPs per sample of serving ``model`` with this routing (an external miner included)."""
        return flops_per_sample(model, batch, miner=self.serving_miner(model))

    def serving_miner(self, model: CTRModel) -> nn.Module | None:
        """What serving ``model`` needs beside its weights to route a row: the external miner, if any (a model
        that mines its own domains carries its miner inside its weights)."""
        return None if type(model).mines_domains else self.miner
