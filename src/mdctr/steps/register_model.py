"""Step: register the winner's bundle as an MLflow pyfunc (alias ``challenger``) and run the promotion gate."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdctr.steps.common import tracking_uri_or_none
from mdctr.steps.evaluate import WINNER_BUNDLE_DIR, WINNER_ENTRY_FILE
from mdctr.steps.prepare_data import SERVING_EXAMPLE_FILE

if TYPE_CHECKING:
    from mdctr.tracking import RegisteredVersion
    from mdctr.tracking.gate import GateDecision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisterConfig:
    """Attributes: MLflow URI, the parent run (where the model is logged when the winner has no run of its
    own), the gate's per-domain ``tolerance`` (see :func:`mdctr.tracking.gate.judge`) and the registered
    ``model_name`` (``""``: the dataset's own model, ``mdctr-<schema name>``)."""

    tracking_uri: str = ""
    parent_run_id: str = ""
    tolerance: float = 0.002
    model_name: str = ""


@dataclass(frozen=True)
class RegisterOutput:
    """Attributes: ``decision`` (``promote``/``keep``), the registered model's ``name`` and ``version``, its
    ``model_uri`` and the gate's ``reason`` and numbers."""

    decision: str
    name: str
    version: str
    model_uri: str
    reason: str
    gate: dict[str, Any]


def register_model(
    *,
    winner_dir: Path | str,
    config: RegisterConfig,
    prepared_dir: Path | str | None = None,
    evaluation_report: Path | str | None = None,
    report_path: Path | str | None = None,
) -> RegisterOutput:
    """Log ``winner_dir/bundle`` as a pyfunc in the winner's training run, register it (alias challenger)
    under its dataset's model (``mdctr-<schema name>`` unless ``config.model_name`` says otherwise), tagged
    with its dataset and feature schema (the bundle is loaded once, here), and decide whether it should replace
    that model's champion. The parent run stays open: only the pipeline's exit handler closes it (FAILED when a
    later step, promote included, fails).

    With ``prepared_dir`` the gate re-scores challenger and champion on this run's validation split (see
    :func:`mdctr.tracking.gate.decide_promotion`); without it, it compares the metrics stored on version tags.
    Either way both are loaded through the bundle loader only: a champion whose stored files could run code
    (another loader module, a ``code/`` folder, a pickle) raises
    :class:`mdctr.tracking.loading.UnsafeModelError` and the step fails. The split (kind and seed, from the
    prepared data) is logged as params on the parent run.

    With ``evaluation_report`` (the evaluate step's HTML report, written before any gate ran) the page is
    written again to ``report_path`` with the gate's decision and reason in its summary, and replaces
    ``evaluation/report.html`` on the parent run, so both places show the run's final report.
    """
    from mdctr import tracking

    winner_dir = Path(winner_dir)
    entry = json.loads((winner_dir / WINNER_ENTRY_FILE).read_text())
    run_id = entry.get("run_id") or config.parent_run_id
    if not run_id:
        raise ValueError(
            "register_model needs an MLflow run: the winner has no run id and no parent run is given"
        )
    uri = tracking_uri_or_none(config.tracking_uri)
    name, registered = _register_winner(winner_dir, uri, run_id, config.model_name)
    validation = validation_set(prepared_dir) if prepared_dir is not None else None
    gate = tracking.decide_promotion(
        uri, registered.version, name=name, tolerance=config.tolerance, validation=validation
    )
    card = tracking.write_model_card(uri, registered.version, name=name)  # data version, FLOPs, domains, gate
    decision = gate.decision
    tracking.runs.describe_version(
        uri,
        registered.version,
        f"{entry['entry']} (run {run_id}); gate: {decision} — {gate.reason}. Model card: {card}",
        name=name,
    )
    if evaluation_report is not None:
        _final_report(
            Path(evaluation_report),
            Path(report_path) if report_path is not None else None,
            gate_line=(decision, gate.reason, registered.version),
            model_name=name,
            tracking_uri=uri,
            parent_run_id=config.parent_run_id,
        )
    if config.parent_run_id:
        _tag_parent(uri, config, version=registered.version, gate=gate, prepared_dir=prepared_dir)
    log.info(
        "registered %s (%s): gate says %s — %s", registered.model_uri, entry["entry"], decision, gate.reason
    )
    return RegisterOutput(
        decision=decision,
        name=name,
        version=registered.version,
        model_uri=registered.model_uri,
        reason=gate.reason,
        gate=gate.to_dict(),
    )


def _register_winner(
    winner_dir: Path, tracking_uri: str | None, run_id: str, model_name: str
) -> tuple[str, RegisteredVersion]:
    """Log and register ``winner_dir``'s bundle in run ``run_id`` → (the registered model's name: ``model_name``,
    else the dataset's own; what :func:`mdctr.tracking.register_bundle` returns)."""
    import pandas as pd

    from mdctr import tracking
    from mdctr.serving.bundle import Predictor

    example = pd.read_parquet(winner_dir / SERVING_EXAMPLE_FILE)
    # loaded once: registration scores the input example with it and tags its dataset and feature schema
    predictor = Predictor.load(winner_dir / WINNER_BUNDLE_DIR)
    name = model_name or tracking.registered_model_name(predictor.spec.schema.name)
    registered = tracking.register_bundle(
        tracking_uri,
        winner_dir / WINNER_BUNDLE_DIR,
        run_id=run_id,
        input_example=example,
        predictor=predictor,
        name=name,
    )
    return name, registered


def _tag_parent(
    tracking_uri: str | None,
    config: RegisterConfig,
    *,
    version: str,
    gate: GateDecision,
    prepared_dir: Path | str | None,
) -> None:
    """The parent run records the registered version, the gate's decision and reason (tags), the gate's
    tolerance and the split (params). It is not closed here: the exit handler closes it once every step,
    promote included, has ended."""
    from mdctr.tracking import names, runs

    runs.tag_run(
        tracking_uri,
        config.parent_run_id,
        {
            names.TAG_REGISTERED_VERSION: version,
            names.TAG_GATE_DECISION: gate.decision,
            names.TAG_GATE_REASON: gate.reason,
        },
    )
    params: dict[str, Any] = {"gate.tolerance": config.tolerance}
    if prepared_dir is not None:
        params.update(split_params(prepared_dir))
    runs.log_run_params(tracking_uri, config.parent_run_id, params)


def _final_report(
    evaluation_report: Path,
    report_path: Path | None,
    *,
    gate_line: tuple[str, str, str],
    model_name: str,
    tracking_uri: str | None,
    parent_run_id: str,
) -> None:
    """The evaluate step's report with the gate decision filled in → ``report_path`` and the parent run."""
    from mdctr.evaluation.report import gate_html, with_gate
    from mdctr.steps.evaluate import REPORT_FILE
    from mdctr.tracking.names import PROMOTE

    decision, reason, version = gate_line
    gate = gate_html(decision, reason, version, model_name, promoted=decision == PROMOTE)
    page = with_gate(evaluation_report.read_text(), gate)
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(page)
    if parent_run_id:
        from mdctr.tracking.reports import EVALUATION_ARTIFACTS, log_page

        # the same artifact path evaluate logged the page to: the parent run keeps one report, the final one
        log_page(tracking_uri, parent_run_id, page, f"{EVALUATION_ARTIFACTS}/{REPORT_FILE}")


def split_params(prepared_dir: Path | str) -> dict[str, Any]:
    """``{"split": "random"|"time", "split_seed": int}`` of a prepared directory (its feature spec's meta)."""
    from mdctr.data.encode import FeatureSpec
    from mdctr.data.prepare import SPEC_FILE

    meta = FeatureSpec.load(Path(prepared_dir) / SPEC_FILE).meta
    return {k: meta[m] for k, m in (("split", "split"), ("split_seed", "seed")) if m in meta}


def validation_set(prepared_dir: Path | str) -> Any:
    """The prepared validation split as raw serving rows (a :class:`mdctr.tracking.ValidationSet`).

    Rows are decoded with the run's feature spec: ids back to their raw values, dense values back to their
    scale. Rows holding an id unseen in training (encoded as OOV, which has no raw value) are left out, so
    every model is scored on the same rows of known values.
    """
    import numpy as np
    import pandas as pd

    from mdctr import tracking
    from mdctr.data.prepare import read_prepared

    prepared = read_prepared(prepared_dir)
    spec, valid = prepared.spec, prepared.valid
    schema = spec.schema
    sparse = valid.sparse.numpy()
    keep = (sparse > 0).all(axis=1)
    frame: dict[str, Any] = {}
    for j, col in enumerate(schema.sparse):
        vocab = np.asarray(spec.vocab[col], dtype=np.int64 if spec.kinds[col] == "int" else object)
        frame[col] = vocab[sparse[keep, j] - 1]
    dense = valid.dense.numpy().astype(np.float64)
    for j, col in enumerate(schema.dense):
        frame[col] = dense[keep, j] * spec.std[col] + spec.mean[col]
    domains = valid.handcrafted.numpy()[keep]
    frame[schema.domain] = spec.raw_domains(domains)  # as served: the raw value when the data had one
    df = pd.DataFrame(frame)[list(schema.serving_columns)]
    log.info(
        "gate validation set: %d of %d validation rows (the rest hold unseen ids)",
        int(keep.sum()),
        len(valid),
    )
    return tracking.ValidationSet(
        frame=df, labels=valid.label.numpy()[keep].astype(np.float64), domains=domains, schema=schema
    )
