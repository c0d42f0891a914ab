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

Canary rollout: ``promote VERSION --canary PERCENT`` points alias ``canary`` at VERSION (the gate applies) and
writes a KServe InferenceService manifest that sends it PERCENT of the traffic; ``promote --finish`` makes it
the champion (manifest: 100%); ``rollback`` while a canary runs removes it (manifest: the champion alone).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
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
ManifestOpt = typer.Option(
    None,
    "--manifest",
    help="Write the KServe InferenceService here (default for --canary, --finish and a canary's rollback: "
    "kserve/<registered model>.yaml; plain promote/rollback write one only when given).",
)
NamespaceOpt = typer.Option("", "--namespace", help="Kubernetes namespace in the manifest (default: none).")
DestinationOpt = typer.Option(
    "",
    "--artifacts-destination",
    help="The tracking server's --artifacts-destination (e.g. s3://mdctr/mlflow), to turn a proxied "
    "mlflow-artifacts:/ location into the manifest's storage URI (default: $MLFLOW_ARTIFACTS_DESTINATION).",
)
#: where the manifest goes when a canary command is given no --manifest (relative to the working directory)
DEFAULT_MANIFEST_DIR = "kserve"
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
    from mdctr.tracking.names import registered_model_name
    from mdctr.tracking.registration import registered_models

    if name:
        return [name]
    if dataset:
        try:
            return [registered_model_name(dataset)]
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--dataset") from None
    return registered_models(uri)


def _one_model(uri: str, dataset: str | None, name: str | None) -> str:
    """The one registered model ``promote``/``rollback`` act on; a :class:`RegistryError` saying which to pass
    when there are none or several."""
    from mdctr.tracking.loading import RegistryError

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
        lines += [
            f"  {e.get('at', '-')}  {e['action']:<8} v{e['version']} {_event_note(e)}: {e['reason']}"
            for e in history
        ]
    return "\n".join(lines)


def _event_note(event: dict[str, Any]) -> str:
    """What a history event changed, in brackets: the champion it replaced, or the one a canary ran beside."""
    from mdctr.tracking.names import ACTION_CANARY, ACTION_CANARY_END

    prev = f"v{event['previous']}" if event.get("previous") else "none"
    if event["action"] == ACTION_CANARY:
        return f"({event.get('percent', '?')}% beside champion {prev})"
    if event["action"] == ACTION_CANARY_END:
        return f"(champion {prev})"
    return f"(was {prev})"


def format_rollout(rollout: Any) -> str:
    """One line on what serves while a canary runs: its share of traffic beside the champion."""
    from mdctr.tracking.names import CANARY

    share = f"{rollout.percent}%" if rollout.percent is not None else "?%"
    return f"{CANARY}: v{rollout.canary} gets {share} of traffic, champion v{rollout.champion} the rest"


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
            from mdctr import tracking

            for model in _model_names(uri, dataset, name):
                registered.append(
                    {
                        "name": model,
                        "versions": tracking.list_versions(uri, name=model),
                        "champion_history": tracking.champion_history(uri, name=model),
                        "rollout": tracking.rollout(uri, name=model),
                    }
                )
            store_note = uri
    except StoreUnavailable as e:
        store_note = f"unavailable ({e})"
    if as_json:
        for r in registered:
            r["versions"] = [dataclasses.asdict(v) for v in r["versions"]]
            r["rollout"] = dataclasses.asdict(r["rollout"]) if r["rollout"] is not None else None
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
        if r["rollout"] is not None and r["rollout"].canary is not None:
            typer.echo(format_rollout(r["rollout"]))


def _writer(
    path: Path | None, model: str, uri: str, namespace: str, destination: str, written: list[Path]
) -> Callable[[Any], None] | None:
    """The ``before_move`` callback that writes the KServe manifest of the rollout about to serve (None: no
    manifest); each path written is appended to ``written``."""
    if path is None:
        return None
    from mdctr.steps.promote_model import write_rollout_manifest

    def write(rollout: Any) -> None:
        out, _ = write_rollout_manifest(
            path,
            rollout,
            name=model,
            tracking_uri=uri,
            namespace=namespace,
            artifacts_destination=destination,
        )
        written.append(out)

    return write


def _default_manifest(model: str) -> Path:
    return Path(DEFAULT_MANIFEST_DIR) / f"{model}.yaml"


def _say_manifest(written: list[Path]) -> None:
    for path in written:
        typer.echo(f"KServe manifest: {path}")


