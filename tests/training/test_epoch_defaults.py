"""Early stopping, not a small epoch cap, ends a run: every entry point defaults to the trainer's generous cap."""

from __future__ import annotations

import inspect

from typer.testing import CliRunner

from mdctr.cli import app
from mdctr.cli.train import MAX_EPOCHS
from mdctr.pipeline import run_local
from mdctr.training import TrainConfig


def test_the_trainer_caps_generously_and_stops_on_patience() -> None:
    cfg = TrainConfig()
    # on 100k-row data a batch of 4096 makes ~25 steps an epoch: a cap of 2–3 epochs would end runs long before
    # validation AUC stops improving, so the cap is 20 and patience (2 epochs without a better AUC) ends a run
    assert (cfg.epochs, cfg.patience) == (20, 2)


def test_cli_pipeline_and_local_run_use_the_trainer_cap() -> None:
    from mdctr.pipeline import _pipeline_module, load_pipeline

    default_parameters, training_pipeline = _pipeline_module().default_parameters, load_pipeline()
    assert TrainConfig().epochs == MAX_EPOCHS  # spelt out in the CLI so it starts without torch
    assert default_parameters().max_epochs == TrainConfig().epochs
    assert training_pipeline.component_spec.inputs["epochs"].default == TrainConfig().epochs
    # run_local leaves the cap to the pipeline default unless given one
    assert inspect.signature(run_local).parameters["epochs"].default is None


def test_cli_options_say_max_epochs() -> None:
    for command in (["train"], ["benchmark"], ["pipeline", "run"]):
        out = " ".join(CliRunner().invoke(app, [*command, "--help"]).output.replace("│", " ").split())
        assert "--max-epochs" in out and "early stopping (--patience, --early-stop-metric)" in out, command
        assert "--patience" in out and "--early-stop-metric" in out and "--calibrate" in out, command
