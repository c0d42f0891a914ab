"""Your own table on the way into a run: one role per column, the source checked against the user's own files
before it is copied, options naming files refused, the time split and its error, the schema's name on outputs,
and the raw domain values carried into the prepared spec and the serving example."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mdctr.cli import app
from mdctr.config import ConfigError
from mdctr.data import DataError, load_dataset
from mdctr.data.prepare import prepare_in_memory
from mdctr.schema import SchemaError
from mdctr.steps.fetch_data import FetchConfig, check_source, dataset_name, fetch
from mdctr.steps.prepare_data import SERVING_EXAMPLE_FILE, PrepareConfig, prepare_data

SCHEMA = {
    "name": "shop",
    "sparse": ["user", "item"],
    "dense": ["price"],
    "label": "clicked",
    "domain": "country",
    "time": "ts",
}


def write_shop(root: Path, rows: int = 200, **over: object) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "user": [f"u{i}" for i in rng.integers(0, 30, rows)],
            "item": rng.integers(1, 20, rows),
            "price": rng.uniform(1, 9, rows).round(2),
            "clicked": rng.integers(0, 2, rows),
            "country": rng.choice(["us", "de", "fr"], rows),
            "ts": 1000 + np.arange(rows)[::-1],  # newest first: the time split must reorder
        }
    ).to_csv(root / "events.csv", index=False)
    schema = {k: v for k, v in {**SCHEMA, **over}.items() if v is not None}
    (root / "schema.yaml").write_text(yaml.safe_dump(schema))
    return root


def _plain(text: str) -> str:
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).replace("│", " ").split())


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"sparse": ["user", "item", "country"]}, "column 'country' is listed as sparse and domain"),
        ({"dense": ["price", "clicked"]}, "column 'clicked' is listed as dense and label"),
        ({"sparse": ["user", "ts"]}, "column 'ts' is listed as sparse and time"),
    ],
)
def test_a_column_with_two_roles_is_named(tmp_path: Path, over: dict, message: str) -> None:
    root = write_shop(tmp_path / "shop", **over)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_dataset("table", root)
    assert str(root / "schema.yaml") in str(err.value)
    if "domain" in message:  # says how to use the domain as a feature too
        assert "country_feature" in str(err.value)


def test_check_source_names_the_users_file_and_row(tmp_path: Path) -> None:
    root = write_shop(tmp_path / "mine")
    df = pd.read_csv(root / "events.csv")
    df.loc[6, "user"] = None
    df.to_csv(root / "events.csv", index=False)
    with pytest.raises(DataError) as err:
        fetch(out_dir=tmp_path / "raw", config=FetchConfig(dataset="table", source=str(root)))
    msg = str(err.value)
    assert f"{root / 'events.csv'} sparse column 'user'" in msg and "events.csv row 7" in msg
    assert not (tmp_path / "raw").exists()  # nothing was copied


def test_fetch_copies_the_source_and_versions_it_by_content(tmp_path: Path) -> None:
    root = write_shop(tmp_path / "shop")
    a = fetch(out_dir=tmp_path / "a", config=FetchConfig(dataset="table", source=str(root)))
    assert sorted(p.name for p in a.path.iterdir()) == ["events.csv", "schema.yaml"]
    assert a.rev == "local" and a.files == 2
    assert (a.path / "events.csv").read_bytes() == (root / "events.csv").read_bytes()
    b = fetch(out_dir=tmp_path / "b", config=FetchConfig(dataset="table", source=str(tmp_path / "shop")))
    assert b.md5 == a.md5
    (root / "events.csv").write_text((root / "events.csv").read_text().replace("u1,", "u2,", 1))
    c = fetch(out_dir=tmp_path / "c", config=FetchConfig(dataset="table", source=str(root)))
    assert c.md5 != a.md5
    assert dataset_name("table", {}, a.path) == "shop"
    assert dataset_name("synthetic", {}, a.path) == "synthetic"


def test_options_naming_files_are_refused_in_a_pipeline(tmp_path: Path) -> None:
    root = write_shop(tmp_path / "shop")
    with pytest.raises(
        ConfigError, match=r"option\(s\) \['path'\] name files outside the fetched data.*--source"
    ):
        check_source("table", None, {"path": str(root / "events.csv")})
    config = FetchConfig(dataset="table", dataset_options='{"schema": "s.yaml"}', source=str(root))
    with pytest.raises(ConfigError, match=r"\['schema'\]"):
        fetch(out_dir=tmp_path / "raw", config=config)


def test_time_split_needs_a_time_column(tmp_path: Path) -> None:
    root = write_shop(tmp_path / "shop", time=None)
    with pytest.raises(SchemaError, match="dataset 'shop' has no time column, so it cannot be split by time"):
        check_source("table", root, {}, split="time")
    with pytest.raises(SchemaError, match="split 'weekly' is unknown"):
        check_source("table", root, {}, split="weekly")


def test_time_split_puts_the_oldest_rows_in_train(tmp_path: Path) -> None:
    loaded = load_dataset("table", write_shop(tmp_path / "shop"))
    prepared = prepare_in_memory(loaded, split="time")
    assert prepared.spec.meta["split"] == "time"
    assert len(prepared.train) == 160 and len(prepared.test) == 20
    # rows were written newest first; train holds the 160 oldest, in time order
    oldest = loaded.table.sort_values("ts", kind="stable").head(160)
    assert prepared.train.label.numpy().tolist() == oldest["clicked"].astype(float).tolist()
    random = prepare_in_memory(loaded, split="random")
    assert random.train.label.numpy().tolist() != oldest["clicked"].astype(float).tolist()


def test_prepared_spec_and_serving_example_carry_raw_domain_values(tmp_path: Path) -> None:
    root = write_shop(tmp_path / "shop")
    out = prepare_data(source=root, out_dir=tmp_path / "prep", config=PrepareConfig(dataset="table"))
    from mdctr.data.prepare import read_prepared

    spec = read_prepared(out.path).spec
    assert spec.domain_values == ["de", "fr", "us"]
    example = pd.read_parquet(out.path / SERVING_EXAMPLE_FILE)
    raw = pd.read_csv(root / "events.csv").head(len(example))
    assert example["country"].tolist() == raw["country"].tolist()
    assert spec.raw_domains(np.array([2, 0])).tolist() == ["us", "de"]


def test_train_cli_split_time_error_and_run(tmp_path: Path) -> None:
    runner = CliRunner()
    no_time = write_shop(tmp_path / "no-time", time=None)
    res = runner.invoke(
        app, ["train", "-d", "table", "-s", str(no_time), "-m", "dnn", "--domains", "none", "--split", "time"]
    )
    assert res.exit_code == 2 and "has no time column, so it cannot be split by time" in _plain(res.output)

    shop = write_shop(tmp_path / "shop", rows=400)
    res = runner.invoke(
        app,
        ["train", "-d", "table", "-s", str(shop), "-m", "dnn", "--domains", "none", "--split", "time"]
        + ["--epochs", "1", "--batch-size", "128", "--json"],
    )
    assert res.exit_code == 0, res.output
    assert '"test_auc"' in res.output


def test_benchmark_and_pipeline_run_cli_refuse_a_time_split_without_time(tmp_path: Path) -> None:
    """Both fail in one line before any training or task starts."""
    no_time = write_shop(tmp_path / "no-time", time=None)
    runner = CliRunner()
    for argv in (
        ["benchmark", "-d", "table", "-s", str(no_time), "--models", "dnn", "--split", "time"],
        ["pipeline", "run", "-d", "table", "--source", str(no_time), "--split", "time"],
    ):
        res = runner.invoke(app, argv)
        assert res.exit_code == 2, (argv, res.output)
        assert "dataset 'shop' has no time column" in _plain(res.output)
        assert "Traceback" not in res.output


def test_pipeline_run_cli_names_the_users_file_for_a_bad_table(tmp_path: Path) -> None:
    root = write_shop(tmp_path / "mine")
    df = pd.read_csv(root / "events.csv")
    df.loc[[2, 9], "clicked"] = 7
    df.to_csv(root / "events.csv", index=False)
    res = CliRunner().invoke(
        app, ["pipeline", "run", "-d", "table", "--source", str(root), "--runs-dir", str(tmp_path)]
    )
    assert res.exit_code == 2
    out = _plain(res.output)
    assert f"{root / 'events.csv'} label column 'clicked' must be 0/1" in out and "rows 3, 10" in out
    assert len(res.output.strip().splitlines()) <= 3 and not (tmp_path / "kfp").exists()


def test_gate_validation_rows_carry_raw_domain_values(tmp_path: Path) -> None:
    """The promotion gate re-scores through the registered pyfunc, so its rows hold what a request holds."""
    from mdctr.steps.register_model import validation_set

    root = write_shop(tmp_path / "shop")
    out = prepare_data(source=root, out_dir=tmp_path / "prep", config=PrepareConfig(dataset="table"))
    rows = validation_set(out.path)
    assert set(rows.frame["country"]) <= {"de", "fr", "us"}
    ids = {"de": 0, "fr": 1, "us": 2}
    assert [ids[c] for c in rows.frame["country"]] == rows.domains.tolist()
