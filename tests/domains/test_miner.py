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
    assert set(report["feature_nmi"]) == set(prepared.spec.schema.features)
    assert all(0.0 <= v <= 1.0 + 1e-9 for v in report["feature_nmi"].values())
    md = report_markdown(report)
    assert "| planted |" in md and "perplexity" in md
    assert "| feature | NMI | chance NMI | MI (nats) |" in md


def test_domain_report_nmi_shows_codes_that_are_one_feature(planted_data):
    """Codes that are a relabelling of one feature get NMI 1 with it: "the codes are just age" is visible."""
    prepared, _, _ = planted_data
    spec, train = prepared.spec, prepared.train
    sparse_col = spec.schema.sparse[0]
    codes = train.sparse[:, 0].numpy()
    report = domain_report(codes, train, spec)
    assert report["feature_nmi"][sparse_col] == pytest.approx(1.0)
    others = [v for k, v in report["feature_nmi"].items() if k != sparse_col]
    assert max(others) < 0.5
    # a dense feature is compared through its decile bins: codes = those bins give NMI 1
    dense_col = spec.schema.dense[0]
    raw = train.dense[:, 0].numpy().astype(np.float64) * spec.std[dense_col] + spec.mean[dense_col]
    bins = np.digitize(raw, np.unique(np.quantile(raw, np.linspace(0, 1, 11)[1:-1])))
    assert domain_report(bins, train, spec)["feature_nmi"][dense_col] == pytest.approx(1.0)


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
    """Loss parts equal their formulas, and the straight-through estimator hands the decoder's gradient at
    z_q to z_e unchanged (a plain quantiser would give z_e no gradient from the reconstruction at all)."""
    import math

    from torch.nn import functional as F

    torch.manual_seed(0)
    vq = VQVAE(in_dim=10, num_codes=3, latent_dim=4, hidden=(8,), ema_decay=None, restart_dead=False).train()
    x = torch.randn(32, 10)
    captured: dict[str, torch.Tensor] = {}
    vq.encoder.register_forward_hook(lambda _m, _i, out: captured.update(z_e=out))
    seen: dict[str, torch.Tensor] = {}

    def recon(decoded: torch.Tensor) -> torch.Tensor:
        seen["decoded"] = decoded
        return decoded.pow(2).mean()

    out = vq(x, recon)
    z_e = captured["z_e"]
    z_e.retain_grad()
    out.z_q.retain_grad()
    assert out.codes.shape == (32,) and out.z_q.shape == (32, 4)

    # loss parts against the formulas: ‖sg[z_e] − e_k‖², β‖z_e − sg[e_k]‖², usage log m − H(p̄)
    e_k = vq.codebook.detach()[out.codes]
    dist = torch.cdist(z_e.detach(), vq.codebook.detach()).pow(2)
    assert torch.equal(out.codes, dist.argmin(1))
    mse = F.mse_loss(e_k, z_e.detach())
    assert out.parts["codebook"] == pytest.approx(float(mse), rel=1e-5)
    assert out.parts["commitment"] == pytest.approx(float(mse), rel=1e-5)  # same value, other gradient
    p_bar = torch.softmax(-dist, dim=1).mean(0)
    usage = math.log(3) + float((p_bar * torch.log(p_bar + 1e-10)).sum())
    assert out.parts["usage"] == pytest.approx(usage, rel=1e-4, abs=1e-6)
    assert out.parts["recon"] == pytest.approx(float(seen["decoded"].detach().pow(2).mean()), rel=1e-6)
    expected = out.parts["recon"] + out.parts["codebook"] + 0.25 * out.parts["commitment"] + 0.1 * usage
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-4)

    # straight-through: with only the reconstruction term, dL/dz_e is exactly dL/dz_q
    seen["decoded"].pow(2).mean().backward(retain_graph=True)
    assert out.z_q.grad is not None and out.z_q.grad.abs().sum() > 0
    assert torch.allclose(z_e.grad, out.z_q.grad)
    # the codebook term trains the codebook, toward the encodings assigned to it
    vq.zero_grad()
    out.loss.backward()
    grad = vq.codebook.grad
    used = torch.unique(out.codes)
    assert grad[used].abs().sum() > 0


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
