"""``mdctr models list|promote|rollback|zoo``: the registered versions, the champion alias, and the model zoo.

Each dataset registers under its own model, ``mdctr-<schema name>`` (``mdctr-ml-1m``); ``--dataset`` picks it by
dataset, ``--name`` by registered name. Without either, ``list`` shows every mdctr registered model and
``promote``/``rollback`` act on the only one there is (and refuse, naming them, when there are several).

``list`` shows the registered models (it says so when no tracking store is reachable); ``zoo`` lists the
trainable models (registry keys, domain sources, default config) and needs no store; ``promote`` runs the
promotion gate (or overrides it with ``--force --reason``) and ``rollback`` moves ``champion`` back to the
previous champion. Both load the versions they touch through the bundle loader only and refuse a version whose
stored files could run code. Every move of ``champion`` (the pipeline's too) is kept as registered-model tags
(the champion history).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="List, promote and roll back registered models.", no_args_is_help=True)

TrackingOpt = typer.Option(
    None, "--tracking-uri", help="Tracking server or store (default: $MLFLOW_TRACKING_URI, else ./mlruns)."
)
DatasetOpt = typer.Option(
    None,
    "--dataset",
    "-d",
    help="Dataset (schema name) whose registered model to use, e.g. ml-1m → mdctr-ml-1m.",
)
NameOpt = typer.Option(None, "--name", help="Registered model name (overrides --dataset), e.g. mdctr-ml-1m.")
#: how long ``list`` waits for a tracking server before showing the zoo alone (seconds)
PROBE_TIMEOUT_S = 5


class StoreUnavailable(RuntimeError):
    """No tracking store at the given URI (a missing SQLite file, a server that does not answer)."""


def _resolve(tracking_uri: str | None) -> str:
    from mdctr.tracking.setup import _normalise, default_tracking_uri

    return _normalise(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri())


@contextmanager
def _store(tracking_uri: str | None) -> Iterator[str]:
    """The resolved URI of an existing store; :class:`StoreUnavailable` for a missing SQLite file (never
    creates a store) or a server that cannot be reached (without MLflow's minutes of retries)."""
    uri = _resolve(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise StoreUnavailable(f"no tracking store at {uri} (the SQLite file does not exist)")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    # promote/rollback download the versions they check: no progress bars around the one-line answer
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(PROBE_TIMEOUT_S))
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException

    try:
        yield uri
    except (RequestException, ConnectionError) as e:
        raise StoreUnavailable(f"tracking store {uri} is not reachable: {_cause(e)}") from None
    except MlflowException as e:
        if "API request" in str(e) or "Max retries" in str(e) or "Connection" in str(e):
            raise StoreUnavailable(f"tracking store {uri} is not reachable: {_cause(e)}") from None
        raise


def _cause(e: Exception) -> str:
    """The root cause of a connection failure (``[Errno 111] Connection refused``), not urllib3's page of it."""
    m = re.search(r"\[Errno -?\d+\][^\"')]*", str(e))
    return m.group(0).strip() if m else str(e)[:200]


def _model_names(uri: str, dataset: str | None, name: str | None) -> list[str]:
    """The registered models a command means: ``--name``, else ``--dataset``'s, else every mdctr model."""
    from mdctr.tracking import registry
    from mdctr.tracking.names import registered_model_name

    if name:
        return [name]
    if dataset:
        try:
            return [registered_model_name(dataset)]
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--dataset") from None
    return registry.registered_models(uri)


def _one_model(uri: str, dataset: str | None, name: str | None) -> str:
    """The one registered model ``promote``/``rollback`` act on; a :class:`RegistryError` saying which to pass
    when there are none or several."""
    from mdctr.tracking.registry import RegistryError

    names = _model_names(uri, dataset, name)
    if len(names) == 1:
        return names[0]
    if not names:
        raise RegistryError(f"no mdctr model is registered in {uri}")
    raise RegistryError(f"{len(names)} registered models {names}: pass --dataset or --name to choose one")


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M") if ms else "-"


def _num(d: dict[str, float], key: str) -> str:
    return f"{d[key]:.4f}" if key in d else "-"


def format_versions(versions: list[Any], history: list[dict[str, Any]]) -> str:
    """The registered versions as an aligned text table, then the champion history."""
    header = (
        "version",
        "aliases",
        "model",
        "domains",
        "auc",
        "logloss",
        "domain auc",
        "gate",
        "created (UTC)",
    )
    rows = [header]
    for v in versions:
        dom = " ".join(f"{d}:{m['auc']:.3f}" for d, m in sorted(v.domain_metrics.items()) if "auc" in m)
        rows.append(
            (
                v.version,
                ",".join(v.aliases) or "-",
                v.model or "-",
                v.domain_source or "-",
                _num(v.metrics, "auc"),
                _num(v.metrics, "logloss"),
                dom or "-",
                v.gate_decision or "-",
                _when(v.created_ms),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if history:
        lines.append("champion history (oldest first):")
        for e in history:
            was = f"v{e['previous']}" if e.get("previous") else "none"
            lines.append(f"  {e.get('at', '-')}  {e['action']:<8} v{e['version']} (was {was}): {e['reason']}")
    return "\n".join(lines)


def _zoo() -> list[dict[str, Any]]:
    import dataclasses

    from mdctr.models import model_class, model_names

    zoo = []
    for key in model_names():
        cls = model_class(key)
        defaults = dataclasses.asdict(cls.Config()) if dataclasses.is_dataclass(cls.Config) else {}
        zoo.append({"model": key, "domain_sources": list(cls.domain_sources), "config": defaults})
    return zoo


@app.command("zoo")
def zoo_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The model zoo: every trainable model's registry key, the domain sources it accepts and its default
    config (no tracking store needed)."""
    zoo = _zoo()
    if as_json:
        typer.echo(json.dumps(zoo, indent=2, default=str))
        return
    typer.echo("model zoo (registry keys):")
    for r in zoo:
        typer.echo(f"  {r['model']:<14} sources={','.join(r['domain_sources']):<24} config={r['config']}")


@app.command("list")
def list_models(
    dataset: str | None = DatasetOpt,
    name: str | None = NameOpt,
    tracking_uri: str | None = TrackingOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Each registered model (one per dataset; or the one of --dataset/--name) with its versions, their test
    metrics, aliases and gate decisions, and its champion history. The trainable models are ``mdctr models
    zoo``."""
    import dataclasses

    registered: list[dict[str, Any]] = []
    store_note = ""
    try:
        with _store(tracking_uri) as uri:
            from mdctr.tracking import registry as tracking

            for model in _model_names(uri, dataset, name):
                registered.append(
                    {
                        "name": model,
                        "versions": tracking.list_versions(uri, name=model),
                        "champion_history": tracking.champion_history(uri, name=model),
                    }
                )
            store_note = uri
    except StoreUnavailable as e:
        store_note = f"unavailable ({e})"
    if as_json:
        for r in registered:
            r["versions"] = [dataclasses.asdict(v) for v in r["versions"]]
        typer.echo(
            json.dumps({"tracking": store_note, "registered_models": registered}, indent=2, default=str)
        )
        return
    typer.echo(f"tracking store: {store_note}")
    if store_note.startswith("unavailable"):
        return
    if not registered:
        typer.echo("registered models: none")
    for r in registered:
        typer.echo(f"registered model {r['name']}: {len(r['versions'])} version(s)")
        if r["versions"]:
            typer.echo(format_versions(r["versions"], r["champion_history"]))


@app.command("promote")
def promote_cmd(
    version: str = typer.Argument(..., help="Version of the dataset's registered model to make champion."),
    dataset: str | None = DatasetOpt,
    name: str | None = NameOpt,
    force: bool = typer.Option(False, "--force", help="Promote even if the gate refuses (needs --reason)."),
    reason: str = typer.Option("", "--reason", help="Why; recorded on the version (required with --force)."),
    tolerance: float = typer.Option(0.002, "--tolerance", help="Gate: allowed per-domain regression."),
    metric: str = typer.Option("auc", "--metric", help="Gate: the compared test metric."),
    tracking_uri: str | None = TrackingOpt,
) -> None:
    """Run the promotion gate on VERSION of the dataset's registered model and move its alias champion to it
    if it passes (exit 1 if refused). The gate compares only versions of that one registered model, and loads
    both through the bundle loader: a version whose stored files could run code is refused (exit 2)."""
    from mdctr.tracking.registry import RegistryError

    try:
        with _store(tracking_uri) as uri:
            from mdctr.tracking import registry as tracking

            model = _one_model(uri, dataset, name)
            change = tracking.promote_version(
                uri, version, name=model, force=force, reason=reason, tolerance=tolerance, metric=metric
            )
    except (StoreUnavailable, RegistryError) as e:
        _fail(str(e))
    if change.changed:
        was = f"v{change.previous}" if change.previous else "none"
        typer.echo(f"{model} v{change.version} is now champion (was {was}): {change.reason}")
    elif change.gate is None:
        typer.echo(change.reason)
    else:
        typer.secho(
            f"gate refused {model} v{version}: {change.reason} (champion stays "
            f"{'v' + change.version if change.version else 'unset'}; override with --force --reason ...)",
            fg=typer.colors.YELLOW,
            err=True,
        )
        raise typer.Exit(1)


@app.command("rollback")
def rollback_cmd(
    reason: str = typer.Option("", "--reason", help="Why; recorded in the champion history."),
    dataset: str | None = DatasetOpt,
    name: str | None = NameOpt,
    tracking_uri: str | None = TrackingOpt,
) -> None:
    """Move alias champion of the dataset's registered model back to its previous champion."""
    from mdctr.tracking.registry import RegistryError

    try:
        with _store(tracking_uri) as uri:
            from mdctr.tracking import registry as tracking

            model = _one_model(uri, dataset, name)
            change = tracking.rollback_champion(uri, name=model, reason=reason)
    except (StoreUnavailable, RegistryError) as e:
        _fail(str(e))
    typer.echo(f"{model} champion rolled back to v{change.version} (was v{change.previous}): {change.reason}")
