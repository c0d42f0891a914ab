"""The ``mined-joint`` source (issue #23, item 3): a VQ-VAE trained with any routed model on its own embedding.

Real widths: ML-1M vocabularies (users 1–2999), dim 16, 1 dense feature, m = 8 codes, batches of 1,024 rows.
The learning test runs on the planted-conflict synthetic data (50,000 rows, vocabularies of 300 ids).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score
from torch.nn import functional as F

from mdctr.config import ConfigError
from mdctr.data.encode import split_table
from mdctr.data.prepare import PreparedData, prepare_in_memory
from mdctr.data.synthetic import generate
from mdctr.models import ModelInputs, model_class, model_names
from mdctr.routing import (
    JOINT_KEY,
    JOINT_SOURCE,
    DomainRouting,
    DomainSourceError,
    JointMined,
    JointMinerConfig,
    build_routed,
    check_domain_source,
    count_batch,
    fit_width,
    flops_per_sample,
    model_flops,
)
from mdctr.serving import Predictor, save_bundle
from mdctr.training import TrainConfig, train_model

M = JointMinerConfig().num_codes
ML1M = ModelInputs((3001, 3707, 3, 22, 3403, 19), 1, M)  # vocabularies of users 1–2999 (+ OOV)
ROWS = 1024
JOINT_MODELS = [n for n in model_names() if JOINT_SOURCE in model_class(n).domain_sources]


def joint(name: str, seed: int = 0, inputs: ModelInputs = ML1M, **miner: Any) -> JointMined:
    torch.manual_seed(seed)
    model = DomainRouting.for_model(name, JOINT_SOURCE).build(
        inputs, model_overrides={JOINT_KEY: miner} if miner else None
    )
    assert isinstance(model, JointMined)
    with torch.no_grad():  # trained embeddings are far from their N(0, 1e-4) init: a realistic scale
        model.embedding.table.weight.normal_(0.0, 0.1)
    return model


def cover_all_codes(model: JointMined, batch: Any) -> None:
    """Put one code on each of the first m rows' encodings (training mode), so every domain gets rows."""
    with torch.no_grad():
        z = model.vqvae.encode(model.embed(batch))
        model.vqvae._set_codebook(z[:M].clone())
        model.codebook_initialised.fill_(True)


def test_every_routed_model_accepts_the_source_and_the_self_mining_ones_do_not() -> None:
    accepting_mined = [n for n in model_names() if "mined" in model_class(n).domain_sources]
    expected = [n for n in accepting_mined if not model_class(n).mines_domains]
    assert expected == JOINT_MODELS and len(JOINT_MODELS) >= 10
    for name in ("dnn", "adaptive2", "adaptdhm"):
        with pytest.raises(DomainSourceError, match=name):
            check_domain_source(name, JOINT_SOURCE)


def test_config_default_m8_and_strict_keys() -> None:
    cfg = JointMinerConfig()
    assert (cfg.num_codes, cfg.beta, cfg.recon) == (8, 0.25, "embedding")
    model = joint("star", num_codes=5, inputs=dataclasses.replace(ML1M, num_domains=5))
    assert model.vqvae.num_codes == 5 and model.inner.inputs.num_domains == 5
    with pytest.raises(ConfigError, match="mined_joint"):
        build_routed("star", JOINT_SOURCE, ML1M, config={JOINT_KEY: {"codes": 8}})
    with pytest.raises(ValueError, match="8 domains"):  # the inner model must be built for m domains
        build_routed("star", JOINT_SOURCE, ML1M, config={JOINT_KEY: {"num_codes": 4}})
    with pytest.raises(ValueError, match="recon"):
        JointMinerConfig(recon="features")


@pytest.mark.parametrize("name", JOINT_MODELS)
def test_trains_a_step_with_gradient_to_every_parameter_and_shares_the_embedding(name, random_batch) -> None:
    model = joint(name).train()
    # the miner reads the ranker's own table: one embedding, no second one
    assert model.embedding is model.inner.embedding
    tables = [m for m in model.modules() if type(m).__name__ == "FeatureEmbedding"]
    assert len(tables) == 1
    batch = random_batch(ML1M, ROWS, domain=0)  # the routing column is ignored: codes come from the miner
    cover_all_codes(model, batch)
    codebook = model.vqvae.codebook.clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    logits = model(batch)
    assert logits.shape == (ROWS,)
    assert set(model.last_codes.tolist()) == set(range(M))
    aux = model.aux_loss()
    assert aux is not None and aux.item() > 0
    (F.binary_cross_entropy_with_logits(logits, batch.label) + aux).backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)
    ]
    assert not missing, f"{name}/{JOINT_SOURCE}: no gradient for {missing}"
    # the projection (encoder) is a parameter reached by the VQ loss; the codebook moves (EMA by default)
    assert any(n.startswith("vqvae.encoder.") for n, _ in model.named_parameters())
    opt.step()
    assert not torch.equal(model.vqvae.codebook, codebook)


