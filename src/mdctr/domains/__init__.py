"""Domain mining: a VQ-VAE assigns every sample a mined domain (a code); reports describe the codes."""

from mdctr.domains.miner import DomainMiner, MinerConfig, fit_miner
from mdctr.domains.report import domain_report, report_markdown
from mdctr.domains.vqvae import VQVAE, VQOutput, feature_recon_loss

__all__ = [
    "VQVAE",
    "DomainMiner",
    "MinerConfig",
    "VQOutput",
    "domain_report",
    "feature_recon_loss",
    "fit_miner",
    "report_markdown",
]
