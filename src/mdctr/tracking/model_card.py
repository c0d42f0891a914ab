"""The model card: a Markdown page per registered version, logged into its training run.

It says what the version is (model, domain source, data and code version, FLOPs, dense parameters), how it
scored (overall and per hand-crafted domain, with the domains' raw names), what the promotion gate decided and
why, and any manual promotion, canary or rollback.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from mdctr.tracking.names import (
    CHAMPION,
    GATE_TAG_PREFIX,
    PROMOTION_TAG_PREFIX,
    TAG_BUNDLE_MODEL,
    TAG_DATA_MD5,
    TAG_DATA_REV,
    TAG_DOMAIN_SOURCE,
    TAG_GIT_SHA,
    TAG_MODEL_CARD,
)
from mdctr.tracking.registration import metric_tags
from mdctr.tracking.setup import client as get_client

log = logging.getLogger(__name__)

#: the artifact folder of the cards in a training run (``model_card/v<version>.md``)
MODEL_CARD_DIR = "model_card"


def _domain_names(c: mlflow.MlflowClient, run_id: str) -> dict[int, str]:
    """Hand-crafted domain names from the training run's ``per_domain.json`` table ({} when it has none)."""
    with tempfile.TemporaryDirectory(prefix="mdctr-card-") as tmp:
        try:
            path = c.download_artifacts(run_id, "per_domain.json", tmp)
        except (MlflowException, OSError):
            return {}
        table = json.loads(Path(path).read_text())
    cols = table.get("columns") or []
    if "domain" not in cols or "name" not in cols:
        return {}
    i, j = cols.index("domain"), cols.index("name")
    return {int(row[i]): str(row[j]) for row in table.get("data") or []}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.5f}"
    return str(v)


def _run_tags(c: mlflow.MlflowClient, run: Any) -> tuple[dict[str, str], dict[str, str]]:
    """(training run tags, its parent run's tags): the data and code versions are on the pipeline's parent."""
    run_tags = dict(run.data.tags) if run else {}
    parent_id = run_tags.get("mlflow.parentRunId")
    if not parent_id:
        return run_tags, {}
    try:
        return run_tags, dict(c.get_run(parent_id).data.tags)
    except MlflowException:
        return run_tags, {}


def _summary(name: str, version: str, mv: Any, run: Any, aliases: list[str], run_tags: tuple) -> list[str]:
    tags = dict(mv.tags or {})
    own, parent = run_tags

    def from_runs(key: str) -> str:
        return own.get(key) or parent.get(key) or "unknown"

    metrics = dict(run.data.metrics) if run else {}
    flops = _fmt(metrics["flops_per_sample"]) if "flops_per_sample" in metrics else "unknown"
    params = _fmt(metrics["dense_params"]) if "dense_params" in metrics else "unknown"
    model = f"`{tags.get(TAG_BUNDLE_MODEL, 'unknown')}` (domain source `{tags.get(TAG_DOMAIN_SOURCE, '?')}`)"
    return [
        f"# {name} version {version}",
        "",
        "| | |",
        "|---|---|",
        f"| model | {model} |",
        f"| aliases | {', '.join(aliases) or 'none'} |",
        f"| training run | `{mv.run_id}` |",
        f"| data version | DVC rev `{from_runs(TAG_DATA_REV)}`, md5 `{from_runs(TAG_DATA_MD5)}` |",
        f"| code version | git `{from_runs(TAG_GIT_SHA)}` |",
        f"| forward FLOPs per sample | {flops} |",
        f"| dense parameters | {params} |",
    ]


