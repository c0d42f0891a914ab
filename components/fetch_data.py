"""Component: fetch a dataset version (DVC) and open the MLflow parent run of this pipeline run."""

from kfp import dsl
from kfp.dsl import Dataset, Output

import mdctr


@dsl.component(base_image=mdctr.IMAGE, install_kfp_package=False)
def fetch_data(
    dataset: str,
    dataset_options: str,
    data_rev: str,
    data_repo: str,
    tracking_uri: str,
    kfp_run_id: str,
    raw: Output[Dataset],
) -> str:
    """Fetch ``dataset`` at ``data_rev`` into ``raw``; return the MLflow parent run id."""
    from mdctr.steps.fetch_data import FetchConfig
    from mdctr.steps.fetch_data import fetch_data as step

    result = step(
        out_dir=raw.path,
        config=FetchConfig(
            dataset=dataset,
            dataset_options=dataset_options,
            data_rev=data_rev,
            data_repo=data_repo,
            tracking_uri=tracking_uri,
            kfp_run_id=kfp_run_id,
        ),
    )
    raw.metadata.update(
        {
            "dataset": dataset,
            "rev": result.rev,
            "md5": result.md5,
            "files": result.files,
            "run_id": result.run_id,
        }
    )
    return result.run_id
