"""Component: open the MLflow parent run of this pipeline run (never cached: one parent run per KFP run)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

import mdctr
from components import described


@dsl.component(base_image=mdctr.image_ref(), install_kfp_package=False)
@described()
def start_run(
    dataset: str,
    dataset_options: str,
    data_rev: str,
    data_md5: str,
    tracking_uri: str,
    kfp_run_id: str,
    raw: Input[Dataset],
    run: Output[Artifact],
) -> str:
    """Start the parent run for the data in ``raw``; return its id (also on ``run``'s metadata, for the
    training tasks inside the ParallelFor)."""
    from pathlib import Path

    from mdctr.steps.fetch_data import FetchConfig, FetchedData
    from mdctr.steps.fetch_data import start_run as step

    meta = raw.metadata
    fetched = FetchedData(
        path=Path(raw.path),
        rev=str(meta.get("rev", "")),
        commit=str(meta.get("commit", "")),
        md5=str(meta.get("md5", "")),
        dvc_md5=str(meta.get("dvc_md5", "")),
        files=int(meta.get("files", 0)),
    )
    config = FetchConfig(
        dataset=dataset,
        dataset_options=dataset_options,
        data_rev=data_rev,
        data_md5=data_md5,
        tracking_uri=tracking_uri,
        kfp_run_id=kfp_run_id,
    )
    run_id = step(fetched=fetched, config=config)
    with open(run.path, "w") as f:
        f.write(run_id)
    run.metadata.update({"run_id": run_id, "kfp_run_id": kfp_run_id, "data_md5": fetched.md5})
    return run_id
