from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mdctr.config import ConfigError
from mdctr.evaluation.leaderboard import (
    NoCandidateError,
    RunRecord,
    build_leaderboard,
    pick_winner,
    read_run_store,
    to_markdown,
    write_leaderboard,
)
from mdctr.steps.grid import GridConfig
from mdctr.steps.grid_run import run_grid
from mdctr.training import TrainConfig
from mdctr.training.entry_result import EntryKey, EntryMetrics, EntryResult

BASE_COLUMNS = {
    "rank", "entry", "model", "domain_source", "seeds", "width", "flops", "dense_params", "auc_mean",
    "auc_std", "logloss_mean", "logloss_std", "vs_dnn_diff", "vs_dnn_p", "vs_dnn_test", "vs_best_diff",
    "vs_best_p", "vs_best_test",
}  # fmt: skip


def _records(seeds: int) -> list[RunRecord]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500).astype(float)
    out = []
    for model, source, noise in (("dnn", "none", 1.0), ("star", "handcrafted", 0.5)):
        for s in range(seeds):
            p = 1 / (1 + np.exp(-(y - 0.5 + rng.normal(0, noise, y.size))))
            auc = 0.70 + (0.05 if model == "star" else 0.0) + 0.001 * s
            out.append(
                RunRecord(
                    model, source, s, 1.0, 1e5, 1000, auc, 0.6, {"a": auc, "b": auc - 0.01}, y, p,
                    valid_auc=auc - 0.01,
                )
            )  # fmt: skip
    return out


def test_leaderboard_aggregates_and_tests(tmp_path: Path) -> None:
    df = build_leaderboard(_records(3))
    assert BASE_COLUMNS | {"auc[a]", "auc[b]"} <= set(df.columns)
    assert list(df["entry"]) == ["star/handcrafted", "dnn/none"]
    best, dnn = df.iloc[0], df.iloc[1]
    assert best["seeds"] == 3 and best["auc_mean"] == np.mean([0.75, 0.751, 0.752])
    assert best["auc_std"] > 0
    assert best["vs_dnn_test"] == "paired_t" and best["vs_dnn_diff"] > 0
    assert dnn["vs_dnn_test"] == "self" and math.isnan(dnn["vs_dnn_p"])
    assert dnn["vs_best_test"] == "paired_t" and dnn["vs_best_diff"] < 0

    assert best["auc_ci_low"] < best["auc_mean"] < best["auc_ci_high"]
    assert best["vs_dnn_p_holm"] >= best["vs_dnn_p"] and dnn["vs_best_p_holm"] >= dnn["vs_best_p"]

    one = build_leaderboard(_records(1))
    assert one.iloc[0]["vs_dnn_test"] == "delong" and math.isnan(one.iloc[0]["auc_std"])
    # one seed: the CI is DeLong's around that seed's AUC on the pooled rows
    assert one.iloc[0]["auc_ci_low"] < one.iloc[0]["auc_ci_high"]

    paths = write_leaderboard(df, tmp_path)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    assert set(pd.read_csv(paths["csv"]).columns) == set(df.columns)
    md = paths["markdown"].read_text()
    assert "star/handcrafted" in md and "±" in md and "AUC a" in md
    data = json.loads(paths["json"].read_text())
    assert data["entries"][0]["entry"] == "star/handcrafted" and data["attrs"]["baseline"] == "dnn/none"
    assert paths["auc_vs_flops"].read_bytes()[:4] == b"\x89PNG"


def _disagreeing_records() -> list[RunRecord]:
    """Entry A is best on validation, entry B on test; within A, seed 1 is best on validation, seed 0 on test."""
    rows = [
        ("a", 0, 0.80, 0.72),
        ("a", 1, 0.81, 0.70),
        ("b", 0, 0.75, 0.79),
        ("b", 1, 0.76, 0.78),
    ]
    return [
        RunRecord(m, "handcrafted", seed, 1.0, 1e5, 1000, test, 0.6, valid_auc=valid)
        for m, seed, valid, test in rows
    ]


def _entry_result(r: RunRecord) -> EntryResult:
    """The train step's record of ``r`` (what evaluate reads from ``metrics.json``)."""
    overall = EntryMetrics(r.auc, r.logloss, r.flops, r.dense_params, r.width, best_valid_auc=r.valid_auc)
    return EntryResult(EntryKey(r.model, r.domain_source, r.seed), "", overall, ())


