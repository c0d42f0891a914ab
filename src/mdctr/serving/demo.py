"""A tiny trained bundle for tests, the serving benchmark and trying the serving path without a dataset.

The table mimics a real one's column kinds: open-vocabulary integer ids (``user_id``, ``item_id``), a
closed-vocabulary string column (``gender``), a dense column (``age``) and three hand-crafted domains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mdctr.data.encode import FeatureSpec
from mdctr.data.tensors import TensorData
from mdctr.models import ModelInputs, build_model
from mdctr.schema import FeatureSchema
from mdctr.serving.bundle import save_bundle

log = logging.getLogger(__name__)

DEMO_SCHEMA = FeatureSchema(
    name="demo",
    sparse=("user_id", "item_id", "gender"),
    dense=("age",),
    label="label",
    domain="domain",
    domain_names=("young", "middle", "old"),
    user="user_id",
    item="item_id",
)


def demo_table(rows: int = 2000, *, seed: int = 0) -> pd.DataFrame:
    """A raw canonical table following :data:`DEMO_SCHEMA`; clicks depend on gender, age and item parity."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 70, rows)
    domain = np.digitize(age, [30, 50]).astype("int64")
    gender = rng.choice(np.array(["F", "M"], dtype=object), rows)
    item = rng.integers(1, 200, rows)
    logit = 0.8 * (gender == "F") - 0.03 * (age - 40) + 0.6 * (item % 2) - 0.5
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int8")
    return pd.DataFrame(
        {
            "user_id": rng.integers(1, 500, rows).astype("int64"),
            "item_id": item.astype("int64"),
            "gender": pd.Series(gender, dtype=object),
            "age": age.astype("float64"),
            "label": label,
            "domain": domain,
        }
    )


@dataclass(frozen=True)
class DemoBundle:
    """A bundle written by :func:`make_demo_bundle` and the raw rows it can score."""

    path: Path
    table: pd.DataFrame
    spec: FeatureSpec


def make_demo_bundle(
    directory: Path | str,
    *,
    rows: int = 2000,
    seed: int = 0,
    epochs: int = 3,
    hidden: tuple[int, ...] = (16,),
    metrics: dict[str, Any] | None = None,
    domain_source: str = "none",
    miner: Any | None = None,
) -> DemoBundle:
    """Train a small ``dnn`` on :func:`demo_table` (a few Adam epochs, seconds on a CPU) and save its bundle.

    ``metrics`` are stored as the bundle's test metrics as given (tests of the promotion gate choose them);
    the demo measures nothing itself. ``miner`` is required for ``domain_source="mined"``.
    """
    torch.manual_seed(seed)
    table = demo_table(rows, seed=seed)
    spec = FeatureSpec.fit(table, DEMO_SCHEMA)
    data = TensorData.from_frame(spec.encode_frame(table), DEMO_SCHEMA)
    inputs = ModelInputs(vocab_sizes=spec.vocab_sizes, num_dense=spec.num_dense, num_domains=1, embed_dim=8)
    config = {"hidden": list(hidden)}
    model = build_model("dnn", inputs, config=config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in data.batches(256, shuffle=True, generator=gen):
            loss = F.binary_cross_entropy_with_logits(model(batch), batch.label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    path = save_bundle(
        directory,
        model=model,
        model_name="dnn",
        model_config=config,
        width=1.0,
        spec=spec,
        domain_source=domain_source,
        miner=miner,
        metrics=metrics,
    )
    return DemoBundle(path=path, table=table, spec=spec)
