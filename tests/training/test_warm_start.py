"""Warm start (issue #26 item 2): vocabularies merged with old rows kept bit-identical, the champion's predictions
reproduced before any training step, mismatches refused with a message naming the difference."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mdctr.data.prepare import prepare_in_memory
from mdctr.data.synthetic import generate
from mdctr.serving.bundle import Predictor, save_bundle
from mdctr.training import TrainConfig, predict_logits, train_model
from mdctr.training.run import start_model
from mdctr.training.warm import WarmSource, WarmStartError

CFG = TrainConfig(epochs=1, batch_size=512, seed=0, device="cpu")


def _loaded(seed: int, vocab: int) -> object:
    """Synthetic data (3 sparse, 2 dense, 3 domains); a larger ``vocab`` brings ids the older data lacked."""
    return generate(
        rows=3000, num_sparse=3, num_dense=2, vocab_size=vocab, num_domains=3, seed=1, sample_seed=seed
    )


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A trained ``star`` (hand-crafted domains) bundle on the older data, and that data."""
    old = prepare_in_memory(_loaded(1, 30))
    trained = train_model(old, "star", "handcrafted", config=CFG, width=0.5)
    path = tmp_path_factory.mktemp("champion") / "bundle"
    save_bundle(
        path,
        model=trained.model,
        model_name="star",
        model_config={},
        width=trained.width,
        spec=trained.spec,
        domain_source="handcrafted",
    )
    return path, old


def _source(path: Path) -> WarmSource:
    return WarmSource.from_predictor(Predictor.load(path), label=str(path))


def test_vocab_merge_keeps_old_rows_and_appends_new_ids(champion: tuple[Path, object]) -> None:
    path, _ = champion
    source = _source(path)
    newer = prepare_in_memory(_loaded(2, 45))
    setup, label = start_model(
        newer,
        "star",
        "handcrafted",
        warm=source,
        warm_fallback="error",
        width=1.0,
        model_config=None,
        miner=None,
        budget=None,
        seed=3,
    )
    assert label == str(path)
    spec = setup.prepared.spec
    for col in spec.schema.sparse:
        old_vocab = source.spec.vocab[col]
        assert spec.vocab[col][: len(old_vocab)] == old_vocab  # old indices stay valid
        added = spec.vocab[col][len(old_vocab) :]
        assert added and not set(added) & set(old_vocab)  # new ids appended once
        assert set(newer.spec.vocab[col]) <= set(spec.vocab[col])
    table = dict(setup.model.state_dict())
    key = next(k for k in table if k.endswith("embedding.table.weight"))
    old_table, new_table = source.state[key], table[key]
    old_sizes, new_sizes = source.inputs.vocab_sizes, setup.routed.inputs.vocab_sizes
    assert new_table.shape[0] == sum(new_sizes) > old_table.shape[0]
    o = n = 0
    for os_, ns in zip(old_sizes, new_sizes, strict=True):
        assert torch.equal(new_table[n : n + os_], old_table[o : o + os_])  # bit-identical old rows
        assert not torch.equal(new_table[n + os_ : n + ns], torch.zeros_like(new_table[n + os_ : n + ns]))
        o, n = o + os_, n + ns
    assert spec.mean == source.spec.mean and spec.std == source.spec.std  # scalers kept


def test_warm_model_predicts_like_the_champion_before_training(champion: tuple[Path, object]) -> None:
    path, old = champion
    predictor = Predictor.load(path)
    newer = prepare_in_memory(_loaded(2, 45))
    setup, _ = start_model(
        newer,
        "star",
        "handcrafted",
        warm=_source(path),
        warm_fallback="error",
        width=1.0,
        model_config=None,
        miner=None,
        budget=None,
        seed=3,
    )
    # the older data's rows, re-encoded with the extended spec: the same ids, the same indices
    champion_logits = predict_logits(predictor.model, old.valid)
    warm_logits = predict_logits(setup.model, old.valid)
    np.testing.assert_allclose(warm_logits, champion_logits, rtol=0, atol=1e-6)
    # and a model that then trains moves away from it
    trained = train_model(newer, "star", "handcrafted", config=CFG, warm=_source(path))
    assert trained.warm_started == str(path)
    moved = predict_logits(trained.model, setup.routed.data.valid)
    assert not np.allclose(moved, predict_logits(setup.model, setup.routed.data.valid))


