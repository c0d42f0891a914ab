"""A VQ-VAE over sample representations: the code index of a sample is its mined domain.

encoder → z_e → nearest codebook vector e_k (k = the code) → decoder reconstructs the input (by default the
normalised input vector; a caller may pass its own reconstruction loss, e.g. over the raw features).

Loss = reconstruction + ‖sg[z_e] − e_k‖² + β·‖z_e − sg[e_k]‖² + usage_weight·(log m − H(p̄)), with a
straight-through gradient from z_q to z_e. p̄ is the batch-average *soft* assignment (softmax of negative
distances); the term is 0 when every code is equally used and pushes against collapse onto few codes.
Codes still unused are re-seeded from current batch encodings (dead-code restart) during training.

Distances are ‖z‖² − 2·z·cᵀ + ‖c‖² written with matmuls (not ``cdist``), so that
``torch.utils.flop_counter.FlopCounterMode`` counts the assignment cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mdctr.blocks import MLP, BatchNorm1d, FeatureEmbedding


@dataclass(frozen=True)
class VQConfig:
    """The VQ-VAE's settings: one definition for the pre-trained miner (:class:`~mdctr.domains.MinerConfig`)
    and for a model that mines its own domains (``adaptive2``), both of which extend it.

    Attributes:
        num_codes: number m of mined domains (codebook size).
        latent_dim: codebook vector width.
        hidden: VQ-VAE encoder hidden sizes (the decoder mirrors them).
        beta: commitment weight β.
        usage_weight: weight of the codebook-usage entropy regulariser.
        usage_temperature: temperature of the soft assignment in the usage term.
        restart_dead: re-seed dead codes from batch encodings during training.
        ema_decay: EMA decay of the codebook update (None: codebook learnt by its loss term).
        recon: what the decoder reconstructs: ``"features"`` (the sample's ids by a softmax over an output
            embedding, and its dense values; see :func:`feature_recon_loss`) or ``"embedding"`` (MSE to the
            normalised embedding vector, which the VQ-VAE then sees through a stop-gradient).
        recon_balance: ``recon="features"`` only: weigh every feature's reconstruction term equally,
            normalised to 1 at chance (see :func:`feature_recon_loss`); False keeps the earlier loss.
    """

    num_codes: int = 4
    latent_dim: int = 16
    hidden: tuple[int, ...] = (64,)
    beta: float = 0.25
    usage_weight: float = 0.1
    usage_temperature: float = 1.0
    restart_dead: bool = True
    ema_decay: float | None = 0.95
    recon: str = "features"
    recon_balance: bool = False

    def __post_init__(self) -> None:
        name = type(self).__qualname__  # MinerConfig, Adaptive2.Config
        if self.recon not in RECON_TARGETS:
            raise ValueError(f"{name}.recon must be one of {RECON_TARGETS}, got {self.recon!r}")
        if self.num_codes < 1:
            raise ValueError(f"{name}.num_codes must be >= 1, got {self.num_codes}")


#: what the VQ-VAE decoder may reconstruct (see :class:`VQConfig`)
RECON_TARGETS = ("features", "embedding")


@dataclass(frozen=True)
class VQOutput:
    """Result of one VQ-VAE forward.

    Attributes:
        codes: [B] int64 code index per row.
        z_q: [B, latent] quantised latent with the straight-through gradient to the encoder.
        loss: scalar total VQ-VAE loss (reconstruction + codebook + β·commitment + usage).
        parts: detached scalar parts of ``loss`` by name (for logging).
    """

    codes: torch.Tensor
    z_q: torch.Tensor
    loss: torch.Tensor
    parts: dict[str, torch.Tensor]


class VQVAE(nn.Module):
    """Vector-quantised autoencoder. forward(x [B, in_dim]) → :class:`VQOutput`.

    Args:
        in_dim: width of the input representation.
        num_codes: codebook size m (number of mined domains).
        latent_dim: codebook vector width.
        hidden: encoder hidden sizes (the decoder mirrors them).
        beta: commitment weight β.
        usage_weight: weight of the codebook-usage (entropy) regulariser.
        usage_temperature: temperature of the soft assignment used by the usage term.
        restart_dead: re-seed codes unused for a while from current encodings (training only).
        restart_decay: decay of the running code-usage estimate that decides which codes are dead.
        input_norm: standardise the input with running statistics (BatchNorm without affine) so the
            reconstruction target does not depend on the input's scale (embeddings start tiny, N(0, 1e-4)).
        ema_decay: if set, the codebook is a buffer updated as an exponential moving average of the
            encodings assigned to each code (k-means-like, van den Oord et al. 2017, appendix) and the
            codebook loss term carries no gradient; if None, the codebook is a parameter learnt by the
            codebook loss. EMA tracks a moving encoder much faster than a small learning rate does.
    """

    def __init__(
        self,
        in_dim: int,
        num_codes: int,
        latent_dim: int = 16,
        hidden: Sequence[int] = (64,),
        *,
        beta: float = 0.25,
        usage_weight: float = 0.1,
        usage_temperature: float = 1.0,
        restart_dead: bool = True,
        restart_decay: float = 0.99,
        input_norm: bool = True,
        ema_decay: float | None = 0.95,
    ):
        super().__init__()
        if num_codes < 1:
            raise ValueError(f"num_codes must be >= 1, got {num_codes}")
        self.num_codes = num_codes
        self.beta = beta
        self.usage_weight = usage_weight
        self.usage_temperature = usage_temperature
        self.restart_dead = restart_dead
        self.restart_decay = restart_decay
        self.norm = BatchNorm1d(in_dim, affine=False) if input_norm else nn.Identity()
        self.encoder = nn.Sequential(
            MLP(in_dim, hidden), nn.Linear(hidden[-1] if hidden else in_dim, latent_dim)
        )
        self.decoder = nn.Sequential(
            MLP(latent_dim, tuple(reversed(hidden))), nn.Linear(hidden[0] if hidden else latent_dim, in_dim)
        )
        self.ema_decay = ema_decay
        init = torch.randn(num_codes, latent_dim)
        if ema_decay is None:
            self.codebook = nn.Parameter(init)
        else:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", init.clone())
        # running fraction of rows assigned to each code; starts "fully used" so no code restarts at once
        self.register_buffer("usage", torch.full((num_codes,), 1.0 / num_codes))

    @classmethod
    def from_config(cls, in_dim: int, config: VQConfig, hidden: Sequence[int] | None = None) -> VQVAE:
        """A VQ-VAE with ``config``'s settings; ``hidden`` overrides ``config.hidden`` (e.g. width-scaled)."""
        return cls(
            in_dim,
            config.num_codes,
            config.latent_dim,
            config.hidden if hidden is None else hidden,
            beta=config.beta,
            usage_weight=config.usage_weight,
            usage_temperature=config.usage_temperature,
            restart_dead=config.restart_dead,
            ema_decay=config.ema_decay,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_dim] → z_e [B, latent]."""
        return self.encoder(self.norm(x))

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared Euclidean distances z [B, L] × codebook [m, L] → [B, m], as matmuls (FLOP-countable)."""
        c = self.codebook
        return (z * z).sum(1, keepdim=True) - 2.0 * (z @ c.t()) + (c * c).sum(1).unsqueeze(0)

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_dim] → codes [B] int64 (no decoder, no loss: the serving-time cost)."""
        return self.distances(self.encode(x)).argmin(1)

    def forward(
        self, x: torch.Tensor, recon_loss: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> VQOutput:
        """x [B, in_dim] → :class:`VQOutput`.

        ``recon_loss`` maps the decoder output [B, in_dim] to a scalar reconstruction loss; by default it is
        the MSE to the normalised input (stop-gradient on the target).
        """
        target = self.norm(x)
        z_e = self.encoder(target)
        dist = self.distances(z_e)  # [B, m]
        codes = dist.argmin(1)
        e_k = self.codebook.index_select(0, codes)  # [B, L]
        codebook_loss = F.mse_loss(e_k, z_e.detach())
        commitment = F.mse_loss(z_e, e_k.detach())
        z_q = z_e + (e_k - z_e).detach()  # straight-through: forward e_k, backward identity to z_e
        decoded = self.decoder(z_q)
        recon = recon_loss(decoded) if recon_loss is not None else F.mse_loss(decoded, target.detach())
        soft = torch.softmax(-dist / self.usage_temperature, dim=1).mean(0)  # p̄ [m]
        entropy = -(soft * torch.log(soft + 1e-10)).sum()
        usage = math.log(self.num_codes) - entropy  # ≥ 0; 0 at uniform usage
        loss = recon + codebook_loss + self.beta * commitment + self.usage_weight * usage
        if self.training:
            self._track_and_restart(z_e.detach(), codes)
        parts = {
            "recon": recon.detach(),
            "codebook": codebook_loss.detach(),
            "commitment": commitment.detach(),
            "usage": usage.detach(),
        }
        return VQOutput(codes=codes, z_q=z_q, loss=loss, parts=parts)

    @torch.no_grad()
    def init_codebook(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Set the codebook to encodings ``z`` [B, latent] of distinct random rows (data-dependent init).

        Why: a random codebook far from the encodings leaves most rows on one code and the others dead until
        restarts move them; starting every code on a real encoding spreads the rows from the first step.
        """
        pick = torch.randperm(z.shape[0], generator=generator)[: self.num_codes].to(z.device)
        if pick.numel() < self.num_codes:  # tiny batch: repeat rows, restarts will spread them later
            pick = pick.repeat(self.num_codes // max(1, pick.numel()) + 1)[: self.num_codes]
        self.codebook.data.copy_(z[pick])
        if self.ema_decay is not None:
            self.ema_sum.copy_(z[pick])
            self.ema_count.fill_(1.0)

    def _set_codebook(self, value: torch.Tensor) -> None:
        """Replace the codebook's storage (not in place): the current graph keeps the vectors it used."""
        if isinstance(self.codebook, nn.Parameter):
            self.codebook.data = value
        else:
            self.codebook = value

    @torch.no_grad()
    def _track_and_restart(self, z_e: torch.Tensor, codes: torch.Tensor) -> None:
        """Update the running usage; re-seed codes whose usage fell below 1/(10·m) with random encodings.

        Why: a code that no encoding is nearest to gets no codebook gradient and would stay dead forever;
        moving it onto a real encoding gives it rows again (Dhariwal et al., Jukebox; Łańcucki et al. 2020).
        """
        counts = torch.bincount(codes, minlength=self.num_codes).to(z_e.dtype)
        frac = counts / max(1, codes.numel())
        self.usage.mul_(self.restart_decay).add_(frac, alpha=1.0 - self.restart_decay)
        if self.ema_decay is not None:
            g = self.ema_decay
            sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, z_e)
            self.ema_count.mul_(g).add_(counts, alpha=1.0 - g)
            self.ema_sum.mul_(g).add_(sums, alpha=1.0 - g)
            n = self.ema_count.sum()
            # Laplace smoothing keeps an empty code's vector finite
            smoothed = (self.ema_count + 1e-5) / (n + self.num_codes * 1e-5) * n
            self._set_codebook(self.ema_sum / smoothed.unsqueeze(1))
        if not self.restart_dead or self.num_codes == 1:
            return
        dead = (self.usage < 0.1 / self.num_codes).nonzero().flatten()
        if dead.numel() == 0 or z_e.shape[0] == 0:
            return
        pick = torch.randint(0, z_e.shape[0], (dead.numel(),), device=z_e.device)
        fresh = self.codebook.detach().clone()
        fresh[dead] = z_e[pick]
        self._set_codebook(fresh)
        if self.ema_decay is not None:
            self.ema_count[dead] = 1.0
            self.ema_sum[dead] = z_e[pick]
        self.usage[dead] = 1.0 / self.num_codes  # grace period before the code can be judged dead again


