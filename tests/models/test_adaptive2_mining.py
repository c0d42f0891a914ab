"""Adaptive²'s joint miner: balanced feature reconstruction, data-dependent codebook init, code churn in the
training history, and codes frozen after a warm-up."""

from __future__ import annotations

import math

import pytest
import torch

from mdctr.data.prepare import PreparedData, prepare_in_memory
from mdctr.data.synthetic import generate
from mdctr.domains.vqvae import feature_recon_loss
from mdctr.models.base import FeatureEmbedding, ModelInputs, build_model
from mdctr.training import TrainConfig, fit

#: ML-1M's sparse vocabularies (user_id, movie_id, gender, occupation, zip, genre; + OOV) and its one dense
#: feature (age), at its embedding width
ML1M_VOCABS = (3001, 3707, 3, 22, 3403, 19)
E = 16


def _share_of_each_feature(random_batch, balanced: bool) -> list[float]:
    """Share of the reconstruction loss each feature carries: the loss drop when that feature alone goes
    from a chance reconstruction (zero decoder output) to a perfect one, over the sum of all such drops."""
    torch.manual_seed(0)
    b = 2048
    emb = FeatureEmbedding(list(ML1M_VOCABS), num_dense=1, embed_dim=E, init_std=E**-0.5)
    rows = random_batch(ModelInputs(ML1M_VOCABS, 1, 1), b)
    sparse, dense = rows.sparse, rows.dense
    dense = (dense - dense.mean()) / dense.std(unbiased=False)  # standardised, as the pipeline feeds it
    with torch.no_grad():  # unit rows: a decoder output along the true id's row then beats every other id
        emb.table.weight.div_(emb.table.weight.norm(dim=1, keepdim=True))
    offsets = emb.offsets
    w = emb.table.weight.detach()

    def loss(decoded: torch.Tensor) -> float:
        torch.manual_seed(1)  # the same sampled negatives in every call
        return float(feature_recon_loss(decoded, sparse, dense, emb, balanced=balanced).detach())

    s = len(ML1M_VOCABS)
    chance = torch.zeros(b, s * E + 1)
    base = loss(chance)
    drops = []
    for j in range(s):
        perfect = chance.clone()
        perfect[:, j * E : (j + 1) * E] = 200.0 * w[offsets[j] + sparse[:, j]]  # logit of the true id ≫ rest
        drops.append(base - loss(perfect))
    perfect = chance.clone()
    perfect[:, s * E :] = dense
    drops.append(base - loss(perfect))
    total = sum(drops)
    return [d / total for d in drops]


def test_balanced_reconstruction_gives_every_feature_an_equal_share_at_ml1m_sizes(random_batch):
    legacy = _share_of_each_feature(random_batch, balanced=False)
    balanced = _share_of_each_feature(random_batch, balanced=True)
    n = len(ML1M_VOCABS) + 1
    # legacy: the one dense feature (age) carries the largest share, ~5× that of gender
    assert legacy[-1] == max(legacy)
    assert legacy[-1] > 4 * legacy[2]
    # balanced: every feature, the dense one included, carries 1/(S + D) of the loss
    for share in balanced:
        assert share == pytest.approx(1.0 / n, rel=0.05)


def test_balanced_loss_is_one_at_chance_and_the_legacy_loss_is_unchanged(random_batch):
    torch.manual_seed(0)
    vocabs = [5, 40]
    emb = FeatureEmbedding(vocabs, num_dense=2, embed_dim=4, init_std=0.5)
    rows = random_batch(ModelInputs(vocabs, 2, 1), 64)
    sparse, dense = rows.sparse, rows.dense
    zeros = torch.zeros(64, 2 * 4 + 2)
    mse = float((dense**2).sum(1).mean())
    torch.set_grad_enabled(False)  # values only (restored below)
    # chance: every CE is log V (÷ log V = 1); dense MSE summed over the 2 features; averaged over 4 features
    assert float(feature_recon_loss(zeros, sparse, dense, emb, balanced=True)) == pytest.approx(
        (2.0 + mse) / 4, rel=1e-5
    )
    # legacy: mean CE over sparse features + mean dense MSE over all values
    legacy = (math.log(5) + math.log(40)) / 2 + mse / 2
    assert float(feature_recon_loss(zeros, sparse, dense, emb)) == pytest.approx(legacy, rel=1e-5)
    torch.set_grad_enabled(True)


@pytest.fixture(scope="module")
def prepared() -> tuple[PreparedData, ModelInputs]:
    data = prepare_in_memory(generate(rows=3000, num_domains=4, seed=0))
    return data, ModelInputs(data.spec.vocab_sizes, data.spec.num_dense, 4)


def test_data_dependent_init_puts_every_code_on_the_first_batch(prepared):
    data, inputs = prepared
    batch = data.train.batch(0, 512)
    torch.manual_seed(0)
    model = build_model("adaptive2", inputs, config={"num_codes": 8, "data_init": True}).train()
    before = model.vqvae.codebook.clone()
    model(batch)
    assert bool(model.codebook_initialised)
    assert not torch.equal(model.vqvae.codebook, before)
    # each code starts on one row's encoding, so that row (at least) is assigned to it
    assert (torch.bincount(model.last_codes, minlength=8) > 0).all()
    # a second batch does not re-initialise
    after_first = model.vqvae.codebook.clone()
    model.eval()
    model(batch)
    assert torch.equal(model.vqvae.codebook, after_first)