def test_mismatch_is_refused_naming_the_difference(champion: tuple[Path, object]) -> None:
    path, _ = champion
    newer = prepare_in_memory(_loaded(2, 45))
    with pytest.raises(WarmStartError, match=r"model 'star' there, 'mmoe' here.*--warm-start-fallback cold"):
        train_model(newer, "mmoe", "handcrafted", config=CFG, warm=_source(path))
    with pytest.raises(WarmStartError, match=r"another width"):
        start_model(
            newer,
            "star",
            "handcrafted",
            warm=dataclasses.replace(_source(path), width=1.0),
            warm_fallback="error",
            width=1.0,
            model_config=None,
            miner=None,
            budget=None,
            seed=0,
        )
    cold = train_model(newer, "mmoe", "handcrafted", config=CFG, warm=_source(path), warm_fallback="cold")
    assert cold.warm_started == ""
    # the fallback still encodes with the merged vocabularies (as a warm-started miner of the same run does)
    assert cold.spec.vocab == _source(path).spec.extended_with(newer.spec).vocab


def test_extended_spec_encodes_old_ids_as_before(champion: tuple[Path, object]) -> None:
    path, _ = champion
    source = _source(path)
    newer = prepare_in_memory(_loaded(2, 45))
    merged = source.spec.extended_with(newer.spec)
    col = source.spec.schema.sparse[0]
    raw = pd.DataFrame({c: [source.spec.vocab[c][0]] * 2 for c in source.spec.schema.sparse})
    for c in source.spec.schema.dense:
        raw[c] = [0.5, 1.5]
    raw[source.spec.schema.domain] = [0, 1]
    a = source.spec.encode_frame(raw, require_label=False)
    b = merged.encode_frame(raw, require_label=False)
    pd.testing.assert_frame_equal(a, b)
    assert merged.meta["base_vocab"][col] == len(source.spec.vocab[col])


def test_miner_warm_start_keeps_codes_of_old_rows(champion: tuple[Path, object]) -> None:
    from mdctr.domains.miner import DomainMiner, MinerConfig, carry_state, fit_miner
    from mdctr.routing import model_inputs
    from mdctr.training.warm import extend_data

    _, old = champion
    cfg = MinerConfig(num_codes=4, epochs=1, seed=0)
    old_miner = fit_miner(old.train, model_inputs(old, 1), cfg)
    source = dataclasses.replace(_source(champion[0]), miner=old_miner)
    extended, why = extend_data(source, prepare_in_memory(_loaded(2, 45)))
    assert why is None
    inputs = model_inputs(extended, 1)
    assert sum(inputs.vocab_sizes) > sum(old_miner.inputs.vocab_sizes)
    fresh = DomainMiner(inputs, cfg)
    grown = carry_state(fresh, old_miner.state_dict(), old_miner.inputs.vocab_sizes)
    assert grown and all(v > 0 for v in grown.values())
    assert torch.equal(fresh.eval().assign(old.valid), old_miner.assign(old.valid))  # same codes, old rows
    warm = fit_miner(extended.train, inputs, cfg, init=old_miner)
    assert warm.num_codes == 4 and warm.embedding.table.weight.shape[0] == sum(inputs.vocab_sizes)


