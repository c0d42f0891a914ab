"""Domain mining on synthetic data with planted domains; the VQ-VAE's mechanics; the report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score
from torch.utils.flop_counter import FlopCounterMode

from mdctr.data.encode import split_table
from mdctr.data.prepare import PreparedData, prepare_in_memory
from mdctr.data.synthetic import generate
from mdctr.domains import VQVAE, DomainMiner, MinerConfig, domain_report, fit_miner
from mdctr.domains.report import report_markdown
from mdctr.models.base import ModelInputs

K = 4
MINER = MinerConfig(num_codes=K, epochs=8, batch_size=256, seed=0)


@pytest.fixture(scope="module")
def planted_data() -> tuple[PreparedData, np.ndarray, ModelInputs]:
    loaded = generate(rows=8000, num_domains=K, seed=0)
    prepared = prepare_in_memory(loaded)
    # recover which table rows landed in train: split a row-number column the same way
    table = loaded.table.assign(row_number=np.arange(len(loaded.table)))
    train_rows = split_table(table, loaded.schema, seed=0)["train"]["row_number"].to_numpy()
    planted = loaded.extras["planted_domain"][train_rows]
    inputs = ModelInputs(prepared.spec.vocab_sizes, prepared.spec.num_dense, K)
    return prepared, planted, inputs


@pytest.fixture(scope="module")
def fitted(planted_data) -> DomainMiner:
    prepared, _, inputs = planted_data
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: runs before the function-scoped one-thread fixture
    try:
        return fit_miner(prepared.train, inputs, MINER)
    finally:
        torch.set_num_threads(threads)


def test_miner_recovers_planted_domains_without_collapse(planted_data, fitted):
    prepared, planted, _ = planted_data
    codes = fitted.assign(prepared.train).numpy()
    assert codes.shape == (len(prepared.train),)
    assert normalized_mutual_info_score(planted, codes) >= 0.8
    assert (np.bincount(codes, minlength=K) > 0).all()  # every code used


def test_save_load_gives_identical_assignments(planted_data, fitted, tmp_path):
    prepared, _, _ = planted_data
    fitted.save(tmp_path / "miner")
    loaded = DomainMiner.load(tmp_path / "miner")
    assert loaded.config == fitted.config and loaded.num_codes == K
    assert torch.equal(loaded.assign(prepared.test), fitted.assign(prepared.test))
    assert torch.equal(loaded.assign(prepared.test, batch_size=7), fitted.assign(prepared.test))


def test_fit_is_deterministic(planted_data):
    prepared, _, inputs = planted_data
    cfg = MinerConfig(num_codes=K, epochs=1, batch_size=512, seed=3)
    small = prepared.train.head(2000)
    a = fit_miner(small, inputs, cfg).assign(small)
    b = fit_miner(small, inputs, cfg).assign(small)
    assert torch.equal(a, b)


def test_domain_report_fields(planted_data, fitted):
    prepared, planted, _ = planted_data
    codes = fitted.assign(prepared.train).numpy()
    report = domain_report(codes, prepared.train, prepared.spec, planted, num_codes=K + 1)
    assert report["rows"] == len(prepared.train) and report["num_codes"] == K + 1
    assert report["dead_codes"] == [K]  # the extra code has no row
    assert 1.0 <= report["perplexity"] <= K
    assert report["agreement"]["planted"]["nmi"] >= 0.8
    assert set(report["agreement"]["handcrafted"]) == {"nmi", "ari"}
    assert sum(c["rows"] for c in report["codes"]) == len(prepared.train)
    live = report["codes"][0]
    assert 0.0 <= live["positive_rate"] <= 1.0
    assert abs(sum(live["handcrafted_mix"].values()) - 1.0) < 1e-9
    assert live["top_values"] and live["top_values"][0]["lift"] > 1.0
    assert set(live["dense_means"]) == set(prepared.spec.schema.dense)
    assert set(report["feature_mi"]) == set(prepared.spec.schema.features)
    md = report_markdown(report)
    assert "| planted |" in md and "perplexity" in md


def test_vq_distances_are_matmuls_counted_by_flop_counter():
    torch.manual_seed(0)
    vq = VQVAE(in_dim=10, num_codes=5, latent_dim=4, hidden=(8,)).eval()
    z = torch.randn(6, 4)
    assert torch.allclose(vq.distances(z), torch.cdist(z, vq.codebook) ** 2, atol=1e-4)
    with FlopCounterMode(display=False) as counter:
        vq.assign(torch.randn(6, 10))
    # encoder 10→8→4 and the 6×4×5 distance matmul: 2·6·(10·8 + 8·4 + 4·5) multiply-adds
    assert counter.get_total_flops() == 2 * 6 * (10 * 8 + 8 * 4 + 4 * 5)


def test_vq_loss_parts_and_straight_through_gradient():
    torch.manual_seed(0)
    vq = VQVAE(in_dim=10, num_codes=3, latent_dim=4, hidden=(8,), ema_decay=None).train()
    x = torch.randn(32, 10)
    out = vq(x)
    assert out.codes.shape == (32,) and out.z_q.shape == (32, 4)
    assert set(out.parts) == {"recon", "codebook", "commitment", "usage"}
    out.loss.backward()
    assert vq.codebook.grad is not None and vq.encoder[-1].weight.grad.abs().sum() > 0


def test_dead_code_restart_reseeds_unused_codes():
    torch.manual_seed(0)
    vq = VQVAE(in_dim=6, num_codes=4, latent_dim=3, hidden=(8,), restart_decay=0.5).train()
    with torch.no_grad():
        vq.codebook[3] = 1e6  # far from every encoding: never chosen
    for _ in range(20):
        vq(torch.randn(64, 6))
    assert vq.codebook[3].abs().max() < 1e3  # moved back onto the data
    codes = vq.assign(torch.randn(2000, 6))
    assert (torch.bincount(codes, minlength=4) > 0).all()


def test_recon_loss_uses_a_sampled_softmax_only_for_large_vocabularies() -> None:
    from torch.nn import functional as F

    from mdctr.domains.vqvae import feature_recon_loss
    from mdctr.models.base import FeatureEmbedding

    torch.manual_seed(0)
    e = 64  # wide enough that a true id's own vector stands far above 256 random ones
    emb = FeatureEmbedding([50, 5000], num_dense=0, embed_dim=e, init_std=1.0)
    sparse = torch.stack([torch.randint(0, 50, (64,)), torch.randint(0, 5000, (64,))], dim=1)
    no_dense = torch.zeros(64, 0)
    decoded = torch.randn(64, 2 * e)
    w = emb.table.weight
    # with a large enough threshold: exactly the full cross-entropy over every id
    full_small = F.cross_entropy(decoded[:, :e] @ w[:50].t(), sparse[:, 0])
    full_large = F.cross_entropy(decoded[:, e:] @ w[50:].t(), sparse[:, 1])
    exact = feature_recon_loss(decoded, sparse, no_dense, emb, full_softmax_max_vocab=10**6)
    torch.testing.assert_close(exact, (full_small + full_large) / 2)
    # the 5000-id feature goes through the sampled softmax: a decoder output pointing at the true ids scores
    # far better than a random one
    aligned = torch.cat([w[sparse[:, 0]], w[50 + sparse[:, 1]]], dim=1).detach()
    sampled_good = feature_recon_loss(aligned, sparse, no_dense, emb)
    sampled_random = feature_recon_loss(decoded, sparse, no_dense, emb)
    assert sampled_good < 0.1 * sampled_random
    sampled_random.backward()
    touched = emb.table.weight.grad[50:].abs().sum(1) > 0
    assert 0 < int(touched.sum()) <= 64 + 256  # only the true ids and the sampled negatives get gradient
