"""Trainer checkpoints load with ``weights_only=True``: a resume works, a planted pickle never runs."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from mdctr.data.prepare import PreparedData
from mdctr.models import build_model
from mdctr.routing.sources import model_inputs
from mdctr.training import TrainConfig, TrainingError, fit, latest_checkpoint
from mdctr.training.trainer import load_checkpoint


def _fit(prepared: PreparedData, config: TrainConfig):
    torch.manual_seed(config.seed)
    model = build_model("dnn", model_inputs(prepared, 1), width=0.25)
    return fit(model, prepared.train, prepared.valid, config)


def test_checkpoint_holds_only_tensors_and_plain_data(small_prepared: PreparedData, tmp_path: Path) -> None:
    config = TrainConfig(epochs=2, batch_size=512, device="cpu", checkpoint_dir=str(tmp_path))
    _fit(small_prepared, config)
    state = load_checkpoint(latest_checkpoint(tmp_path))  # weights_only=True inside
    assert state["epoch"] == 2 and isinstance(state["rng"]["torch"], torch.Tensor)
    assert state["optimizer"]["state"] and len(state["history"]) == 2
    result = _fit(small_prepared, config)  # the resume path reads the same file through load_checkpoint
    assert result.resumed_from == 2 and len(result.history) == 2


def test_planted_checkpoint_pickle_is_refused_and_never_runs(
    small_prepared: PreparedData, tmp_path: Path, pickle_exploit: type
) -> None:
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    with (ckpt / "epoch-001.pt").open("wb") as f:
        pickle.dump({"epoch": 1, "model": pickle_exploit(marker)}, f)
    config = TrainConfig(epochs=2, batch_size=512, device="cpu", checkpoint_dir=str(ckpt))
    with pytest.raises(TrainingError, match="refusing it"):
        _fit(small_prepared, config)
    assert not marker.exists()
    # control: the same file does run code when unpickled without restrictions
    with (ckpt / "epoch-001.pt").open("rb") as f:
        pickle.load(f)["model"].close()
    assert marker.exists()
