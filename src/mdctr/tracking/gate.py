"""The promotion gate: a pure rule, :func:`judge`, and thin MLflow wrappers around it.

:func:`judge` sees only numbers (a :class:`Scores` per version: overall and per hand-crafted domain metrics, and
which dataset / feature schema the version was trained on) and returns a :class:`GateDecision`; it opens no
store and is tested without MLflow. :func:`gate_scores` fetches those numbers (the version tags written at
registration, or a re-scoring of both versions on the current :class:`ValidationSet`), :func:`decide_promotion`
calls :func:`judge` on them and writes the decision as ``gate.*`` version tags.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mdctr.schema import FeatureSchema
from mdctr.tracking.loading import load_registered
from mdctr.tracking.names import (
    CHAMPION,
    GATE_TAG_PREFIX,
    HIGHER_IS_BETTER,
    KEEP,
    PROMOTE,
    TAG_SCHEMA,
    TAG_SCHEMA_HASH,
)
from mdctr.tracking.registration import alias_version, metric_tags
from mdctr.tracking.setup import client as get_client

log = logging.getLogger(__name__)

#: metrics the gate can re-score on a validation split
RESCORED_METRICS = ("auc", "logloss")


@dataclass(frozen=True)
class Scores:
    """One version's numbers as the gate compares them.

    Attributes:
        version: the registered version (a string, as MLflow returns it).
        overall: metric name → value over all rows (e.g. ``{"auc": 0.71}``).
        domains: hand-crafted domain id → metric name → value.
        schema: (dataset name, feature-schema fingerprint) the version was trained on; ``(None, None)`` when
            unknown. Two versions whose pairs differ are never compared.
    """

    version: str
    overall: Mapping[str, float] = field(default_factory=dict)
    domains: Mapping[int, Mapping[str, float]] = field(default_factory=dict)
    schema: tuple[str | None, str | None] = (None, None)


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the promotion gate for one registered version.

    Attributes:
        promote: whether the challenger should become champion.
        reason: one sentence saying why.
        metric: the compared metric (``auc`` by default); ``tolerance``: allowed per-domain regression.
        version / champion_version: compared versions (champion None when there is none yet).
        challenger / champion: overall metric values ({} for a champion that was not compared).
        domain_deltas: per hand-crafted domain id, challenger − champion in the improving direction
            (positive = better; a value below −tolerance blocks promotion).
    """

    promote: bool
    reason: str
    metric: str
    tolerance: float
    version: str
    champion_version: str | None
    challenger: dict[str, float]
    champion: dict[str, float]
    domain_deltas: dict[int, float] = field(default_factory=dict)

    @property
    def decision(self) -> str:
        """The decision's word (``promote``/``keep``): the same in KFP outputs, version and run tags."""
        return PROMOTE if self.promote else KEEP

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["domain_deltas"] = {str(k): v for k, v in self.domain_deltas.items()}
        return d


# -- the rule (pure) ----------------------------------------------------------------------------------------
def schema_mismatch(challenger: Scores, champion: Scores) -> str | None:
    """Why two versions must not be compared (different dataset or feature schema), or None."""
    for i, what in enumerate(("dataset", "feature schema")):
        mine, theirs = challenger.schema[i], champion.schema[i]
        if mine != theirs:
            return (
                f"refusing to compare: challenger v{challenger.version} and {CHAMPION} v{champion.version} were "
                f"trained on different {what}s ({mine!r} vs {theirs!r})"
            )
    return None


def _compare(
    challenger: Scores, champion: Scores, metric: str, tolerance: float
) -> tuple[bool, str, dict[int, float]]:
    """(promote, reason, per-domain deltas) for a challenger measured against a champion of its own schema."""
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    deltas: dict[int, float] = {}
    for d, vals in sorted(champion.domains.items()):
        if metric in vals:
            mine = challenger.domains.get(d, {}).get(metric)
            deltas[d] = float("-inf") if mine is None else sign * (mine - vals[metric])
    mine, theirs = challenger.overall[metric], champion.overall.get(metric)
    if theirs is None:
        return True, f"{CHAMPION} v{champion.version} has no {metric!r}; challenger replaces it", deltas
    overall_delta = sign * (mine - theirs)
    worst = [d for d, dv in deltas.items() if dv < -tolerance]
    if overall_delta <= 0:
        why = f"overall {metric} {mine:.5f} does not beat {CHAMPION} v{champion.version} ({theirs:.5f})"
        return False, why, deltas
    if worst:
        why = (
            f"overall {metric} improves by {overall_delta:+.5f} but domain(s) {worst} regress beyond "
            f"tolerance {tolerance} (deltas {[round(deltas[d], 5) for d in worst]})"
        )
        return False, why, deltas
    why = (
        f"overall {metric} improves by {overall_delta:+.5f} over v{champion.version} and no domain regresses "
        f"by more than {tolerance}"
    )
    return True, why, deltas


