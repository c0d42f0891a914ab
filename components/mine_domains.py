"""Component: fit the VQ-VAE domain miner on train, assign a code to every row, write the domain report."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

import mdctr
from components import described


@dsl.component(base_image=mdctr.image_ref(), install_kfp_package=False)
@described(
    seed="Seed of the miner's initialisation and shuffling.",
    report="The domain report (Markdown): size, CTR, usage and what distinguishes each mined domain.",
)
def mine_domains(
    miner_options: str,
    seed: int,
    prepared: Input[Dataset],
    domains: Output[Dataset],
    report: Output[Markdown],
    metrics: Output[Metrics],
) -> int:
    """Mine domains from ``prepared`` into ``domains`` (miner + codes + report); return the codes used."""
    from mdctr.steps.mine_domains import MineConfig
    from mdctr.steps.mine_domains import mine_domains as step

    result = step(
        prepared_dir=prepared.path,
        out_dir=domains.path,
        report_path=report.path,
        config=MineConfig(miner_options=miner_options, seed=seed),
    )
    for name, value in result.summary.items():
        metrics.log_metric(name, value)
    domains.metadata.update({"codes_used": result.codes_used, **result.summary})
    return result.codes_used
