"""Component: encode and split the validated data into train/valid/test parquet + the feature spec."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

import mdctr
from components import described


@dsl.component(base_image=mdctr.image_ref(), install_kfp_package=False)
@described()
def prepare_data(
    dataset: str,
    dataset_options: str,
    split: str,
    split_seed: int,
    raw: Input[Dataset],
    prepared: Output[Dataset],
    train_window: str = "",
    eval_period: str = "",
) -> int:
    """Write the prepared splits of ``raw`` to ``prepared``; return the number of train rows."""
    from mdctr.steps.prepare_data import PrepareConfig
    from mdctr.steps.prepare_data import prepare_data as step

    result = step(
        source=raw.path,
        out_dir=prepared.path,
        config=PrepareConfig(
            dataset=dataset,
            dataset_options=dataset_options,
            split=split,
            seed=split_seed,
            train_window=train_window,
            eval_period=eval_period,
        ),
    )
    prepared.metadata.update(
        {
            "dataset": dataset,
            "rev": raw.metadata.get("rev", ""),
            "md5": raw.metadata.get("md5", ""),
            "rows": result.rows,
            "features": result.features,
            "domains": result.num_domains,
        }
    )
    return result.rows["train"]