def test_validation_picks_the_winner_and_its_seed_when_test_disagrees() -> None:
    from mdctr.steps.evaluate import _pick_winner

    records = _disagreeing_records()
    df = build_leaderboard(records)
    assert list(df["entry"]) == ["a/handcrafted", "b/handcrafted"]  # test AUC would have put b first
    assert (
        df.iloc[0]["valid_auc_mean"] == pytest.approx(0.805)
        and df.iloc[0]["auc_mean"] < df.iloc[1]["auc_mean"]
    )
    assert df.iloc[1]["vs_best_diff"] > 0  # b beats the winner on test: reported, not used to choose
    loaded = [(_entry_result(r), r) for r in records]
    pick = _pick_winner(df.iloc[0], loaded)
    assert (records[pick].model, records[pick].seed) == ("a", 1)  # seed 0 has the better test AUC
    assert "valid AUC" in to_markdown(df)


#: 1,500 rows, 2 domains, one random split (seed 0) for every seed: a run trains in well under a second
SMALL = {"rows": 1500, "num_sparse": 3, "num_dense": 1, "vocab_size": 30, "num_domains": 2}
ONE_EPOCH = TrainConfig(epochs=1, batch_size=256, device="cpu")


def test_run_benchmark_on_synthetic(tmp_path: Path) -> None:
    config = GridConfig(
        "synthetic", tmp_path, ["dnn"], ["none", "handcrafted"], 2, "model:dnn@0.25",
        dataset_options=SMALL, split_seed="0", train=ONE_EPOCH,
    )  # fmt: skip
    df = run_grid(config).leaderboard
    assert list(df["entry"]) == ["dnn/none"] and df.iloc[0]["seeds"] == 2
    assert BASE_COLUMNS | {"auc[d0]", "auc[d1]"} <= set(df.columns)
    assert df.iloc[0]["width"] == 0.25
    skipped = json.loads((tmp_path / "skipped.json").read_text())
    assert skipped == [{"model": "dnn", "domain_source": "handcrafted", "reason": "accepts only ['none']"}]
    for name in (
        "leaderboard.md",
        "leaderboard.csv",
        "leaderboard.json",
        "auc_vs_flops.png",
        "domain_auc.png",
    ):
        assert (tmp_path / name).is_file()
    assert len(list((tmp_path / "runs").glob("*-seed?.json"))) == 2  # one summary per run


def test_run_benchmark_applies_model_configs(tmp_path: Path) -> None:
    """Per-model overrides reach every entry; a pre-trained-miner adaptive2 gets the benchmark's miner."""
    from mdctr.domains.miner import MinerConfig

    configs = {"adaptive2": {"miner": "pretrained", "backbone": "star", "num_codes": 3}}
    config = GridConfig(
        "synthetic", tmp_path, ["adaptive2"], ["mined"], variants={m: [c] for m, c in configs.items()},
        dataset_options=SMALL, split_seed="0", train=ONE_EPOCH, miner=MinerConfig(num_codes=3, epochs=1),
    )  # fmt: skip
    df = run_grid(config).leaderboard
    assert list(df["entry"]) == ["adaptive2[miner=pretrained,backbone=star,num_codes=3]/mined"]
    assert (tmp_path / "miner").is_dir()  # pre-trained once, for the model to hold
    # a variant's runs are named by its overrides, as its entry is
    tag = "adaptive2[miner=pretrained,backbone=star,num_codes=3]-mined-seed0"
    summary = json.loads((tmp_path / "runs" / f"{tag}.json").read_text())
    assert summary["model_config"] == configs["adaptive2"]
    assert abs(summary["flops_per_sample"] - summary["budget_flops"]) / summary["budget_flops"] <= 0.03

    with pytest.raises(ConfigError, match=r"model configs given for \['star'\]"):
        run_grid(
            GridConfig(
                "synthetic", tmp_path / "bad", ["dnn"], ["none"], variants={"star": [{}]}, train=ONE_EPOCH
            )
        )