def test_learned_codebook_gets_a_gradient(random_batch) -> None:
    """With ``ema_decay=None`` the codebook is a parameter, learnt by the codebook loss."""
    model = joint("shared_bottom", ema_decay=None).train()
    batch = random_batch(ML1M, ROWS)
    cover_all_codes(model, batch)
    logits = model(batch)
    (F.binary_cross_entropy_with_logits(logits, batch.label) + model.aux_loss()).backward()
    assert isinstance(model.vqvae.codebook, torch.nn.Parameter)
    assert model.vqvae.codebook.grad is not None and model.vqvae.codebook.grad.abs().sum() > 0


def miner_flops(model: JointMined, batch: Any) -> float:
    """Counted FLOPs per sample of the miner alone: projection + distances (‖z‖² − 2z·cᵀ + ‖c‖²)."""
    return flops_per_sample(_Assign(model), batch)


class _Assign(torch.nn.Module):
    def __init__(self, model: JointMined):
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> torch.Tensor:
        return self.model.codes(self.model.embed(batch)).float()


@pytest.mark.parametrize("name", ["shared_bottom", "star", "hamur", "mmoe"])
def test_flops_include_the_miner(name, random_batch) -> None:
    model = joint(name)
    batch = random_batch(ML1M, ROWS)
    routing = DomainRouting.for_model(name, JOINT_SOURCE)
    total = routing.flops(model, batch)
    with torch.no_grad():
        codes = model.eval().codes(model.embed(batch))
    inner = flops_per_sample(model.inner, dataclasses.replace(batch, domain=codes))
    mined = miner_flops(model, batch)
    # the projection MLP (in → 64 → 16) and the distances to 8 codes, 2 FLOPs per multiply-add
    d, h, latent = ML1M.input_dim, 64, model.config.latent_dim
    assert mined == 2 * (d * h + h * latent + latent * M)
    assert total == pytest.approx(inner + mined)
    assert routing.serving_miner(model) is None  # nothing beside the model routes its rows


@pytest.mark.parametrize("name", JOINT_MODELS)
def test_fits_the_dnn_budget_with_the_miner_counted(name, random_batch) -> None:
    inputs = ModelInputs((13, 9, 7, 5), 2, M, 8)
    batch = random_batch(inputs, 256)
    routing = DomainRouting.for_model(name, JOINT_SOURCE)
    budget = model_flops("dnn", dataclasses.replace(inputs, num_domains=1), 1.0, batch)
    fit = fit_width(name, inputs, budget, batch, routing=routing)
    assert fit.rel_error <= 0.03
    torch.manual_seed(0)
    model = routing.build(inputs, width=fit.width)
    assert isinstance(model, JointMined)
    assert fit.flops == pytest.approx(routing.flops(model, batch))
    assert miner_flops(model, batch) > 0


def test_eval_routing_is_what_forward_computes(random_batch) -> None:
    model = joint("shared_bottom")
    batch = random_batch(ML1M, ROWS)
    model.train()
    for seed in range(5):  # a few training forwards: moving statistics and codebook
        model(random_batch(ML1M, ROWS, seed=seed))
    model.eval()
    out = model(batch)
    with torch.no_grad():
        codes = model.vqvae.assign(model.inner.embed(batch))
    assert len(set(codes.tolist())) > 1
    routed = model.inner(dataclasses.replace(batch, domain=codes))
    assert torch.equal(out, routed)
    assert torch.equal(model.last_codes, codes)
    # the request's domain column plays no part
    assert torch.equal(model(dataclasses.replace(batch, domain=torch.full_like(batch.domain, 5))), out)


# -- trained on the planted-conflict data ---------------------------------------------------------------------
PLANTED = {"rows": 50_000, "vocab_size": 300, "conflict": 1.5}


@pytest.fixture(scope="module")
def planted() -> tuple[Any, PreparedData, np.ndarray]:
    loaded = generate(**PLANTED)
    prepared = prepare_in_memory(loaded, seed=0)
    table = loaded.table.assign(row_number=np.arange(len(loaded.table)))
    rows = split_table(table, loaded.schema, seed=0)["valid"]["row_number"].to_numpy()
    return loaded, prepared, loaded.extras["planted_domain"][rows]


def _train(prepared: PreparedData, epochs: int, seed: int = 0) -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped fixtures run before the one-thread fixture
    try:
        config = TrainConfig(epochs=epochs, batch_size=1024, seed=seed, num_threads=1)
        return train_model(prepared, "shared_bottom", JOINT_SOURCE, config=config)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(planted) -> Any:
    return _train(planted[1], epochs=3)