#: vocabularies larger than this are reconstructed with a sampled softmax (see :func:`feature_recon_loss`)
FULL_SOFTMAX_MAX_VOCAB = 1024
#: shared uniform negatives per feature and batch in the sampled softmax
SAMPLED_NEGATIVES = 256


def feature_recon_loss(
    decoded: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    embedding: FeatureEmbedding,
    *,
    full_softmax_max_vocab: int = FULL_SOFTMAX_MAX_VOCAB,
    num_negatives: int = SAMPLED_NEGATIVES,
    balanced: bool = False,
) -> torch.Tensor:
    """Reconstruction of the raw features from the decoder output → scalar.

    ``balanced=True`` normalises every feature's term to 1 at chance (each CE divided by the log of the
    number of classes it scores, each standardised dense value's MSE as is) and averages over the S + D
    features, so that no feature dominates what the codes encode. ``balanced=False`` is the earlier loss
    (mean CE over sparse features + the dense MSE), under which on ML-1M the one dense feature (age) carried
    as much weight as all six id features together and the codes became age bins.

    decoded [B, S·E + D] is read as one E-vector per sparse feature plus D dense values. Each E-vector scores
    every id of its feature against that feature's rows of ``embedding`` (an *output* embedding, separate
    from the input one) and is trained with cross-entropy on the true id; dense values with MSE on their
    standardised values.

    Why not MSE to the embedding vector: the embedding is learnt too, and ids' vectors carry no notion of
    which ids co-occur. Predicting the ids from one code makes the code a latent class of the sample (ids
    that occur together share a code), and the softmax cannot be satisfied by shrinking the embedding.

    Cost: a full softmax scores B × V_j logits per feature, which dominates training on id features (ML-1M:
    ~8.6k ids in all; Epinions: ~300k items, gigabytes per batch). A feature with more than
    ``full_softmax_max_vocab`` ids is therefore trained with a sampled softmax: the true id against
    ``num_negatives`` ids drawn uniformly (shared by the batch), B × (K + 1) logits. Uniform proposals need no
    log-q correction; an accidental hit of the true id among the negatives is rare at these sizes and harmless.
    """
    s, e = embedding.num_sparse, embedding.embed_dim
    d = embedding.num_dense
    starts = embedding.offsets.tolist()
    ends = starts[1:] + [embedding.table.num_embeddings]
    sparse_loss = decoded.new_zeros(())
    if s:
        h = decoded[:, : s * e].reshape(-1, s, e)
        weight = embedding.table.weight
        for j in range(s):
            table = weight[starts[j] : ends[j]]  # [V_j, E]
            if table.shape[0] <= full_softmax_max_vocab:
                logits = h[:, j] @ table.t()  # [B, V_j]
                term = F.cross_entropy(logits, sparse[:, j])
                chance = math.log(table.shape[0])
            else:
                negatives = torch.randint(0, table.shape[0], (num_negatives,), device=h.device)
                positive = (h[:, j] * table[sparse[:, j]]).sum(-1, keepdim=True)  # [B, 1]
                logits = torch.cat([positive, h[:, j] @ table[negatives].t()], dim=1)  # [B, 1 + K]
                target = torch.zeros(h.shape[0], dtype=torch.int64, device=h.device)  # true id: column 0
                term = F.cross_entropy(logits, target)
                chance = math.log(1 + num_negatives)
            # balanced: the CE of a uniform guess is 1 for every feature (a 2-id feature counts as much as a
            # 3,000-id one); log 1 = 0 for a 1-id feature, which carries no information anyway
            sparse_loss = sparse_loss + (term / chance if balanced and chance > 0 else term)
    if not balanced:
        # legacy (recon_balance=False): mean CE over sparse features + the MSE over all dense values, so the
        # dense block weighs as much as every sparse feature together
        loss = sparse_loss / s if s else sparse_loss
        if d:
            loss = loss + F.mse_loss(decoded[:, s * e :], dense)
        return loss
    # balanced: each dense value's MSE on its standardised value is 1 for the mean guess, like CE/log V for a
    # uniform guess; the S + D per-feature terms are averaged so no single feature dominates
    dense_loss = F.mse_loss(decoded[:, s * e :], dense, reduction="sum") / dense.shape[0] if d else 0.0
    return (sparse_loss + dense_loss) / max(1, s + d)