def test_run_store_is_read_by_tag_and_a_bad_line_is_named(tmp_path: Path) -> None:
    store = tmp_path / "grid.runs.jsonl"
    assert read_run_store(store) == {} and read_run_store(None) == {}  # no store yet
    good = {"tag": "dnn-none-seed0", "record": {"model": "dnn", "domain_source": "none", "seed": 0}}
    store.write_text(json.dumps(good) + "\n\n")
    assert read_run_store(store) == {"dnn-none-seed0": good}
    no_seed = {"tag": "dnn-none-seed1", "record": {"model": "dnn", "domain_source": "none"}}
    store.write_text(json.dumps(good) + "\n" + json.dumps(no_seed) + "\n")
    with pytest.raises(ValueError, match=r"grid\.runs\.jsonl:2: not a grid run record .*record\.seed"):
        read_run_store(store)
    store.write_text(json.dumps(good) + "\n{truncated\n")
    with pytest.raises(ValueError, match=r"grid\.runs\.jsonl:2: not a grid run record"):
        read_run_store(store)


def test_a_domain_without_an_auc_is_left_out_of_its_mean() -> None:
    """A domain whose test rows hold one class has no AUC: NaN in a fresh run, None once read back from JSON."""
    runs = _records(3)
    runs[0].domain_auc["b"] = None  # the dnn's seed 0, read back from a grid store
    runs[1].domain_auc["b"] = math.nan
    for r in runs:
        r.domain_auc["never"] = None
    df = build_leaderboard(runs).set_index("entry")
    assert df.loc["dnn/none", "auc[b]"] == pytest.approx(runs[2].domain_auc["b"])
    assert df.loc["star/handcrafted", "auc[b]"] == pytest.approx(
        np.mean([r.domain_auc["b"] for r in runs[3:]])
    )
    assert math.isnan(df.loc["dnn/none", "auc[never]"])


def _ranked(*entries: tuple[str, str, float]) -> pd.DataFrame:
    """A leaderboard of one-seed entries (model, domain source, validation AUC)."""
    return build_leaderboard(
        [RunRecord(m, src, 0, 1.0, 1e5, 1000, 0.7, 0.6, valid_auc=v) for m, src, v in entries]
    )


def test_a_control_source_never_wins_unless_allowed() -> None:
    """random and binned are baselines: ranked on the leaderboard, skipped as the winner (issue 22)."""
    df = _ranked(
        ("hamur", "random", 0.90), ("star", "binned", 0.85), ("hamur", "mined", 0.80), ("dnn", "none", 0.7)
    )
    assert list(df["entry"])[:2] == ["hamur/random", "star/binned"]  # the controls still rank first
    assert df.iloc[pick_winner(df)]["entry"] == "hamur/mined"
    assert df.iloc[pick_winner(df, promote_controls=True)]["entry"] == "hamur/random"
    plain = _ranked(("dnn", "none", 0.7), ("star", "random", 0.6))
    assert pick_winner(plain) == 0 and plain.iloc[0]["entry"] == "dnn/none"


def test_a_leaderboard_of_controls_only_has_no_winner() -> None:
    df = _ranked(("hamur", "random", 0.90), ("star", "binned", 0.85))
    with pytest.raises(NoCandidateError, match=r"all 2 leaderboard entries route by a control source"):
        pick_winner(df)
    assert pick_winner(df, promote_controls=True) == 0


def test_benchmark_titles_name_the_schema_not_the_adapter(tmp_path: Path) -> None:
    """`mdctr benchmark --dataset table` titled every table's leaderboard "table" (issue 22)."""
    table = tmp_path / "shop"
    table.mkdir()
    (table / "schema.yaml").write_text(
        "name: shop-bench\nsparse: [user, item]\ndense: [price]\nlabel: clicked\ndomain: country\n"
    )
    rng = np.random.default_rng(0)
    n = 400
    pd.DataFrame(
        {
            "user": rng.integers(0, 30, n),
            "item": rng.integers(0, 10, n),
            "price": rng.gamma(2.0, 5.0, n),  # distinct: a table may not repeat rows
            "clicked": rng.integers(0, 2, n),
            "country": rng.choice(["us", "de"], n),
        }
    ).to_csv(table / "events.csv", index=False)
    config = GridConfig(
        "table", tmp_path / "bench", ["dnn"], ["none"], source_dir=table, split_seed="0", train=ONE_EPOCH
    )
    df = run_grid(config).leaderboard
    assert df.attrs["dataset"] == "shop-bench"
    assert df.attrs["title"] == "FLOP-matched leaderboard: shop-bench"
    assert (
        (tmp_path / "bench" / "leaderboard.md")
        .read_text()
        .startswith("# FLOP-matched leaderboard: shop-bench\n")
    )
