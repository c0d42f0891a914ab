"""Writing a canonical table as a served-request log (the :mod:`mdctr.serving.requestlog` layout), without a
server: for tests, benchmarks and back-filling a log from stored traffic. ``mdctr serve --log`` is the
production writer; this one writes the same files (schema, partitions, names, zstd) from a DataFrame."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mdctr.schema import FeatureSchema
from mdctr.serving.requestlog import (
    COMPRESSION,
    LOG_DOMAIN,
    LOG_MINED_DOMAIN,
    LOG_MODEL,
    LOG_PREDICTION,
    LOG_REQUEST_ID,
    LOG_SERVED_AT,
    LOG_VERSION,
    file_name,
    log_schema,
    partition,
)


def write_log(
    table: pd.DataFrame,
    schema: FeatureSchema,
    out_dir: Path | str,
    *,
    served_ms: np.ndarray,
    prediction: np.ndarray,
    mined: np.ndarray | None = None,
    route_handcrafted: bool = True,
    model: str = "replay",
    version: str = "1",
    rows_per_file: int = 100_000,
) -> list[Path]:
    """Write ``table`` (canonical raw columns: features and domain id) as log files under ``out_dir``.

    ``served_ms`` [N] int64 unix ms (UTC) per row; ``prediction`` [N]; ``mined`` [N] codes or None;
    ``route_handcrafted``: fill ``mdctr_domain`` from the domain column (else null). Rows are written in the
    given order, one file per ``rows_per_file`` rows and UTC date; request ids are ``<uuid>:<i>``.
    """
    out = Path(out_dir)
    n = len(table)
    arrow_schema = log_schema(schema)
    dates = pd.to_datetime(served_ms, unit="ms", utc=True).date
    written = []
    prefix = uuid.uuid4().hex
    for start in range(0, n, rows_per_file):
        stop = min(n, start + rows_per_file)
        for day in sorted(set(dates[start:stop])):
            idx = start + np.flatnonzero(dates[start:stop] == day)
            cols: dict[str, pa.Array] = {}
            for c in schema.sparse:
                cols[c] = pa.array(table[c].to_numpy()[idx].astype(str), pa.string())
            for c in schema.dense:
                cols[c] = pa.array(
                    table[c].to_numpy()[idx].astype(np.float64), pa.float64(), from_pandas=True
                )
            dom = table[schema.domain].to_numpy()[idx].astype(np.int64)
            cols[schema.domain] = pa.array(dom, pa.int64())
            cols[LOG_REQUEST_ID] = pa.array([f"{prefix}:{i}" for i in idx], pa.string())
            cols[LOG_SERVED_AT] = pa.array(served_ms[idx].astype(np.int64)).cast(pa.timestamp("ms", tz="UTC"))
            cols[LOG_MODEL] = pa.array([model] * len(idx), pa.string())
            cols[LOG_VERSION] = pa.array([version] * len(idx), pa.string())
            cols[LOG_DOMAIN] = (
                pa.array(dom.astype(np.int32), pa.int32())
                if route_handcrafted
                else pa.nulls(len(idx), pa.int32())
            )
            cols[LOG_MINED_DOMAIN] = (
                pa.nulls(len(idx), pa.int32())
                if mined is None
                else pa.array(mined[idx].astype(np.int32), pa.int32())
            )
            cols[LOG_PREDICTION] = pa.array(prediction[idx].astype(np.float64), pa.float64())
            folder = out / partition(day)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / file_name(int(served_ms[idx[0]]))
            tmp = folder / f".{path.name}.tmp"
            pq.write_table(pa.table(cols, schema=arrow_schema), tmp, compression=COMPRESSION)
            os.replace(tmp, path)
            written.append(path)
    return written


def request_ids(paths: list[Path]) -> list[str]:
    """Every ``mdctr_request_id`` in the given log files, in file order (to write a labels file)."""
    return [v for p in paths for v in pq.read_table(p, columns=[LOG_REQUEST_ID]).column(0).to_pylist()]