def judge(
    challenger: Scores, champion: Scores | None, metric: str = "auc", tolerance: float = 0.002
) -> GateDecision:
    """Should ``challenger`` replace ``champion`` (None: there is none yet)? Pure: numbers in, decision out.

    Rules, in order: a champion of another dataset or feature schema is never compared (keep); a challenger
    without an overall ``metric`` is kept; no champion yet → promote; the champion itself → keep; a champion
    without ``metric`` → promote. Otherwise promote only if the challenger is strictly better than the champion
    on ``metric`` overall AND on no hand-crafted domain the champion was measured on is it worse by more than
    ``tolerance`` (a domain missing from the challenger counts as a regression). ``auc``/``gauc``/``accuracy``
    are higher-is-better (:data:`mdctr.tracking.names.HIGHER_IS_BETTER`); any other metric lower-is-better.
    """
    version = challenger.version
    rival = champion is not None and champion.version != version
    mismatch = schema_mismatch(challenger, champion) if rival and champion is not None else None
    compared: dict[str, float] = {}
    deltas: dict[int, float] = {}
    if mismatch is not None:
        promote, reason = False, mismatch
    elif metric not in challenger.overall:
        promote, reason = False, f"version {version} has no overall test {metric!r} to compare"
    elif champion is None:
        promote, reason = True, f"no {CHAMPION} yet; version {version} becomes the first"
    elif not rival:
        promote, reason = False, f"version {version} is already the {CHAMPION}"
    else:
        compared = dict(champion.overall)
        promote, reason, deltas = _compare(challenger, champion, metric, tolerance)
    return GateDecision(
        promote=promote,
        reason=reason,
        metric=metric,
        tolerance=tolerance,
        version=version,
        champion_version=champion.version if champion is not None else None,
        challenger=dict(challenger.overall),
        champion=compared,
        domain_deltas=deltas,
    )


# -- the MLflow side ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValidationSet:
    """The current validation split as served: raw rows (``schema.serving_columns``), labels and hand-crafted
    domain ids, and the schema it belongs to. The gate scores champion and challenger on exactly these rows.

    Attributes: ``frame`` [N rows × serving columns]; ``labels`` [N] float 0/1; ``domains`` [N] int ids.
    """

    frame: pd.DataFrame
    labels: np.ndarray
    domains: np.ndarray
    schema: FeatureSchema


