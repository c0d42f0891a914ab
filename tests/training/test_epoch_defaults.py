"""Early stopping, not a small epoch cap, ends a run: every entry point defaults to the trainer's generous cap."""

from __future__ import annotations

from typer.testing import CliRunner

from mdctr.cli import app
from mdctr.cli.train import MAX_EPOCHS
from mdctr.pipeline import PipelineArguments
from mdctr.training import TrainConfig


def test_the_trainer_caps_generously_and_stops_on_patience() -> None:
    cfg = TrainConfig()
    # on 100k-row data a batch of 4096 makes ~25 steps an epoch: a cap of 2–3 epochs would end runs long before
    # validation AUC stops improving, so the cap is 20 and patience (2 epochs without a better AUC) ends a run
    assert (cfg.epochs, cfg.patience) == (20, 2)


def test_cli_pipeline_and_local_run_use_the_trainer_cap() -> None:
    from mdctr.pipeline import load_pipeline

    training_pipeline = load_pipeline()
    assert TrainConfig().epochs == MAX_EPOCHS  # spelt out in the CLI so it starts without torch
    assert PipelineArguments().epochs == TrainConfig().epochs
    assert training_pipeline.component_spec.inputs["epochs"].default == TrainConfig().epochs
    # a local run (run_local's arguments) keeps the pipeline's cap unless given one
    assert PipelineArguments.local().epochs == TrainConfig().epochs


def test_cli_options_say_max_epochs() -> None:
    for command in (["train"], ["benchmark"], ["pipeline", "run"]):
        out = " ".join(CliRunner().invoke(app, [*command, "--help"]).output.replace("│", " ").split())
        assert "--max-epochs" in out and "early stopping (--patience, --early-stop-metric)" in out, command
        assert "--patience" in out and "--early-stop-metric" in out and "--calibrate" in out, command