def test_cli_warm_start_from_a_bundle(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mdctr.cli import app

    loaded = generate(
        rows=4000, seed=0
    )  # the CLI's `--dataset synthetic --dataset-options` is not used here:
    first = train_model(prepare_in_memory(loaded), "dnn", "none", config=CFG)  # same schema as the CLI's
    bundle = save_bundle(
        tmp_path / "bundle",
        model=first.model,
        model_name="dnn",
        model_config={},
        width=first.width,
        spec=first.spec,
        domain_source="none",
    )
    base = [
        "train",
        "--dataset",
        "synthetic",
        "--domains",
        "none",
        "--epochs",
        "1",
        "--warm-start",
        str(bundle),
    ]
    ok = CliRunner().invoke(app, [*base, "--model", "dnn"])
    assert ok.exit_code == 0, ok.output
    assert f"warm start    bundle {bundle}" in ok.output
    # twice dnn's FLOPs: the bundle's width misses the budget, the refitted width has other shapes
    refused = CliRunner().invoke(app, [*base, "--model", "dnn", "--budget", "model:dnn@2"])
    assert refused.exit_code == 2, refused.output
    assert f"error: cannot warm-start from bundle {bundle}" in refused.output
    assert "another width" in refused.output
    mismatch = CliRunner().invoke(app, [*base, "--model", "star", "--domains", "handcrafted"])
    assert mismatch.exit_code == 2
    assert (
        "cannot warm-start from bundle" in mismatch.output
        and "model 'dnn' there, 'star' here" in mismatch.output
    )
    cold = CliRunner().invoke(
        app, [*base, "--model", "star", "--domains", "handcrafted", "--warm-start-fallback", "cold"]
    )
    assert cold.exit_code == 0, cold.output
    assert "warm start" not in cold.output


@pytest.mark.integration
def test_train_step_warm_starts_from_the_registered_champion(tmp_path: Path, mlflow_sqlite_uri: str) -> None:
    """The pipeline's steps on real files and a real MLflow store: prepare → mine → train (cold, `mined`) →
    register + promote → train with ``warm_start="champion"``: the champion is loaded through the safe loader,
    its external miner warm-started, and the new bundle's vocabularies extend the champion's."""
    import json

    from mdctr import tracking
    from mdctr.data.encode import FeatureSpec
    from mdctr.steps.mine_domains import MineConfig, mine_domains
    from mdctr.steps.prepare_data import SERVING_EXAMPLE_FILE, PrepareConfig, prepare_data
    from mdctr.steps.train_model import METRICS_FILE, TrainStepConfig
    from mdctr.steps.train_model import train_model as train_step

    def prepare(sample_seed: int, vocab: int) -> Path:
        options = json.dumps({"rows": 3000, "vocab_size": vocab, "seed": sample_seed, "num_domains": 3})
        out = tmp_path / f"prepared-{sample_seed}"
        prepare_data(
            source=tmp_path, out_dir=out, config=PrepareConfig(dataset="synthetic", dataset_options=options)
        )
        return out

    def train(prepared: Path, name: str, **warm: str) -> tuple[Path, dict]:
        domains = tmp_path / f"domains-{name}"
        mine_domains(
            prepared_dir=prepared,
            out_dir=domains,
            report_path=tmp_path / f"report-{name}.md",
            config=MineConfig(miner_options='{"epochs": 1, "num_codes": 4}'),
        )
        config = TrainStepConfig(
            model_name="star",
            domain_source="mined",
            epochs=1,
            flop_budget="model:star",
            tracking_uri=mlflow_sqlite_uri,
            **warm,
        )
        out = train_step(
            prepared_dir=prepared,
            domains_dir=domains,
            bundle_dir=tmp_path / f"bundle-{name}",
            results_dir=tmp_path / f"results-{name}",
            config=config,
        )
        return out.bundle_dir, json.loads((out.results_dir / METRICS_FILE).read_text())

    old = prepare(1, 30)
    bundle, cold = train(old, "cold")
    assert cold["warm_started"] == ""
    uri = tracking.configure(mlflow_sqlite_uri)
    parent = tracking.start_parent_run(uri, run_name="p1", params={}, data_rev="", data_md5="", git_sha="")
    run = tracking.log_training_run(
        uri,
        parent,
        run_name="star-mined",
        params={},
        history=[],
        metrics={"auc": cold["overall"]["auc"]},
        per_domain=[],
    )
    example = pd.read_parquet(old / SERVING_EXAMPLE_FILE)
    version = tracking.register_bundle(uri, bundle, run_id=run, input_example=example)
    tracking.promote(uri, version.version, name=version.name, reason="period 1")

    new_bundle, warm = train(prepare(2, 45), "warm", warm_start="champion")
    assert warm["warm_started"] == f"{version.name} v{version.version} (champion)"
    assert warm["settings"]["warm_start"] == "champion"
    old_spec = FeatureSpec.load(bundle / "feature_spec.json")
    new_spec = FeatureSpec.load(new_bundle / "feature_spec.json")
    for col in old_spec.schema.sparse:
        assert new_spec.vocab[col][: len(old_spec.vocab[col])] == old_spec.vocab[col]
        assert len(new_spec.vocab[col]) > len(old_spec.vocab[col])
    assert Predictor.load(new_bundle).miner is not None  # the warm miner, on the merged vocabularies


def test_cli_refuses_a_bundle_of_other_columns(champion: tuple[Path, object]) -> None:
    from typer.testing import CliRunner

    from mdctr.cli import app

    path, _ = champion  # 3 sparse features; the CLI's default synthetic data has 4
    args = ["train", "-d", "synthetic", "-m", "star", "--epochs", "1", "--warm-start", str(path)]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2
    assert (
        f"cannot warm-start from bundle {path}: feature specs differ in their sparse columns"
        in refused.output
    )
    cold = CliRunner().invoke(app, [*args, "--warm-start-fallback", "cold"])
    assert cold.exit_code == 0, cold.output