def _metric_tables(tags: Mapping[str, str], names: Mapping[int, str]) -> list[str]:
    overall, domains = metric_tags(tags)
    lines = [
        "",
        "## Test metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {v:.5f} |" for k, v in sorted(overall.items())),
        "",
        "## Per hand-crafted domain (test)",
        "",
    ]
    if not domains:
        return [*lines, "No per-domain metrics were stored with this version."]
    metric_names = sorted({m for vals in domains.values() for m in vals})
    return [
        *lines,
        "| domain | name | " + " | ".join(metric_names) + " |",
        "|---|---|" + "---|" * len(metric_names),
        *(
            f"| {d} | {names.get(d, '')} | "
            + " | ".join(f"{vals[m]:.5f}" if m in vals else "" for m in metric_names)
            + " |"
            for d, vals in sorted(domains.items())
        ),
    ]


def _decisions(tags: Mapping[str, str]) -> list[str]:
    """The gate's decision, then manual promotions, canaries and rollbacks (version tags)."""
    gate = {k[len(GATE_TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(GATE_TAG_PREFIX)}
    lines = ["", "## Promotion gate", ""]
    if gate:
        champ = gate.get("champion_version") or "none"
        lines += [
            f"- decision: **{gate.get('decision', '?')}** — {gate.get('reason', '')}",
            f"- compared on `{gate.get('metric', '?')}` with champion v{champ} "
            f"(per-domain tolerance {gate.get('tolerance', '?')})",
        ]
    else:
        lines.append("The gate has not been run on this version.")
    manual = {
        k[len(PROMOTION_TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(PROMOTION_TAG_PREFIX)
    }
    if manual:
        lines += ["", "## Manual changes", ""]
        if "canary" in manual:
            lines.append(f"- canary: {manual['canary']}")
        if "reason" in manual:
            forced = " (gate overridden)" if manual.get("forced") == "true" else ""
            lines.append(f"- promoted{forced}: {manual['reason']}")
        if "rolled_back" in manual:
            lines.append(f"- rolled back: {manual['rolled_back']}")
    return lines


def model_card(
    tracking_uri: str | None, version: str | int, *, name: str, champion: bool | None = None
) -> str:
    """A Markdown model card for a version of registered model ``name``: model, data version (DVC rev and md5
    from the pipeline's parent run), code version, FLOPs and dense parameters, overall and per-domain test
    metrics (with the domains' raw names), and the promotion gate's decision with its reason (plus any manual
    promotion, canary or rollback). ``champion``: show the version as holding (True) or not holding (False) the
    ``champion`` alias whatever the registry says now — the card is written just before the alias moves."""
    c = get_client(tracking_uri)
    version = str(version)
    mv = c.get_model_version(name, version)
    tags = dict(mv.tags or {})
    run = c.get_run(mv.run_id) if mv.run_id else None
    names = _domain_names(c, mv.run_id) if mv.run_id else {}
    rm = c.get_registered_model(name)
    held = {a for a, v in (rm.aliases or {}).items() if str(v) == version}
    if champion is not None:  # the card is written just before the alias moves (see champion.promote)
        held = held | {CHAMPION} if champion else held - {CHAMPION}
    lines = [
        *_summary(name, version, mv, run, sorted(held), _run_tags(c, run)),
        *_metric_tables(tags, names),
        *_decisions(tags),
    ]
    return "\n".join(lines) + "\n"


def write_model_card(
    tracking_uri: str | None, version: str | int, *, name: str, champion: bool | None = None
) -> str:
    """Log :func:`model_card` into the version's training run as ``model_card/v<version>.md`` (replacing an
    earlier card) and point the version tag ``mdctr.model_card`` at it; return that artifact URI."""
    c = get_client(tracking_uri)
    version = str(version)
    mv = c.get_model_version(name, version)
    artifact = f"{MODEL_CARD_DIR}/v{version}.md"
    c.log_text(mv.run_id, model_card(tracking_uri, version, name=name, champion=champion), artifact)
    uri = f"runs:/{mv.run_id}/{artifact}"
    c.set_model_version_tag(name, version, TAG_MODEL_CARD, uri)
    log.info("model card for %s v%s: %s", name, version, uri)
    return uri
