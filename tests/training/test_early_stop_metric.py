"""Early stopping on validation logloss as well as AUC (issue #23 item 6): the chosen epoch, the restored
weights, config checks, old checkpoints, and the CLI defaults agreeing with TrainConfig's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mdctr.config import ConfigError
from mdctr.data.prepare import PreparedData
from mdctr.models import build_model
from mdctr.routing import model_inputs
from mdctr.training import TrainConfig, fit
from mdctr.training import trainer as trainer_module

#: scripted validation (AUC, logloss) per epoch: AUC keeps rising while logloss is best at epoch 2, as when a
#: model grows over-confident (the Ciao time split of issue #23)
SCRIPT = [(0.60, 0.50), (0.70, 0.45), (0.80, 0.60), (0.81, 0.70), (0.82, 0.80)]


def _fit_scripted(
    prepared: PreparedData, metric: str, monkeypatch: pytest.MonkeyPatch, **kw: object
) -> tuple[torch.nn.Module, object, dict[int, dict[str, torch.Tensor]]]:
    calls = iter(SCRIPT)
    monkeypatch.setattr(trainer_module, "auc_logloss", lambda labels, probs: next(calls))
    config = TrainConfig(epochs=5, batch_size=512, patience=2, device="cpu", early_stop_metric=metric, **kw)
    torch.manual_seed(0)
    model = build_model("dnn", model_inputs(prepared, 1), width=0.25)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def keep(record: dict[str, float]) -> None:
        snapshots[int(record["epoch"])] = {k: v.clone() for k, v in model.state_dict().items()}

    result = fit(model, prepared.train, prepared.valid, config, on_epoch=keep)
    return model, result, snapshots


def test_logloss_early_stopping_keeps_the_lowest_logloss_epoch(
    small_prepared: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, result, snapshots = _fit_scripted(small_prepared, "logloss", monkeypatch)
    # epoch 2 has the lowest logloss; epochs 3 and 4 are worse, so patience 2 stops after epoch 4
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.best_epoch == 2 and result.early_stop_metric == "logloss"
    assert result.best_valid_logloss == 0.45 and result.best_valid_auc == 0.70
    for k, v in model.state_dict().items():  # the restored weights are epoch 2's
        assert torch.equal(v, snapshots[2][k]), k


def test_auc_early_stopping_is_still_the_default(
    small_prepared: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert TrainConfig().early_stop_metric == "auc"
    _, result, _ = _fit_scripted(small_prepared, "auc", monkeypatch)
    assert len(result.history) == 5 and result.best_epoch == 5 and result.best_valid_auc == 0.82


def test_unknown_metric_and_calibration_fail_at_load_with_their_names() -> None:
    with pytest.raises(ConfigError, match="early_stop_metric must be one of"):
        TrainConfig(early_stop_metric="accuracy")
    with pytest.raises(ConfigError, match="calibrate must be one of"):
        TrainConfig(calibrate="platt")


def test_checkpoints_from_before_the_option_still_resume() -> None:
    # a checkpoint's resume key is TrainConfig without the resume-free fields; the default metric adds nothing
    key = trainer_module._resume_key(TrainConfig())
    assert "early_stop_metric" not in key and "calibrate" not in key
    assert (
        trainer_module._resume_key(TrainConfig(early_stop_metric="logloss"))["early_stop_metric"] == "logloss"
    )


def test_resume_restores_the_logloss_best_epoch(
    small_prepared: PreparedData, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class _Killed(RuntimeError):
        pass

    def kill_after_third(record: dict[str, float]) -> None:
        if record["epoch"] == 3:
            raise _Killed

    calls = iter(SCRIPT)
    monkeypatch.setattr(trainer_module, "auc_logloss", lambda labels, probs: next(calls))
    config = TrainConfig(
        epochs=5,
        batch_size=512,
        patience=2,
        device="cpu",
        early_stop_metric="logloss",
        checkpoint_dir=str(tmp_path),
    )
    torch.manual_seed(0)
    with pytest.raises(_Killed):
        fit(build_model("dnn", model_inputs(small_prepared, 1), width=0.25), small_prepared.train,
            small_prepared.valid, config, on_epoch=kill_after_third)  # fmt: skip
    torch.manual_seed(0)
    result = fit(build_model("dnn", model_inputs(small_prepared, 1), width=0.25), small_prepared.train,
                 small_prepared.valid, config)  # fmt: skip
    # epoch 4 (logloss 0.70) is the second without improvement on the restored best score (0.45 at epoch 2)
    assert result.resumed_from == 3 and len(result.history) == 4 and result.best_epoch == 2


def test_cli_defaults_agree_with_train_config() -> None:
    from mdctr.cli import train as cli_train

    assert TrainConfig().patience == cli_train.PATIENCE
    assert TrainConfig().early_stop_metric == cli_train.EARLY_STOP_METRIC