def _report_promotion(model: str, version: str | None, change: Any, written: list[Path]) -> None:
    """Print a promotion, a finished canary or a started canary; exit 1 when the gate refused."""
    from mdctr.tracking import CanaryChange

    if isinstance(change, CanaryChange) and change.changed:
        typer.echo(
            f"{model} v{change.canary} is the canary with {change.percent}% of traffic (champion "
            f"v{change.champion} keeps {100 - change.percent}%): {change.reason}"
        )
    elif change.changed:
        was = f"v{change.previous}" if change.previous else "none"
        typer.echo(f"{model} v{change.version} is now champion (was {was}): {change.reason}")
    elif change.gate is None:
        typer.echo(change.reason)
    else:
        champion = change.champion if isinstance(change, CanaryChange) else change.version
        typer.secho(
            f"gate refused {model} v{version}: {change.reason} (champion stays "
            f"{'v' + champion if champion else 'unset'}; override with --force --reason ...)",
            fg=typer.colors.YELLOW,
            err=True,
        )
        raise typer.Exit(1)
    _say_manifest(written)


@app.command("promote")
def promote_cmd(
    version: str | None = typer.Argument(
        None, help="Version of the dataset's registered model to make champion (or canary with --canary)."
    ),
    dataset: str | None = DatasetOpt,
    name: str | None = NameOpt,
    canary: int | None = typer.Option(
        None,
        "--canary",
        metavar="PERCENT",
        help="Roll VERSION out as the canary with PERCENT (1-99) of the traffic; the champion keeps the rest.",
    ),
    finish: bool = typer.Option(
        False, "--finish", help="Make the canary the champion (VERSION optional; if given, the canary's)."
    ),
    force: bool = typer.Option(False, "--force", help="Promote even if the gate refuses (needs --reason)."),
    reason: str = typer.Option("", "--reason", help="Why; recorded on the version (required with --force)."),
    tolerance: float = typer.Option(0.002, "--tolerance", help="Gate: allowed per-domain regression."),
    metric: str = typer.Option("auc", "--metric", help="Gate: the compared test metric."),
    manifest: Path | None = ManifestOpt,
    namespace: str = NamespaceOpt,
    artifacts_destination: str = DestinationOpt,
    tracking_uri: str | None = TrackingOpt,
) -> None:
    """Run the promotion gate on VERSION of the dataset's registered model and move its alias champion to it
    if it passes (exit 1 if refused). The gate compares only versions of that one registered model, and loads
    both through the bundle loader: a version whose stored files could run code is refused (exit 2).

    With --canary PERCENT the gate decides whether VERSION may become the canary (alias canary) with PERCENT of
    the traffic, and the KServe manifest serving that split is written; --finish then makes the canary the
    champion. Each writes the manifest before moving an alias."""
    if finish and (canary is not None or force):
        _fail("--finish takes neither --canary nor --force: the gate ran when the canary started")
    if version is None and not finish:
        _fail("VERSION is required (only --finish may leave it out)")
    written: list[Path] = []
    try:
        with _store(tracking_uri) as uri:
            from mdctr import tracking

            model = _one_model(uri, dataset, name)
            if manifest is None and (finish or canary is not None):
                manifest = _default_manifest(model)
            write = _writer(manifest, model, uri, namespace, artifacts_destination, written)
            gate = {
                "force": force,
                "reason": reason,
                "tolerance": tolerance,
                "metric": metric,
                "before_move": write,
            }
            if finish:
                change: Any = tracking.finish_canary(
                    uri, name=model, version=version, reason=reason, before_move=write
                )
            elif canary is not None:
                change = tracking.start_canary(uri, version, name=model, percent=canary, **gate)
            else:
                change = tracking.promote_version(uri, version, name=model, **gate)
    except (StoreUnavailable, ValueError, OSError) as e:  # RegistryError, a manifest that cannot be written
        _fail(str(e))
    _report_promotion(model, version, change, written)


@app.command("rollback")
def rollback_cmd(
    reason: str = typer.Option("", "--reason", help="Why; recorded in the champion history."),
    dataset: str | None = DatasetOpt,
    name: str | None = NameOpt,
    manifest: Path | None = ManifestOpt,
    namespace: str = NamespaceOpt,
    artifacts_destination: str = DestinationOpt,
    tracking_uri: str | None = TrackingOpt,
) -> None:
    """Undo the last rollout step of the dataset's registered model: while a canary runs, remove it (the
    champion stays; the manifest is rewritten to serve the champion alone); otherwise move alias champion back
    to its previous champion."""
    written: list[Path] = []
    try:
        with _store(tracking_uri) as uri:
            from mdctr import tracking
            from mdctr.tracking.champion import canary_version

            model = _one_model(uri, dataset, name)
            if manifest is None and canary_version(uri, name=model) is not None:
                manifest = _default_manifest(model)
            write = _writer(manifest, model, uri, namespace, artifacts_destination, written)
            change = tracking.rollback_champion(uri, name=model, reason=reason, before_move=write)
    except (StoreUnavailable, ValueError, OSError) as e:
        _fail(str(e))
    if change.canary_removed is not None:
        typer.echo(
            f"{model} canary v{change.canary_removed} rolled back; champion stays v{change.version}: "
            f"{change.reason}"
        )
    else:
        typer.echo(
            f"{model} champion rolled back to v{change.version} (was v{change.previous}): {change.reason}"
        )
    _say_manifest(written)
