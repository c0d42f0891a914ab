"""Adaptive² (domain mining + adaptation): a VQ-VAE miner assigns each sample a code k (its mined domain);
a shared network sees every sample, the domain-specific network of code k sees the rows of code k (routed),
their outputs are fused and fed to the prediction head. Hand-crafted domain ids are not used.

Two adaptation backbones over the mined codes:

* ``backbone="star"`` (default: chosen on validation AUC over 5 seeds against the MLP backbone and six other
  variants, +0.0034 on ML-1M, and stable on Epinions; docs/benchmarks/adaptive2-variants.md): STAR's
  shared-and-specific layers with the code as the domain: partitioned normalisation, star-topology FCN
  (W ⊙ W_k) and an auxiliary network over the code's embedding. The ``shared`` sizes are the FCN's hidden
  sizes; ``specific`` and ``fusion`` do not apply.
* ``backbone="mlp"``: a shared MLP and one specific MLP per code, concatenated (or gated) into a linear head.

Two miner modes:

* ``miner="joint"``: the model owns a :class:`~mdctr.domains.vqvae.VQVAE` over its own embedding output,
  trained end to end with the CTR loss; :meth:`Adaptive2.aux_loss` returns the VQ loss of the last training
  forward. With ``recon="features"`` the decoder reconstructs the sample's ids and dense values (see
  :func:`~mdctr.domains.vqvae.feature_recon_loss`) and the VQ gradient also reaches the embedding; with
  ``recon="embedding"`` it reconstructs the normalised embedding vector, seen through a stop-gradient so
  that the embedding cannot collapse to make reconstruction trivial.
* ``miner="pretrained"``: a frozen :class:`~mdctr.domains.miner.DomainMiner` attached with
  :meth:`Adaptive2.load_miner` assigns the codes; no auxiliary loss.

In eval mode only the code assignment runs (encoder + nearest code), so counted FLOPs equal served FLOPs.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mdctr.data.tensors import Batch, TensorData
from mdctr.domains.miner import DomainMiner
from mdctr.domains.vqvae import VQVAE, VQConfig, feature_recon_loss
from mdctr.models.base import (
    MLP,
    CTRModel,
    FeatureEmbedding,
    ModelInputs,
    eval_codes,
    recalibrate_batchnorm,
    register,
    route,
    scale_widths,
)
from mdctr.models.star import StarTower

log = logging.getLogger(__name__)

MINER_MODES = ("joint", "pretrained")
FUSIONS = ("concat", "gate")
BACKBONES = ("mlp", "star")


@register("adaptive2")
class Adaptive2(CTRModel):
    """embed → codes k → [shared(x) ‖ specific_k(x)] (or gated sum) → head → logit [B]; with
    ``backbone="star"``: embed → codes k → star FCN_k(PN_k(x)) + aux(code emb ‖ x) → logit [B].

    Width scales the shared, specific, auxiliary and VQ-VAE hidden sizes.
    """

    @dataclass(frozen=True)
    class Config(VQConfig):
        """The VQ-VAE's settings (:class:`~mdctr.domains.vqvae.VQConfig`, the same fields and defaults as the
        pre-trained miner's; ``hidden`` = the VQ-VAE encoder's hidden sizes, scaled by width here) and the
        adaptation network's."""

        #: per-feature balanced reconstruction (VQConfig's default is False, the earlier loss); on for
        #: adaptive2: higher validation AUC on ML-1M (docs/benchmarks/adaptive2-variants.md)
        recon_balance: bool = True
        miner: str = "joint"
        backbone: str = "star"
        shared: tuple[int, ...] = (256, 128)
        specific: tuple[int, ...] = (128, 64)
        fusion: str = "concat"
        vq_weight: float = 1.0
        #: let the VQ-VAE losses train the CTR embedding too (False: the miner reads it through a stop-gradient)
        vq_grad_to_embedding: bool = True
        #: after each epoch, recompute BatchNorm/partitioned-norm statistics with the final codes (see
        #: mdctr.models.base.recalibrate_batchnorm) over this many training rows; 0: keep the moving averages
        recalibrate_rows: int = 0
        dropout: float = 0.0
        batchnorm: bool = True  # the same normalised blocks in every model: see docs/benchmarks.md
        #: backbone="star" only: the code embedding's size and the auxiliary network's hidden sizes (as STAR's)
        code_embed_dim: int = 16
        aux_hidden: tuple[int, ...] = (64,)
        #: joint mode: set the codebook to encodings of random rows of the first training batch (as
        #: fit_miner does); False: the random N(0, 1) codebook, on which most rows start on one code
        data_init: bool = False
        #: joint mode: after this many epochs the codes are frozen (the VQ-VAE stops training and reads a
        #: frozen copy of the embedding, so a row keeps its code while the ranker trains on); 0: never
        freeze_after_epochs: int = 0
        #: code churn (fraction of rows whose code changed since the previous epoch) is measured on this
        #: many training rows (a fixed sample drawn at the first epoch's end); 0: not measured
        churn_rows: int = 100_000
        #: joint mode: weight of a per-code CTR head in the VQ loss: BCE of a linear head on the quantised
        #: latent z_q (= the code's vector, so one prediction per code), whose straight-through gradient moves
        #: each encoding toward the code whose CTR fits its label: the click signal shapes the assignment.
        #: Training only (no serving cost); 0: off
        code_ctr_weight: float = 0.0

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.miner not in MINER_MODES:
                raise ValueError(f"adaptive2: miner must be one of {MINER_MODES}, got {self.miner!r}")
            if self.fusion not in FUSIONS:
                raise ValueError(f"adaptive2: fusion must be one of {FUSIONS}, got {self.fusion!r}")
            if self.backbone not in BACKBONES:
                raise ValueError(f"adaptive2: backbone must be one of {BACKBONES}, got {self.backbone!r}")
            if self.freeze_after_epochs < 0 or self.churn_rows < 0:
                raise ValueError("adaptive2: freeze_after_epochs and churn_rows must be >= 0")
            if self.code_ctr_weight < 0:
                raise ValueError("adaptive2: code_ctr_weight must be >= 0")
            if (self.freeze_after_epochs or self.code_ctr_weight) and self.miner != "joint":
                raise ValueError(
                    "adaptive2: freeze_after_epochs and code_ctr_weight apply to miner='joint' only"
                )
            if self.backbone == "star" and self.fusion != "concat":
                raise ValueError(
                    "adaptive2: fusion applies to backbone='mlp' only; backbone='star' sums logits"
                )

    domain_sources = ("mined",)
    mines_domains = True
    # the model's, the reconstruction's and a loaded miner's embedding tables
    embedding_prefixes = (
        "embedding.",
        "recon_embedding.",
        "code_embedding.",
        "miner.embedding.",
        "miner.recon_embedding.",
    )

    def __init__(self, inputs: ModelInputs, config: Config, width: float = 1.0):
        super().__init__(inputs, config, width)
        in_dim = inputs.input_dim
        self.gate = None
        if config.backbone == "star":
            self._build_star(in_dim, config, width)
        else:
            self._build_mlp(in_dim, config, width)
        self.vqvae: VQVAE | None = None
        self.recon_embedding: FeatureEmbedding | None = None
        self.miner: DomainMiner | None = None
        if config.miner == "joint":
            self.vqvae = VQVAE.from_config(in_dim, config, hidden=scale_widths(config.hidden, width))
            if config.recon == "features":
                self.recon_embedding = FeatureEmbedding(
                    inputs.vocab_sizes, inputs.num_dense, inputs.embed_dim, init_std=inputs.embed_dim**-0.5
                )
        self.code_ctr_head: nn.Linear | None = None
        if config.miner == "joint" and config.code_ctr_weight > 0:
            self.code_ctr_head = nn.Linear(config.latent_dim, 1)
        # frozen copy of the embedding the codes are read from once frozen (freeze_after_epochs only)
        self.code_embedding: FeatureEmbedding | None = None
        if config.miner == "joint" and config.freeze_after_epochs:
            self.code_embedding = copy.deepcopy(self.embedding).requires_grad_(False)
        # state that checkpoints and the best-epoch restore must carry: buffers, not attributes
        self.register_buffer("codebook_initialised", torch.tensor(False))
        self.register_buffer("epochs_done", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("codes_frozen", torch.tensor(False))
        self._aux: torch.Tensor | None = None
        self.last_codes: torch.Tensor | None = None
        # churn reference: a fixed sample of training rows and their codes at the previous epoch's end
        self._churn_rows: TensorData | None = None
        self._churn_codes: torch.Tensor | None = None

    def _build_mlp(self, in_dim: int, config: Config, width: float) -> None:
        kw = {"dropout": config.dropout, "batchnorm": config.batchnorm}
        self.shared = MLP(in_dim, scale_widths(config.shared, width), **kw)
        specific = scale_widths(config.specific, width)
        if config.fusion == "gate":  # a gated sum needs equal widths: the last specific layer follows shared
            specific = (*specific[:-1], self.shared.output_dim)
        self.specific = nn.ModuleList(MLP(in_dim, specific, **kw) for _ in range(config.num_codes))
        self.specific_dim = specific[-1]
        if config.fusion == "gate":
            self.gate = nn.Linear(in_dim, self.shared.output_dim)
            head_in = self.shared.output_dim
        else:
            head_in = self.shared.output_dim + self.specific_dim
        self.head = nn.Linear(head_in, 1)

    def _build_star(self, in_dim: int, config: Config, width: float) -> None:
        aux_hidden = scale_widths(config.aux_hidden, width)
        hidden = scale_widths(config.shared, width)
        self.tower = StarTower(in_dim, hidden, config.num_codes, aux_hidden, config.code_embed_dim)

    # -- miner --------------------------------------------------------------------------------------------
    @classmethod
    def holds_miner(cls, config: Config) -> bool:
        """``miner="pretrained"``: the model carries a frozen pre-trained miner (joint mode mines itself)."""
        return config.miner == "pretrained"

    def load_miner(self, miner: DomainMiner) -> None:  # type: ignore[override]
        """Attach a pre-trained miner (``miner="pretrained"`` only); it is frozen and kept in eval mode."""
        if self.config.miner != "pretrained":
            raise ValueError("adaptive2: load_miner needs config miner='pretrained'")
        if miner.num_codes != self.config.num_codes:
            raise ValueError(
                f"adaptive2: miner has {miner.num_codes} codes; the model was built for {self.config.num_codes}"
            )
        if tuple(miner.inputs.vocab_sizes) != tuple(self.inputs.vocab_sizes):
            raise ValueError("adaptive2: the miner was fitted on other features (vocabulary sizes differ)")
        for p in miner.parameters():
            p.requires_grad_(False)
        self.miner = miner.eval()

    def train(self, mode: bool = True) -> Adaptive2:
        super().train(mode)
        if self.miner is not None:
            self.miner.eval()  # frozen: its BatchNorm statistics must not move either
        if self.vqvae is not None and bool(self.codes_frozen):
            self.vqvae.eval()  # frozen codes: no EMA, restarts or BatchNorm statistics updates
        return self

    def codes(self, batch: Batch, x: torch.Tensor) -> torch.Tensor:
        """Mined domain of each row → [B] int64; in joint training also records the VQ loss."""
        self._aux = None
        if self.config.miner == "pretrained":
            if self.miner is None:
                raise RuntimeError("adaptive2: miner='pretrained' but no miner loaded; call load_miner()")
            with torch.no_grad():
                return self.miner(batch)
        assert self.vqvae is not None
        if bool(self.codes_frozen):
            assert self.code_embedding is not None
            with torch.no_grad():
                return self.vqvae.assign(self.code_embedding(batch.sparse, batch.dense))
        if not self.training:
            return self.vqvae.assign(x)
        if self.config.data_init and not bool(self.codebook_initialised) and x.shape[0] > 1:
            self.vqvae.init_codebook(self.vqvae.encode(x.detach()))
            self.codebook_initialised.fill_(True)
        if self.recon_embedding is not None:
            emb = self.recon_embedding
            vq_in = x if self.config.vq_grad_to_embedding else x.detach()
            balanced = self.config.recon_balance
            out = self.vqvae(
                vq_in,
                lambda dec: feature_recon_loss(dec, batch.sparse, batch.dense, emb, balanced=balanced),
            )
        else:
            out = self.vqvae(x.detach())
        self._aux = self.config.vq_weight * out.loss
        if self.code_ctr_head is not None:
            logit = self.code_ctr_head(out.z_q).squeeze(-1)
            ctr = F.binary_cross_entropy_with_logits(logit, batch.label)
            self._aux = self._aux + self.config.code_ctr_weight * ctr
        return out.codes

    # -- model --------------------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        k = self.codes(batch, x)
        self.last_codes = k.detach()
        if self.config.backbone == "star":
            return self.tower(x, k).squeeze(-1)
        shared = self.shared(x)  # [B, H]
        specific = route(x, k, list(self.specific), self.specific_dim)  # [B, H_s]
        if self.gate is not None:
            g = torch.sigmoid(self.gate(x))
            fused = g * shared + (1.0 - g) * specific
        else:
            fused = torch.cat([shared, specific], dim=1)
        return self.head(fused).squeeze(-1)

    def end_epoch(self, train: TensorData) -> dict[str, float]:
        """Freeze the codes once ``freeze_after_epochs`` epochs are done; with ``recalibrate_rows``, running
        statistics recomputed under the epoch's final codes. Returns ``code_churn`` (from the second epoch on;
        a resumed run measures it again from the epoch after the resume) and ``codes_frozen`` for the history.
        """
        self.epochs_done += 1
        cfg = self.config
        if (
            cfg.freeze_after_epochs
            and not bool(self.codes_frozen)
            and int(self.epochs_done) >= cfg.freeze_after_epochs
        ):
            self._freeze_codes()
        if cfg.recalibrate_rows > 0:
            recalibrate_batchnorm(self, train, cfg.recalibrate_rows, frozen=self.miner)
        stats: dict[str, float] = {"codes_frozen": float(bool(self.codes_frozen))}
        if cfg.churn_rows > 0:
            if self._churn_rows is None:  # train arrives shuffled: its head is a random sample, kept fixed
                self._churn_rows = train.head(min(cfg.churn_rows, len(train)))
            codes = self.assign_codes(self._churn_rows)
            if self._churn_codes is not None:
                stats["code_churn"] = float((codes != self._churn_codes).float().mean())
            self._churn_codes = codes
            usage = torch.bincount(codes, minlength=cfg.num_codes).float() / max(1, codes.numel())
            stats["codes_used"] = float((usage > 0).sum())
        log.info(
            "adaptive2 epoch %d: code churn %s, codes used %s, frozen %s",
            int(self.epochs_done),
            f"{stats['code_churn']:.4f}" if "code_churn" in stats else "–",
            int(stats.get("codes_used", -1)),
            bool(self.codes_frozen),
        )
        return stats

    @torch.no_grad()
    def _freeze_codes(self) -> None:
        """From now on codes come from the VQ-VAE (eval mode) over a snapshot of the current embedding."""
        assert self.code_embedding is not None and self.vqvae is not None
        self.code_embedding.load_state_dict(self.embedding.state_dict())
        self.codes_frozen.fill_(True)
        self.vqvae.eval()
        log.info("adaptive2: codes frozen after epoch %d", int(self.epochs_done))

    def assign_codes(self, data: TensorData, batch_size: int = 65536) -> torch.Tensor:
        """Serving-time code of every row of ``data`` → [N] int64 (eval mode; the mode is restored after)."""
        return eval_codes(self, data, lambda b: self.codes(b, self.embed(b)), batch_size)

    def aux_loss(self) -> torch.Tensor | None:
        """VQ loss (×vq_weight) of the last training forward in joint mode, else None."""
        return self._aux