def test_codes_learn_the_planted_domains(planted, trained) -> None:
    """Measured (seed 0, 3 epochs): NMI 0.34 with the planted domain (the noisy hand-crafted id: 0.45), all 8
    codes used on validation rows."""
    _, prepared, domain = planted
    codes = trained.model.assign_codes(prepared.valid).numpy()
    assert normalized_mutual_info_score(domain, codes) > 0.15
    usage = np.bincount(codes, minlength=M) / len(codes)
    assert (usage > 0.02).sum() >= M - 2, usage  # no collapse onto a few codes
    assert trained.fit.history[-1]["codes_used"] >= M - 2


@torch.no_grad()
def scores(model: JointMined, data: Any) -> np.ndarray:
    """pCTR of the model in memory, computed as serving computes it (float32 sigmoid, one batch)."""
    return torch.sigmoid(model.eval()(data.batch(0, len(data)))).numpy().astype(np.float64)


def test_bundle_round_trip_gives_identical_predictions(planted, trained, tmp_path) -> None:
    loaded, prepared, _ = planted
    path = save_bundle(
        tmp_path / "bundle",
        model=trained.model,
        model_name="shared_bottom",
        model_config={},
        width=trained.width,
        spec=prepared.spec,
        domain_source=JOINT_SOURCE,
    )
    assert not (path / "miner").exists()
    predictor = Predictor.load(path)
    assert isinstance(predictor.model, JointMined)
    schema = prepared.spec.schema
    assert schema.domain not in predictor.required_columns  # no hand-crafted domain column needed
    rows = loaded.table.head(2000).drop(columns=[schema.domain, schema.label])
    served = predictor.predict(rows)
    np.testing.assert_array_equal(served, scores(trained.model, predictor.encode(rows)))
    # a saved miner setting survives the round trip (the bundle's model_config holds it)
    model = joint("shared_bottom", inputs=trained.inputs, latent_dim=8)
    path = save_bundle(
        tmp_path / "latent8",
        model=model,
        model_name="shared_bottom",
        model_config={JOINT_KEY: {"latent_dim": 8}},
        width=1.0,
        spec=prepared.spec,
        domain_source=JOINT_SOURCE,
    )
    reloaded = Predictor.load(path)
    assert reloaded.model.config.latent_dim == 8
    np.testing.assert_array_equal(reloaded.predict(rows), scores(model, reloaded.encode(rows)))


def test_training_is_deterministic_for_a_seed(planted) -> None:
    _, prepared, _ = planted
    a, b, c = (_train(prepared, epochs=1, seed=s) for s in (0, 0, 1))
    codes = [t.model.assign_codes(prepared.valid) for t in (a, b, c)]
    assert torch.equal(codes[0], codes[1])
    np.testing.assert_array_equal(a.predictions, b.predictions)
    assert not torch.equal(codes[0], codes[2])


def test_trained_at_the_dnn_budget_within_three_percent(small_prepared: PreparedData) -> None:
    """Width fitting sees the miner: the trained model's counted FLOPs (miner included) meet the budget."""
    config = TrainConfig(epochs=1, batch_size=512, device="cpu", seed=0)
    t = train_model(small_prepared, "star", JOINT_SOURCE, config=config, budget="model:dnn")
    assert isinstance(t.model, JointMined) and t.inputs.num_domains == M
    assert abs(t.flops - t.extra["budget_flops"]) / t.extra["budget_flops"] <= 0.03
    # the codes come from the model: the routing column of the counted batch plays no part
    assert t.flops == t.routing.flops(t.model, count_batch(small_prepared.valid))
    assert miner_flops(t.model, count_batch(small_prepared.valid)) > 0


def test_routing_needs_no_miner_and_builds_the_inner_model_for_m_domains(
    small_prepared: PreparedData,
) -> None:
    routing = DomainRouting.for_model("mmoe", JOINT_SOURCE, model_overrides={JOINT_KEY: {"num_codes": 6}})
    assert routing.mines_inside and not routing.needs_miner and routing.external_miner is None
    routed = routing.route(small_prepared)
    assert routed.num_domains == 6 and routed.inputs.num_domains == 6 and routed.control is None
    assert not routed.data.train.domain.any()  # the routing column is unused: the codes come from the model
    torch.manual_seed(0)
    model = routing.build(routed.inputs)
    assert isinstance(model, JointMined) and model.vqvae.num_codes == 6
    assert routing.serving_miner(model) is None
    # the inner model's own strict config still refuses unknown keys
    with pytest.raises(ConfigError, match="no_such_key"):
        routing.build(routed.inputs, model_overrides={"no_such_key": 1})
