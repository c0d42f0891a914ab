"""The domain miner: a VQ-VAE over each sample's input representation assigns a mined domain (a code).

:class:`DomainMiner` holds its own :class:`~mdctr.models.base.FeatureEmbedding`, a :class:`VQVAE` and a small
CTR head used **only during pre-training**. Why the head: the embedding is what the VQ-VAE clusters, and a
freshly initialised embedding (N(0, 1e-4)) carries no structure. Pre-training minimises CTR loss + VQ loss
jointly; the VQ-VAE sees the embedding through a stop-gradient, so the representation is shaped by the click
signal (what a domain should mean for ranking) and cannot shrink or distort itself just to be easy to
reconstruct. At assignment time only embedding → encoder → nearest code runs.

:func:`fit_miner` uses the train split only and is seeded and deterministic on CPU for a given number of torch
threads: refitting gives the same codes and codebook bit for bit (tests/domains/test_miner_determinism.py). The
thread count changes the order of float reductions, so 1 and 2 threads give slightly different miners (on 60,000
ML-1M train rows, 1.4% of the validation codes differed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from mdctr.blocks import MLP, FeatureEmbedding, ModelInputs
from mdctr.config import from_dict
from mdctr.data.tensors import Batch, TensorData
from mdctr.domains.vqvae import VQVAE, VQConfig, VQOutput, feature_recon_loss

log = logging.getLogger(__name__)

CONFIG_FILE = "miner_config.json"
INPUTS_FILE = "model_inputs.json"
STATE_FILE = "miner_state.pt"


@dataclass(frozen=True)
class MinerConfig(VQConfig):
    """The VQ-VAE's settings (:class:`~mdctr.domains.vqvae.VQConfig`: ``num_codes``, ``latent_dim``,
    ``hidden``, ``beta``, ``usage_weight``, ``usage_temperature``, ``restart_dead``, ``ema_decay``, ``recon``)
    plus those of the miner's pre-training.

    Attributes:
        head_hidden: hidden sizes of the pre-training CTR head.
        vq_weight: weight of the VQ loss relative to the CTR loss in pre-training.
        epochs: passes over the train split.
        batch_size: rows per step.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        seed: seeds initialisation and shuffling.
        embed_dim: embedding dimension of the miner's own embedding table.
    """

    head_hidden: tuple[int, ...] = (64,)
    vq_weight: float = 1.0
    epochs: int = 3
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 0.0
    seed: int = 0
    embed_dim: int = 16


class DomainMiner(nn.Module):
    """Embedding + VQ-VAE (+ pre-training head). forward(batch) → codes [B] int64."""

    def __init__(self, inputs: ModelInputs, config: MinerConfig):
        super().__init__()
        self.inputs = inputs
        self.config = config
        self.embedding = FeatureEmbedding(inputs.vocab_sizes, inputs.num_dense, config.embed_dim)
        in_dim = self.embedding.output_dim
        self.vqvae = VQVAE.from_config(in_dim, config)
        self.head = nn.Sequential(MLP(in_dim, config.head_hidden), nn.Linear(config.head_hidden[-1], 1))
        # output embedding of the feature reconstruction (pre-training only); a separate table because the
        # input table starts at N(0, 1e-4), where tied softmax logits are all ~0 and learn very slowly
        self.recon_embedding = FeatureEmbedding(
            inputs.vocab_sizes, inputs.num_dense, config.embed_dim, init_std=config.embed_dim**-0.5
        )

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    def embed(self, batch: Batch) -> torch.Tensor:
        """[B, S·E + D] input representation."""
        return self.embedding(batch.sparse, batch.dense)

    def forward(self, batch: Batch) -> torch.Tensor:
        """codes [B] int64: embedding → encoder → nearest codebook vector (no decoder)."""
        return self.vqvae.assign(self.embed(batch))

    def pretrain_step(self, batch: Batch) -> tuple[torch.Tensor, VQOutput]:
        """Pre-training loss (CTR BCE + vq_weight·VQ) on one batch → (scalar loss, VQ output)."""
        x = self.embed(batch)
        if self.config.recon == "features":
            out = self.vqvae(
                x,
                lambda dec: feature_recon_loss(
                    dec, batch.sparse, batch.dense, self.recon_embedding, balanced=self.config.recon_balance
                ),
            )
        else:
            out = self.vqvae(x.detach())
        logits = self.head(x).squeeze(-1)
        ctr = F.binary_cross_entropy_with_logits(logits, batch.label)
        return ctr + self.config.vq_weight * out.loss, out

    @torch.no_grad()
    def assign(self, data: TensorData, batch_size: int = 65536) -> torch.Tensor:
        """Code of every row of ``data`` → [N] int64 (eval mode; the miner's mode is restored after)."""
        was_training = self.training
        self.eval()
        try:
            parts = [self(data.batch(s, s + batch_size)) for s in range(0, len(data), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)

    # -- persistence --------------------------------------------------------------------------------------
    def save(self, directory: Path | str) -> None:
        """Write config, inputs (JSON) and the state dict into ``directory`` (created if missing)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(self.config), indent=2))
        (d / INPUTS_FILE).write_text(json.dumps(dataclasses.asdict(self.inputs), indent=2))
        torch.save(self.state_dict(), d / STATE_FILE)

    @classmethod
    def load(cls, directory: Path | str) -> DomainMiner:
        """Inverse of :meth:`save`; returns the miner in eval mode (identical assignments)."""
        d = Path(directory)
        config = from_dict(MinerConfig, json.loads((d / CONFIG_FILE).read_text()), where=str(d / CONFIG_FILE))
        raw = json.loads((d / INPUTS_FILE).read_text())
        raw["vocab_sizes"] = tuple(raw["vocab_sizes"])
        inputs = from_dict(ModelInputs, raw, where=str(d / INPUTS_FILE))
        miner = cls(inputs, config)
        miner.load_state_dict(torch.load(d / STATE_FILE, map_location="cpu", weights_only=True))
        return miner.eval()


def fit_miner(
    train: TensorData, inputs: ModelInputs, config: MinerConfig, *, init: DomainMiner | None = None
) -> DomainMiner:
    """Pre-train a miner on the train split (CTR + VQ loss, Adam); seeded, deterministic on CPU.

    The codebook is initialised from encodings of the first shuffled batch (data-dependent init) so that
    every code starts on real data. With ``init`` (a warm start: an older miner whose vocabularies ``inputs``
    extends, see :meth:`mdctr.data.encode.FeatureSpec.extended_with`) the miner starts from ``init``'s weights
    and codebook instead (its VQ settings kept; ``epochs``, ``lr`` and ``seed`` from ``config``), so code k
    keeps meaning roughly what it meant, and the domain towers of a warm-started model stay aligned with it.
    """
    torch.manual_seed(config.seed)
    first = True
    if init is not None:
        config = dataclasses.replace(init.config, epochs=config.epochs, lr=config.lr, seed=config.seed)
        miner = DomainMiner(inputs, config)
        carry_state(miner, init.state_dict(), init.inputs.vocab_sizes)
        first = False  # the codebook is carried, not re-initialised from data
        log.info("miner warm-started from an older miner (%d codes)", config.num_codes)
    else:
        miner = DomainMiner(inputs, config)
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(miner.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    miner.train()
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        total, steps = 0.0, 0
        for batch in train.batches(config.batch_size, shuffle=True, generator=gen):
            if len(batch) < 2:
                continue  # BatchNorm needs two rows; a trailing single row adds nothing
            if first:
                _init_codebook(miner, batch, gen)
                first = False
            loss, _ = miner.pretrain_step(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        used = int((miner.vqvae.usage > 0.1 / config.num_codes).sum())
        log.info(
            "miner epoch %d/%d: loss %.4f, codes in use %d/%d",
            epoch + 1,
            config.epochs,
            total / max(1, steps),
            used,
            config.num_codes,
        )
    log.info("fitted miner on %d rows in %.1fs", len(train), time.perf_counter() - t0)
    return miner.eval()


@torch.no_grad()
def _init_codebook(miner: DomainMiner, batch: Batch, gen: torch.Generator) -> None:
    """Set the codebook to encodings of distinct random rows of ``batch``."""
    miner.vqvae.init_codebook(miner.vqvae.encode(miner.embed(batch)), gen)


def carry_state(
    module: nn.Module, state: Mapping[str, torch.Tensor], old_vocab_sizes: Sequence[int]
) -> dict[str, int]:
    """Load ``state`` — the state dict of the same architecture built for ``old_vocab_sizes`` — into ``module``,
    whose :class:`~mdctr.blocks.FeatureEmbedding` tables may have more rows per feature (a warm start onto
    extended vocabularies). Each feature's old rows are copied to the start of its block in the larger table
    (old indices are kept by :meth:`~mdctr.data.encode.FeatureSpec.extended_with`); the new rows keep
    ``module``'s fresh initialisation. Every other tensor must match in shape.

    Used for the models of :mod:`mdctr.training.warm` and for a warm-started miner. Returns, per embedding
    table key, how many rows were new. Raises ValueError naming the first tensor that cannot be carried.
    """
    own = module.state_dict()
    tables = {f"{n}.table.weight": m for n, m in module.named_modules() if isinstance(m, FeatureEmbedding)}
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(
            f"the parameters differ: {len(missing)} missing in the older model (e.g. {missing[:2]}), "
            f"{len(extra)} only there (e.g. {extra[:2]})"
        )
    new_state: dict[str, torch.Tensor] = {}
    fresh_rows: dict[str, int] = {}
    for key, target in own.items():
        src = state[key].to(target.device)
        if key in tables and src.shape != target.shape:
            new_state[key] = _grow_table(key, src, target, tables[key], old_vocab_sizes)
            fresh_rows[key] = int(target.shape[0] - src.shape[0])
        elif src.shape != target.shape:
            raise ValueError(
                f"parameter {key!r} has shape {list(src.shape)} in the older model and {list(target.shape)} "
                "here (another width or architecture)"
            )
        else:
            new_state[key] = src
    module.load_state_dict(new_state)
    return fresh_rows


def _grow_table(
    key: str, src: torch.Tensor, target: torch.Tensor, emb: FeatureEmbedding, old_sizes: Sequence[int]
) -> torch.Tensor:
    """``target`` (fresh rows) with each feature's ``old_sizes[j]`` rows of ``src`` copied to its block start."""
    starts = [int(x) for x in emb.offsets.tolist()]
    new_sizes = [b - a for a, b in zip(starts, starts[1:] + [int(target.shape[0])], strict=True)]
    old_sizes = [int(x) for x in old_sizes]
    if len(old_sizes) != len(new_sizes) or sum(old_sizes) != src.shape[0] or src.shape[1] != target.shape[1]:
        raise ValueError(
            f"embedding {key!r}: the older table {list(src.shape)} does not hold vocabularies {old_sizes}, or its "
            f"features differ from {new_sizes}"
        )
    shrunk = [j for j, (o, n) in enumerate(zip(old_sizes, new_sizes, strict=True)) if n < o]
    if shrunk:
        raise ValueError(
            f"embedding {key!r}: feature(s) {shrunk} have fewer rows here than in the older model"
        )
    out = target.detach().clone()
    old_start = 0
    for start, size in zip(starts, old_sizes, strict=True):
        out[start : start + size] = src[old_start : old_start + size]
        old_start += size
    return out
