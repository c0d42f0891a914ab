"""benchmarks/diagnose_routing.py: scoring with running vs batch statistics, leaving the model unchanged."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from mdctr.data.prepare import prepare_in_memory
from mdctr.data.synthetic import generate
from mdctr.models import build_model
from mdctr.routing import model_inputs

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "diagnose_routing.py"


def _script():
    spec = importlib.util.spec_from_file_location("diagnose_routing", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_score_served_and_with_batch_statistics() -> None:
    diag = _script()
    prepared = prepare_in_memory(generate(rows=600, num_sparse=3, num_dense=1, vocab_size=20, num_domains=2))
    torch.manual_seed(0)
    model = build_model("adaptive2", model_inputs(prepared, 1), config={"backbone": "star"})
    model.train()(prepared.train.batch(0, 256))  # move the running statistics off their initial values
    before = {k: v.clone() for k, v in model.state_dict().items()}
    valid = prepared.valid

    served, codes = diag.score(model, valid, batch_stats=False)
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(valid.batch(0, len(valid)))).numpy()
    assert served.shape == (len(valid),) and codes.shape == (len(valid),)
    assert served == pytest.approx(expected, abs=1e-6)

    batch, _ = diag.score(model, valid, batch_stats=True)
    assert not (abs(batch - served) < 1e-6).all()  # batch statistics really were used
    assert not model.training and all(not m.training for m in model.modules())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
    assert changed == []  # nothing was updated
