"""Who serves: the ``champion`` alias, a ``canary`` beside it, and the history of both.

:func:`promote` is the one function that moves ``champion``: the pipeline's promote step, ``mdctr models
promote`` (:func:`promote_version`, with the gate), ``promote --finish`` (:func:`finish_canary`) and
``rollback`` (:func:`rollback_champion`) all end in it, and it always appends the move to the champion history
(registered-model tags ``mdctr.champion_history.<n>``, JSON). A canary (:func:`start_canary`) gets traffic
next to the champion without replacing it; its start, re-weighting and end are in the same history.

Every change can run a ``before_move`` callback with the :class:`Rollout` that will serve afterwards (the
promote step and the CLI write the KServe manifest there): it runs after every check and before anything is
written, and the alias is the last write, so when anything fails the aliases have not moved.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mlflow

from mdctr.tracking.gate import GateDecision, decide_promotion
from mdctr.tracking.loading import RegistryError, load_registered
from mdctr.tracking.model_card import write_model_card
from mdctr.tracking.names import (
    ACTION_CANARY,
    ACTION_CANARY_END,
    ACTION_FINISH,
    ACTION_FORCE,
    ACTION_PROMOTE,
    ACTION_ROLLBACK,
    CANARY,
    CHAMPION,
    CHAMPION_MOVES,
    HISTORY_TAG_PREFIX,
    PROMOTION_TAG_PREFIX,
)
from mdctr.tracking.registration import alias_version, registered_model, require_version
from mdctr.tracking.setup import client as get_client

log = logging.getLogger(__name__)

#: traffic percentages a canary may get: 0 sends it nothing, 100 is a promotion (``promote`` without --canary)
CANARY_PERCENT_RANGE = (1, 99)


@dataclass(frozen=True)
class Rollout:
    """What serves after a change: the ``champion`` version, and the ``canary`` version with the ``percent``
    of traffic it gets (None: no canary; the champion gets everything)."""

    champion: str
    canary: str | None = None
    percent: int | None = None


#: called with the rollout that will serve, after the checks and before any write (e.g. write the manifest)
BeforeMove = Callable[[Rollout], object]


@dataclass(frozen=True)
class ChampionChange:
    """Outcome of a manual promotion, a finished canary or a rollback.

    Attributes:
        changed: whether the ``champion`` alias moved; ``version``: the champion afterwards;
        previous: the champion before (None if there was none); ``reason``: why (gate reason or user reason);
        forced: the gate was overridden; ``gate``: the gate's decision (None for a rollback or a finish);
        canary_removed: the canary version a rollback removed (the champion then stays).
    """

    changed: bool
    version: str | None
    previous: str | None
    reason: str
    forced: bool = False
    gate: GateDecision | None = None
    canary_removed: str | None = None


@dataclass(frozen=True)
class CanaryChange:
    """Outcome of :func:`start_canary`.

    Attributes:
        changed: whether the ``canary`` alias was set (or its traffic changed); ``canary``: the version;
        champion: the champion it runs beside; ``percent``: its share of traffic; ``reason``: why;
        forced: the gate was overridden; ``gate``: the gate's decision (None when only the percent changed).
    """

    changed: bool
    canary: str
    champion: str
    percent: int
    reason: str
    forced: bool = False
    gate: GateDecision | None = None


# -- history ------------------------------------------------------------------------------------------------
def champion_history(tracking_uri: str | None, *, name: str) -> list[dict[str, Any]]:
    """Every change of the ``champion`` and ``canary`` aliases of registered model ``name``, oldest first:
    ``{"seq", "action", "version", "previous", "reason", "at"}`` (+ ``"percent"`` for a canary). ``action`` is
    one of :data:`mdctr.tracking.names.HISTORY_ACTIONS`; for canary events ``previous`` is the champion."""
    rm = registered_model(tracking_uri, name)
    if rm is None:
        return []
    events = []
    for k, v in (rm.tags or {}).items():
        if k.startswith(HISTORY_TAG_PREFIX):
            try:
                events.append({"seq": int(k[len(HISTORY_TAG_PREFIX) :]), **json.loads(v)})
            except ValueError:
                log.warning("ignoring unreadable champion history tag %s=%r", k, v)
    return sorted(events, key=lambda e: e["seq"])


def _record(c: mlflow.MlflowClient, name: str, seq: int, **event: Any) -> str:
    """Write ``event`` as history entry ``seq``; return the tag key written."""
    event["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    key = f"{HISTORY_TAG_PREFIX}{seq:05d}"
    c.set_registered_model_tag(name, key, json.dumps(event))
    return key


def _next_seq(tracking_uri: str | None, name: str) -> int:
    history = champion_history(tracking_uri, name=name)
    return (history[-1]["seq"] + 1) if history else 1


def _previous_champion(history: list[dict[str, Any]], current: str) -> str | None:
    """The champion before ``current``: replay the history as a stack (champion moves push, rollback pops,
    canary events leave it alone).

    Every move of the alias is in the history (:func:`promote` writes it); when ``current`` is not on top
    (an alias set by hand in the MLflow UI) the last champion the history knows is the one to return to.
    """
    stack: list[str] = []
    for e in history:
        if e.get("action") == ACTION_ROLLBACK:
            if stack:
                stack.pop()
            if e.get("version") and (not stack or stack[-1] != e["version"]):
                stack.append(str(e["version"]))
        elif e.get("action") in CHAMPION_MOVES:
            prev = e.get("previous")
            if prev and (not stack or stack[-1] != str(prev)):
                stack.append(str(prev))
            stack.append(str(e["version"]))
    if stack and stack[-1] == current:
        return stack[-2] if len(stack) >= 2 else None
    return stack[-1] if stack and stack[-1] != current else None


def canary_version(tracking_uri: str | None, *, name: str) -> str | None:
    """The version holding ``canary`` (None: none; also when it is the champion, which only an interrupted
    finish leaves behind: that version already serves everything)."""
    canary = alias_version(tracking_uri, CANARY, name=name)
    return None if canary == alias_version(tracking_uri, CHAMPION, name=name) else canary


def rollout(tracking_uri: str | None, *, name: str) -> Rollout | None:
    """What serves now (None: no champion yet): the champion and the canary with its last recorded percent."""
    champion = alias_version(tracking_uri, CHAMPION, name=name)
    if champion is None:
        return None
    canary = canary_version(tracking_uri, name=name)
    if canary is None:
        return Rollout(champion)
    events = champion_history(tracking_uri, name=name)
    percents = [
        e.get("percent") for e in events if e.get("action") == ACTION_CANARY and e["version"] == canary
    ]
    return Rollout(champion, canary, int(percents[-1]) if percents and percents[-1] is not None else None)


# -- moving the aliases ---------------------------------------------------------------------------------------
def promote(
    tracking_uri: str | None, version: str | int, *, name: str, reason: str = "", action: str = ACTION_PROMOTE
) -> str:
    """Make ``version`` of registered model ``name`` its ``champion``; return the pinned URI
    ``models:/<name>/<version>``.

    The one function that moves ``champion``. The change is appended to the champion history (``action`` =
    ``promote`` / ``force`` / ``finish`` / ``rollback``, with ``reason``) and the version's model card is
    refreshed, both *before* the alias moves: the alias is the last write, so when anything fails the champion
    has not moved (the history entries whose alias move failed are removed again). A canary of another version
    ends with the move (its alias is removed, a ``canary-end`` entry says why): the new champion takes all
    traffic. Already champion → nothing is written.
    """
    c = get_client(tracking_uri)
    version = str(version)
    previous = alias_version(tracking_uri, CHAMPION, name=name)
    uri = f"models:/{name}/{version}"
    if previous == version:
        log.info("%s v%s is already %s", name, version, CHAMPION)
        return uri
    if action not in (*CHAMPION_MOVES, ACTION_ROLLBACK):
        raise ValueError(f"champion move {action!r}; expected one of {(*CHAMPION_MOVES, ACTION_ROLLBACK)}")
    canary = alias_version(tracking_uri, CANARY, name=name)
    write_model_card(tracking_uri, version, name=name, champion=True)
    seq = _next_seq(tracking_uri, name)
    keys = [_record(c, name, seq, action=action, version=version, previous=previous, reason=reason)]
    if canary not in (None, version, previous):
        why = f"superseded: v{version} became {CHAMPION}"
        keys.append(
            _record(c, name, seq + 1, action=ACTION_CANARY_END, version=canary, previous=version, reason=why)
        )
    try:
        c.set_registered_model_alias(name, CHAMPION, version)  # last: nothing after it can fail the move
    except Exception:
        for key in keys:  # the move did not happen: neither do its history entries
            c.delete_registered_model_tag(name, key)
        raise
    if canary is not None:
        # after the move: a failure here leaves canary == champion, which reads as no canary (canary_version)
        c.delete_registered_model_alias(name, CANARY)
    log.info("%s v%s is now %s (was %s): %s", name, version, CHAMPION, previous, reason or action)
    return uri


def _why(gate: GateDecision | None, force: bool, reason: str) -> tuple[str, bool]:
    """(the recorded reason, whether the gate was overridden) for a gated change, forced or not."""
    forced = bool(force and gate is not None and not gate.promote)
    if gate is None:
        return reason.strip(), False
    if forced:
        return f"forced: {reason.strip()} (gate: {gate.reason})", True
    return (f"{gate.reason}; {reason.strip()}" if reason.strip() else gate.reason), False


def _gate(
    tracking_uri: str | None,
    version: str,
    *,
    name: str,
    force: bool,
    reason: str,
    tolerance: float,
    metric: str,
) -> GateDecision:
    """The gate for a manual change (it opens both versions through the safe loader, so an unsafe version is
    refused even with ``force``); ``force`` needs a reason."""
    if force and not reason.strip():
        raise RegistryError("a forced promotion needs a reason (it is recorded on the version)")
    return decide_promotion(tracking_uri, version, name=name, tolerance=tolerance, metric=metric)


def _tag_version(tracking_uri: str | None, version: str, *, name: str, **tags: str) -> None:
    c = get_client(tracking_uri)
    for k, v in tags.items():
        c.set_model_version_tag(name, version, PROMOTION_TAG_PREFIX + k, v)


def promote_version(
    tracking_uri: str | None,
    version: str | int,
    *,
    name: str,
    force: bool = False,
    reason: str = "",
    tolerance: float = 0.002,
    metric: str = "auc",
    before_move: BeforeMove | None = None,
) -> ChampionChange:
    """Run the promotion gate on ``version`` of registered model ``name`` and move ``champion`` to it if the
    gate says so — or regardless with ``force`` (then ``reason`` is required and recorded as the version's
    ``promotion.reason`` tag). A running canary ends (see :func:`promote`). ``before_move`` runs once the move
    is approved, before anything is written for it."""
    version = require_version(tracking_uri, version, name=name)
    previous = alias_version(tracking_uri, CHAMPION, name=name)
    if previous == version:
        return ChampionChange(False, version, previous, f"version {version} is already the {CHAMPION}", force)
    gate = _gate(
        tracking_uri, version, name=name, force=force, reason=reason, tolerance=tolerance, metric=metric
    )
    if not gate.promote and not force:
        write_model_card(tracking_uri, version, name=name)  # with the refusal's reason
        return ChampionChange(False, previous, previous, gate.reason, False, gate)
    why, forced = _why(gate, force, reason)
    if before_move is not None:
        before_move(Rollout(version))
    _tag_version(
        tracking_uri, version, name=name, forced=str(forced).lower(), reason=why, previous=previous or ""
    )
    action = ACTION_FORCE if forced else ACTION_PROMOTE
    promote(tracking_uri, version, name=name, reason=why, action=action)
    return ChampionChange(True, version, previous, why, forced, gate)


def start_canary(
    tracking_uri: str | None,
    version: str | int,
    *,
    name: str,
    percent: int,
    force: bool = False,
    reason: str = "",
    tolerance: float = 0.002,
    metric: str = "auc",
    before_move: BeforeMove | None = None,
    gated: str = "",
) -> CanaryChange:
    """Point ``canary`` of registered model ``name`` at ``version`` with ``percent`` of the traffic; the
    champion keeps the rest. The gate applies as for a promotion (``force`` + ``reason`` overrides it); the
    canary's own version again changes only its ``percent`` (no second gate). Refused (:class:`RegistryError`)
    without a champion, for the champion itself, for a percent outside :data:`CANARY_PERCENT_RANGE` and while
    another version is the canary. The alias is the last write (history entry and ``before_move`` first).
    ``gated``: the reason of a gate that already passed on this version (the pipeline's, re-scored on its
    validation split); the gate is then not run again."""
    low, high = CANARY_PERCENT_RANGE
    if isinstance(percent, bool) or not isinstance(percent, int) or not low <= percent <= high:
        raise RegistryError(f"canary traffic must be a whole percent from {low} to {high}, not {percent!r}")
    version = require_version(tracking_uri, version, name=name)
    champion = alias_version(tracking_uri, CHAMPION, name=name)
    if champion is None:
        raise RegistryError(f"{name} has no {CHAMPION} yet: promote v{version} without --canary")
    if champion == version:
        raise RegistryError(f"version {version} is already the {CHAMPION}")
    current = canary_version(tracking_uri, name=name)
    if current not in (None, version):
        raise RegistryError(
            f"v{current} is already the {CANARY} of {name}: finish it (promote --finish) or roll it back first"
        )
    gate = None
    if current is None and not gated:
        gate = _gate(
            tracking_uri, version, name=name, force=force, reason=reason, tolerance=tolerance, metric=metric
        )
        if not gate.promote and not force:
            write_model_card(tracking_uri, version, name=name)
            return CanaryChange(False, version, champion, percent, gate.reason, False, gate)
    why, forced = _why(gate, force, reason)
    why = why or gated or f"{CANARY} traffic set to {percent}%"
    if before_move is not None:
        before_move(Rollout(champion, version, percent))
    _tag_version(tracking_uri, version, name=name, canary=f"{percent}% beside v{champion}: {why}")
    if gate is not None:
        _tag_version(tracking_uri, version, name=name, forced=str(forced).lower())
    c = get_client(tracking_uri)
    seq = _next_seq(tracking_uri, name)
    event = {
        "action": ACTION_CANARY,
        "version": version,
        "previous": champion,
        "reason": why,
        "percent": percent,
    }
    key = _record(c, name, seq, **event)
    try:
        c.set_registered_model_alias(name, CANARY, version)  # last
    except Exception:
        c.delete_registered_model_tag(name, key)
        raise
    log.info(
        "%s v%s is the %s with %d%% of traffic (champion v%s): %s",
        name,
        version,
        CANARY,
        percent,
        champion,
        why,
    )
    return CanaryChange(True, version, champion, percent, why, forced, gate)


def finish_canary(
    tracking_uri: str | None,
    *,
    name: str,
    version: str | int | None = None,
    reason: str = "",
    before_move: BeforeMove | None = None,
) -> ChampionChange:
    """Make the ``canary`` of registered model ``name`` its ``champion`` (it then takes all traffic and the
    ``canary`` alias goes). ``version``, when given, must be the canary's. The gate decided when the canary
    started; the version is opened through the safe loader again before it serves everything."""
    canary = canary_version(tracking_uri, name=name)
    if canary is None:
        raise RegistryError(f"{name} has no {CANARY} to finish")
    if version is not None and str(version) != canary:
        raise RegistryError(f"v{version} is not the {CANARY} of {name} (v{canary} is)")
    load_registered(tracking_uri, name, canary)
    previous = alias_version(tracking_uri, CHAMPION, name=name)
    why = reason.strip() or f"{CANARY} v{canary} finished"
    if before_move is not None:
        before_move(Rollout(canary))
    _tag_version(tracking_uri, canary, name=name, reason=why, previous=previous or "")
    promote(tracking_uri, canary, name=name, reason=why, action=ACTION_FINISH)
    return ChampionChange(True, canary, previous, why)


def _end_canary(
    tracking_uri: str | None, canary: str, *, name: str, reason: str, before_move: BeforeMove | None
) -> ChampionChange:
    """Remove the ``canary`` alias (champion unchanged); history entry first, alias last."""
    champion = alias_version(tracking_uri, CHAMPION, name=name)
    why = reason.strip() or f"{CANARY} v{canary} rolled back"
    if before_move is not None and champion is not None:
        before_move(Rollout(champion))
    c = get_client(tracking_uri)
    _tag_version(tracking_uri, canary, name=name, rolled_back=why)
    seq = _next_seq(tracking_uri, name)
    key = _record(c, name, seq, action=ACTION_CANARY_END, version=canary, previous=champion, reason=why)
    try:
        c.delete_registered_model_alias(name, CANARY)
    except Exception:
        c.delete_registered_model_tag(name, key)
        raise
    log.info("%s %s v%s removed; %s stays v%s: %s", name, CANARY, canary, CHAMPION, champion, why)
    return ChampionChange(False, champion, champion, why, canary_removed=canary)


def rollback_champion(
    tracking_uri: str | None, *, name: str, reason: str = "", before_move: BeforeMove | None = None
) -> ChampionChange:
    """Undo the last rollout step of registered model ``name``: while a ``canary`` runs, remove it (the
    champion stays); otherwise move ``champion`` back to its previous champion (loaded through the safe loader
    first: an unsafe target is refused). The change is appended to the history and the demoted version gets a
    ``promotion.rolled_back`` tag."""
    canary = canary_version(tracking_uri, name=name)
    if canary is not None:
        return _end_canary(tracking_uri, canary, name=name, reason=reason, before_move=before_move)
    current = alias_version(tracking_uri, CHAMPION, name=name)
    if current is None:
        raise RegistryError(f"{name} has no {CHAMPION} to roll back")
    target = _previous_champion(champion_history(tracking_uri, name=name), current)
    if target is None:
        raise RegistryError(
            f"{CHAMPION} v{current} has no previous {CHAMPION} to roll back to (it was the first)"
        )
    require_version(tracking_uri, target, name=name)
    load_registered(tracking_uri, name, target)  # it is about to be served: nothing executable in it
    why = reason.strip() or f"rolled back from v{current}"
    if before_move is not None:
        before_move(Rollout(target))
    _tag_version(tracking_uri, current, name=name, rolled_back=why)
    write_model_card(tracking_uri, current, name=name, champion=False)
    promote(tracking_uri, target, name=name, reason=why, action=ACTION_ROLLBACK)
    return ChampionChange(True, target, current, why)