def test_code_churn_is_the_fraction_of_rows_whose_code_changed(prepared):
    data, inputs = prepared
    torch.manual_seed(0)
    model = build_model("adaptive2", inputs, config={"num_codes": 4, "data_init": True, "churn_rows": 1000})
    model.train()
    model(data.train.batch(0, 512))  # initialises the codebook on real encodings
    first = model.end_epoch(data.train)
    assert "code_churn" not in first and first["codes_frozen"] == 0.0
    codes = model.assign_codes(data.train.head(1000))
    with torch.no_grad():  # swap codes 0 and 1: exactly their rows change code
        model.vqvae.codebook[[0, 1]] = model.vqvae.codebook[[1, 0]].clone()
    second = model.end_epoch(data.train)
    expected = float(((codes == 0) | (codes == 1)).float().mean())
    assert expected > 0
    assert second["code_churn"] == pytest.approx(expected)
    assert model.end_epoch(data.train)["code_churn"] == 0.0  # nothing moved since


def test_history_logs_churn_and_codes_stay_fixed_after_the_warm_up(prepared):
    data, inputs = prepared
    torch.manual_seed(0)
    model = build_model(
        "adaptive2", inputs, config={"num_codes": 4, "data_init": True, "freeze_after_epochs": 2}
    )
    result = fit(
        model, data.train, data.valid, TrainConfig(epochs=4, batch_size=256, patience=10, num_threads=1)
    )
    h = result.history
    assert [r["codes_frozen"] for r in h] == [0.0, 1.0, 1.0, 1.0]
    assert "code_churn" not in h[0] and 0.0 <= h[1]["code_churn"] <= 1.0
    assert h[2]["code_churn"] == 0.0 and h[3]["code_churn"] == 0.0  # frozen: no row changes code


def test_frozen_codes_ignore_the_training_embedding_and_add_no_vq_loss(prepared):
    data, inputs = prepared
    torch.manual_seed(0)
    model = build_model(
        "adaptive2", inputs, config={"num_codes": 4, "data_init": True, "freeze_after_epochs": 1}
    )
    model.train()
    batch = data.train.batch(0, 512)
    model(batch)
    assert model.aux_loss() is not None  # before the freeze: the VQ loss trains the miner
    model.end_epoch(data.train)
    assert bool(model.codes_frozen) and not model.vqvae.training
    frozen = model.assign_codes(data.train)
    with torch.no_grad():  # the ranker's embedding keeps training after the freeze
        model.embedding.table.weight.add_(torch.randn_like(model.embedding.table.weight))
    model(batch)
    assert model.aux_loss() is None
    assert torch.equal(model.last_codes, frozen[:512])
    assert torch.equal(model.assign_codes(data.train), frozen)
    # the frozen state travels with the state dict (checkpoints, best-epoch restore)
    torch.manual_seed(1)
    other = build_model(
        "adaptive2", inputs, config={"num_codes": 4, "data_init": True, "freeze_after_epochs": 1}
    )
    other.load_state_dict(model.state_dict())
    assert bool(other.codes_frozen) and torch.equal(other.assign_codes(data.train), frozen)


def test_code_ctr_head_adds_the_per_code_bce_and_reaches_the_encoder(prepared):
    data, inputs = prepared
    batch = data.train.batch(0, 512)
    config = {"num_codes": 4, "data_init": True, "code_ctr_weight": 0.5}
    torch.manual_seed(0)
    model = build_model("adaptive2", inputs, config=config).train()
    torch.manual_seed(0)
    plain = build_model("adaptive2", inputs, config={"num_codes": 4, "data_init": True}).train()
    torch.manual_seed(2)
    model(batch)
    with_head = model.aux_loss()
    torch.manual_seed(2)
    plain(batch)
    # same init and inputs: the aux losses differ by 0.5 × BCE of the head on the codes' vectors (read after
    # the forward, whose EMA step moved them slightly)
    e_k = model.vqvae.codebook.detach()[model.last_codes]
    head = model.code_ctr_head(e_k).squeeze(-1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(head, batch.label)
    assert float((with_head - plain.aux_loss()).detach()) == pytest.approx(
        0.5 * float(bce.detach()), rel=1e-3
    )
    # the click signal reaches the encoder (straight-through), so it can move the assignment: the encoder's
    # gradient differs from the plain model's by the head term's
    with_head.backward()
    plain.aux_loss().backward()
    diff = model.vqvae.encoder[-1].weight.grad - plain.vqvae.encoder[-1].weight.grad
    assert float(diff.abs().sum()) > 0


def test_freeze_needs_joint_mode():
    with pytest.raises(ValueError, match="freeze_after_epochs"):
        build_model(
            "adaptive2",
            ModelInputs((3, 4), 1, 2),
            config={"miner": "pretrained", "freeze_after_epochs": 1},
        )