def rescore(
    tracking_uri: str | None, name: str, version: str, validation: ValidationSet, metric: str
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """(overall, per hand-crafted domain) ``metric`` of a registered version on ``validation``, predicted by
    the version's own bundle loaded through :func:`mdctr.tracking.loading.load_registered` (the served code,
    nothing from the store executed; an unsafe version raises :class:`UnsafeModelError`)."""
    from sklearn.metrics import log_loss, roc_auc_score

    if metric not in RESCORED_METRICS:
        raise ValueError(f"the gate re-scores {RESCORED_METRICS} on validation, not {metric!r}")
    loaded = load_registered(tracking_uri, name, version)
    probs = np.asarray(loaded.predictor.predict(validation.frame), dtype=np.float64)
    y = validation.labels

    def value(mask: np.ndarray) -> float:
        if len(np.unique(y[mask])) < 2:
            return math.nan
        if metric == "auc":
            return float(roc_auc_score(y[mask], probs[mask]))
        return float(log_loss(y[mask], np.clip(probs[mask], 1e-7, 1 - 1e-7), labels=[0, 1]))

    overall = {metric: value(np.ones(len(y), dtype=bool))}
    per_domain = {}
    for d in range(validation.schema.num_domains):
        v = value(validation.domains == d)
        if math.isfinite(v):
            per_domain[d] = {metric: v}
    return overall, per_domain


def _stored(tracking_uri: str | None, name: str, version: str) -> Scores:
    """A version's stored numbers: its metric tags and its schema tags (nothing loaded)."""
    tags = dict(get_client(tracking_uri).get_model_version(name, version).tags or {})
    overall, domains = metric_tags(tags)
    return Scores(version, overall, domains, (tags.get(TAG_SCHEMA), tags.get(TAG_SCHEMA_HASH)))


def gate_scores(
    tracking_uri: str | None,
    version: str,
    champion_version: str | None,
    *,
    name: str,
    metric: str,
    validation: ValidationSet | None = None,
) -> tuple[Scores, Scores | None]:
    """(challenger, champion) numbers for :func:`judge`: re-scored on ``validation`` when given, else the
    metrics stored on the version tags. Both versions are opened through the safe loader first, scored or not
    (a champion of another schema is opened but not scored), so an unsafe one raises before any decision."""
    challenger = _stored(tracking_uri, name, version)
    champion = _stored(tracking_uri, name, champion_version) if champion_version is not None else None
    rival = champion is not None and champion.version != version
    comparable = rival and champion is not None and schema_mismatch(challenger, champion) is None
    if validation is not None:
        challenger = Scores(
            version, *rescore(tracking_uri, name, version, validation, metric), challenger.schema
        )
    else:
        load_registered(tracking_uri, name, version)
    if rival and champion is not None:
        if comparable and validation is not None:
            scored = rescore(tracking_uri, name, champion.version, validation, metric)
            champion = Scores(champion.version, *scored, champion.schema)
        else:
            load_registered(tracking_uri, name, champion.version)
    return challenger, champion


def write_gate_tags(tracking_uri: str | None, decision: GateDecision, *, name: str, scored_on: str) -> None:
    """The decision and its numbers as ``gate.*`` tags on the challenger version (``gate.decision``,
    ``gate.reason``, ``gate.metric``, ``gate.tolerance``, ``gate.scored_on``, ``gate.champion_version``,
    ``gate.challenger_<metric>``, ``gate.champion_<metric>``, ``gate.delta.domain.<id>``)."""
    metric = decision.metric
    tags = {
        "decision": decision.decision,
        "reason": decision.reason,
        "metric": metric,
        "tolerance": repr(decision.tolerance),
        "scored_on": scored_on,
        "champion_version": decision.champion_version or "",
        f"challenger_{metric}": repr(decision.challenger.get(metric, float("nan"))),
        f"champion_{metric}": repr(decision.champion.get(metric, float("nan"))),
        **{f"delta.domain.{d}": repr(v) for d, v in decision.domain_deltas.items()},
    }
    c = get_client(tracking_uri)
    for k, v in tags.items():
        c.set_model_version_tag(name, decision.version, GATE_TAG_PREFIX + k, v)


def decide_promotion(
    tracking_uri: str | None,
    version: str | int,
    *,
    name: str,
    tolerance: float = 0.002,
    metric: str = "auc",
    validation: ValidationSet | None = None,
) -> GateDecision:
    """Should ``version`` of registered model ``name`` replace that model's champion? :func:`judge` on the
    numbers of :func:`gate_scores`; the decision is written as ``gate.*`` version tags.

    Only versions of one registered model are compared, and each dataset registers under its own model
    (:func:`mdctr.tracking.names.registered_model_name`). With ``validation`` (the current validation split,
    raw rows) both versions are re-scored on those same rows, so the comparison is on validation data of this
    run, never on stale tags; without it the metrics stored on the version tags are compared.

    Either way both versions are opened through :func:`mdctr.tracking.loading.load_registered` (bundle loader,
    weights + JSON): a version whose stored files name another loader module, carry a ``code/`` folder or a
    pickle raises :class:`mdctr.tracking.loading.UnsafeModelError` and no decision is written.
    """
    version = str(version)
    champion_version = alias_version(tracking_uri, CHAMPION, name=name)
    challenger, champion = gate_scores(
        tracking_uri, version, champion_version, name=name, metric=metric, validation=validation
    )
    decision = judge(challenger, champion, metric, tolerance)
    scored_on = f"validation ({len(validation.labels)} rows)" if validation is not None else "version tags"
    write_gate_tags(tracking_uri, decision, name=name, scored_on=scored_on)
    log.info("gate for %s v%s: %s (%s)", name, version, decision.decision, decision.reason)
    return decision
