"""Step: register the winner's bundle as an MLflow pyfunc (alias ``challenger``) and run the promotion gate."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdctr.steps.common import tracking_uri_or_none
from mdctr.steps.evaluate import WINNER_BUNDLE_DIR, WINNER_ENTRY_FILE
from mdctr.steps.prepare_data import SERVING_EXAMPLE_FILE

log = logging.getLogger(__name__)

PROMOTE = "promote"
KEEP = "keep"


@dataclass(frozen=True)
class RegisterConfig:
    """Attributes: MLflow URI, the parent run (where the model is logged when the winner has no run of its
    own) and the gate's per-domain ``tolerance`` (see :func:`mdctr.tracking.decide_promotion`)."""

    tracking_uri: str = ""
    parent_run_id: str = ""
    tolerance: float = 0.002


@dataclass(frozen=True)
class RegisterOutput:
    """Attributes: ``decision`` (``promote``/``keep``), registered ``version``, its ``model_uri`` and the
    gate's ``reason`` and numbers."""

    decision: str
    version: str
    model_uri: str
    reason: str
    gate: dict[str, Any]


def register_model(*, winner_dir: Path | str, config: RegisterConfig) -> RegisterOutput:
    """Log ``winner_dir/bundle`` as a pyfunc in the winner's training run, register it (alias challenger),
    decide whether it should replace the champion, and close the parent run (FINISHED)."""
    import pandas as pd

    from mdctr import tracking

    winner_dir = Path(winner_dir)
    entry = json.loads((winner_dir / WINNER_ENTRY_FILE).read_text())
    run_id = entry.get("run_id") or config.parent_run_id
    if not run_id:
        raise ValueError(
            "register_model needs an MLflow run: the winner has no run id and no parent run is given"
        )
    uri = tracking_uri_or_none(config.tracking_uri)
    example = pd.read_parquet(winner_dir / SERVING_EXAMPLE_FILE)
    registered = tracking.register_bundle(
        uri, winner_dir / WINNER_BUNDLE_DIR, run_id=run_id, input_example=example
    )
    gate = tracking.decide_promotion(uri, registered.version, tolerance=config.tolerance)
    from mdctr.tracking.registry import write_model_card  # data version, FLOPs, per-domain metrics, gate

    write_model_card(uri, registered.version)
    decision = PROMOTE if gate.promote else KEEP
    if config.parent_run_id:
        # the last step that logs to the parent run (promotion only moves aliases): close it
        tracking.end_parent_run(uri, config.parent_run_id)
    log.info(
        "registered %s (%s): gate says %s — %s", registered.model_uri, entry["entry"], decision, gate.reason
    )
    return RegisterOutput(
        decision=decision,
        version=registered.version,
        model_uri=registered.model_uri,
        reason=gate.reason,
        gate=gate.to_dict(),
    )
