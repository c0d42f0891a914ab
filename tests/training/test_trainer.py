from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mdctr.data.prepare import PreparedData
from mdctr.data.tensors import TensorData
from mdctr.models import ModelInputs, build_model
from mdctr.routing import model_inputs
from mdctr.training import TrainConfig, TrainingError, fit, latest_checkpoint, predict


def _inputs(prepared: PreparedData) -> ModelInputs:
    return model_inputs(prepared, 1)


def _train(prepared: PreparedData, config: TrainConfig, **kw):
    torch.manual_seed(config.seed)
    model = build_model("dnn", _inputs(prepared), width=0.25, config={"dropout": 0.1})
    result = fit(model, prepared.train, prepared.valid, config, **kw)
    return model, result


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


CFG = TrainConfig(epochs=3, batch_size=256, patience=5, device="cpu")


def test_same_seed_gives_bit_identical_weights(small_prepared: PreparedData) -> None:
    m1, r1 = _train(small_prepared, CFG)
    m2, r2 = _train(small_prepared, CFG)
    _assert_same(_weights(m1), _weights(m2))
    assert [h["train_loss"] for h in r1.history] == [h["train_loss"] for h in r2.history]
    m3, _ = _train(small_prepared, TrainConfig(**{**CFG.__dict__, "seed": 1}))
    assert not torch.equal(m1.mlp[0].weight, m3.mlp[0].weight)


def test_history_and_result_fields(small_prepared: PreparedData) -> None:
    _, r = _train(small_prepared, CFG)
    assert [h["epoch"] for h in r.history] == [1, 2, 3]
    keys = {"epoch", "train_loss", "valid_auc", "valid_logloss", "samples_per_s", "seconds"}
    assert keys <= set(r.history[0])
    assert r.best_valid_auc == max(h["valid_auc"] for h in r.history)
    assert r.train_samples_per_s > 0 and r.wall_s > 0
    assert 0.5 < r.best_valid_auc <= 1.0  # the synthetic label is learnable


def test_early_stopping_restores_best_weights(small_prepared: PreparedData) -> None:
    # validation labels are the training labels flipped: the better the model learns, the lower its
    # validation AUC, so early stopping must fire (whatever the thread count or CPU does to the numerics)
    valid = small_prepared.valid
    flipped = dataclasses.replace(valid, label=1.0 - valid.label)
    config = TrainConfig(epochs=8, batch_size=128, lr=0.01, patience=1, device="cpu")
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    torch.manual_seed(0)
    model = build_model("dnn", _inputs(small_prepared), width=0.25)

    def keep(record: dict[str, float]) -> None:
        snapshots[int(record["epoch"])] = _weights(model)

    result = fit(model, small_prepared.train, flipped, config, on_epoch=keep)
    aucs = [h["valid_auc"] for h in result.history]
    assert len(result.history) < 8, "patience=1 should have stopped training early"
    assert result.best_epoch == int(np.nanargmax(aucs)) + 1
    assert result.best_epoch < len(result.history)
    _assert_same(_weights(model), snapshots[result.best_epoch])
    auc_now = _auc(model, flipped)
    assert math.isclose(auc_now, result.best_valid_auc, rel_tol=1e-9)


def _auc(model: torch.nn.Module, valid: TensorData) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(valid.label.numpy(), predict(model, valid, 1000)))


class _Killed(RuntimeError):
    pass


def test_resume_after_kill_equals_uninterrupted_run(small_prepared: PreparedData, tmp_path: Path) -> None:
    reference, ref_result = _train(small_prepared, CFG)

    config = TrainConfig(**{**CFG.__dict__, "checkpoint_dir": str(tmp_path / "ckpt")})

    def kill_after_first(record: dict[str, float]) -> None:
        if record["epoch"] == 1:
            raise _Killed

    with pytest.raises(_Killed):
        _train(small_prepared, config, on_epoch=kill_after_first)
    assert latest_checkpoint(tmp_path / "ckpt").name == "epoch-001.pt"

    resumed, result = _train(small_prepared, config)  # a fresh process would rebuild the model the same way
    assert result.resumed_from == 1
    _assert_same(_weights(reference), _weights(resumed))
    assert [h["valid_auc"] for h in result.history] == [h["valid_auc"] for h in ref_result.history]
    assert latest_checkpoint(tmp_path / "ckpt").name == "epoch-003.pt"

    # resuming a finished run trains nothing more and returns the same weights
    again, result2 = _train(small_prepared, config)
    assert result2.resumed_from == 3 and len(result2.history) == 3
    _assert_same(_weights(reference), _weights(again))


def test_resume_refuses_a_checkpoint_from_another_config(
    small_prepared: PreparedData, tmp_path: Path
) -> None:
    config = TrainConfig(epochs=1, batch_size=512, device="cpu", checkpoint_dir=str(tmp_path))
    _train(small_prepared, config)
    with pytest.raises(TrainingError, match="lr"):
        _train(small_prepared, TrainConfig(**{**config.__dict__, "lr": 0.01}))


def test_predict_returns_probabilities_in_row_order(small_prepared: PreparedData) -> None:
    torch.manual_seed(0)
    model = build_model("dnn", _inputs(small_prepared), width=0.25)
    model.train()
    p_small = predict(model, small_prepared.test, batch_size=7)
    p_big = predict(model, small_prepared.test, batch_size=100_000)
    assert p_small.shape == (len(small_prepared.test),) and p_small.dtype == np.float64
    assert np.all((p_small > 0) & (p_small < 1))
    np.testing.assert_allclose(p_small, p_big, rtol=1e-5)
    assert model.training, "predict must restore the model's mode"


def test_aux_loss_is_added(small_prepared: PreparedData) -> None:
    """A model whose aux loss dominates must change its weights according to it."""

    class WithAux(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = build_model("dnn", _inputs(small_prepared), width=0.1)
            self.pull = torch.nn.Parameter(torch.zeros(()))

        def forward(self, batch):  # type: ignore[no-untyped-def]
            return self.inner(batch) + 0 * self.pull

        def aux_loss(self) -> torch.Tensor:
            return (self.pull - 3.0) ** 2

        def end_epoch(self, train) -> None:  # type: ignore[no-untyped-def]  # the rest of the CTRModel API
            self.inner.end_epoch(train)

    torch.manual_seed(0)
    model = WithAux()
    fit(model, small_prepared.train, small_prepared.valid, TrainConfig(epochs=1, batch_size=64, lr=0.05))  # type: ignore[arg-type]
    assert model.pull.item() > 1.0
