"""``mdctr data …`` commands and, until the pipeline lands, the ``run`` main job."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mdctr.cli import data_ops as _data_ops
from mdctr.cli.common import datasets_dir, user_errors
from mdctr.data import dataset_names, load_dataset
from mdctr.data.describe import describe as describe_table
from mdctr.data.describe import format_description

app = typer.Typer(help="Prepare and describe datasets.", no_args_is_help=True)
# import/validate (DVC + Great Expectations) live in their own module.
_data_ops.register(app)

DatasetOpt = typer.Option(..., "--dataset", "-d", help=f"One of: {', '.join(dataset_names())}.")
SourceOpt = typer.Option(None, "--source", "-s", help="Raw data directory (default: $DATASETS_DIR).")


@app.command("describe")
def describe(
    dataset: str = DatasetOpt,
    source: Path | None = SourceOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Rows, users, items, positive rate and per-domain rows/positive rate."""
    with user_errors():
        d = describe_table(load_dataset(dataset, source or datasets_dir()))
    typer.echo(json.dumps(d, indent=2) if as_json else format_description(d))


@app.command("prepare")
def prepare(
    dataset: str = DatasetOpt,
    source: Path | None = SourceOpt,
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (replaced atomically)."),
    split: str = typer.Option("random", help="random (seeded 80/10/10) or time."),
    seed: int = typer.Option(0, help="Split seed."),
) -> None:
    """Encode a dataset (train-only vocabularies/scalers) into train/valid/test parquet + feature_spec.json."""
    from mdctr.data.prepare import write_prepared

    with user_errors():
        loaded = load_dataset(dataset, source or datasets_dir())
        spec = write_prepared(loaded, out, split=split, seed=seed)  # type: ignore[arg-type]
    typer.echo(f"wrote {out}: {spec.meta['rows']} rows per split")
