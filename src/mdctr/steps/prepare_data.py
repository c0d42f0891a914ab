"""Step: encode and split a validated dataset (train-only vocabularies and scalers) into prepared parquet."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mdctr.steps.common import parse_options

log = logging.getLogger(__name__)

#: a few raw rows of the serving columns: the MLflow signature and input example of the registered model
SERVING_EXAMPLE_FILE = "serving_example.parquet"
#: planted domain ids per split (synthetic data only), for the domain report
PLANTED_FILE = "planted_domain.npz"
EXAMPLE_ROWS = 5
_ROW = "__row__"


@dataclass(frozen=True)
class PrepareConfig:
    """Attributes: dataset name, its JSON options, ``split`` (``random`` 80/10/10 or ``time``), split ``seed``;
    for the time split, ``train_window`` and ``eval_period`` (spans such as ``"7d"`` or ``"10%"``; ``""``: every
    older row / the newest 20% of rows), see :func:`mdctr.data.encode.split_table`."""

    dataset: str
    dataset_options: str = "{}"
    split: str = "random"
    seed: int = 0
    train_window: str = ""
    eval_period: str = ""

    def periods(self) -> Any:
        """The :class:`mdctr.data.prepare.Periods` these settings name."""
        from mdctr.data.prepare import Periods

        return Periods(self.train_window or None, self.eval_period or None)


@dataclass(frozen=True)
class PrepareOutput:
    """Attributes: ``path`` of the prepared directory, ``rows`` per split, number of features and domains."""

    path: Path
    rows: dict[str, int]
    features: int
    num_domains: int


def prepare_data(*, source: Path | str, out_dir: Path | str, config: PrepareConfig) -> PrepareOutput:
    """Load ``config.dataset`` from ``source`` and write ``train/valid/test.parquet`` + ``feature_spec.json``
    (plus ``serving_example.parquet`` and, for planted data, ``planted_domain.npz``) to ``out_dir``."""
    from mdctr.data import load_dataset
    from mdctr.data.encode import SPLIT_NAMES, split_table
    from mdctr.data.prepare import write_prepared

    out_dir = Path(out_dir)
    options = parse_options(config.dataset_options, what="dataset_options")
    loaded = load_dataset(config.dataset, source, **options)
    periods = config.periods()
    spec = write_prepared(
        loaded,
        out_dir,
        split=config.split,  # type: ignore[arg-type]
        seed=config.seed,
        periods=periods,
    )
    schema = loaded.schema
    example = loaded.table[list(schema.serving_columns)].head(EXAMPLE_ROWS).reset_index(drop=True)
    # a request carries the domain as the user's data holds it (e.g. "books"), when the data had a raw value
    example[schema.domain] = spec.raw_domains(example[schema.domain].to_numpy())
    example.to_parquet(out_dir / SERVING_EXAMPLE_FILE, index=False)
    planted = loaded.extras.get("planted_domain")
    if planted is not None:
        # the same seeded split write_prepared made, on a copy carrying each row's position
        table = loaded.table.assign(**{_ROW: np.arange(len(loaded.table))})
        parts = split_table(
            table,
            schema,
            kind=config.split,  # type: ignore[arg-type]
            seed=config.seed,
            train_window=periods.train_window,
            eval_period=periods.eval_period,
        )
        planted = np.asarray(planted)
        np.savez(out_dir / PLANTED_FILE, **{k: planted[parts[k][_ROW].to_numpy()] for k in SPLIT_NAMES})
    rows = {k: int(v) for k, v in spec.meta["rows"].items()}
    log.info("prepared %s: %s rows, %d features", config.dataset, rows, len(schema.features))
    return PrepareOutput(
        path=out_dir, rows=rows, features=len(schema.features), num_domains=schema.num_domains
    )
