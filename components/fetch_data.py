"""Component: fetch one data version (DVC md5 from the remote, a git revision, or a local copy).

Touches no tracking store and depends only on the data version and options, so the pipeline caches it: a
second run on the same data reuses the artifact (and so do prepare and mine downstream).
"""

from kfp import dsl
from kfp.dsl import Dataset, Output

import mdctr
from components import described


@dsl.component(base_image=mdctr.image_ref(), install_kfp_package=False)
@described()
def fetch_data(
    dataset: str,
    dataset_options: str,
    data_rev: str,
    data_repo: str,
    data_md5: str,
    dvc_remote: str,
    source: str,
    raw: Output[Dataset],
) -> str:
    """Fetch ``dataset`` at its version into ``raw``; return the md5 of the fetched files."""
    from mdctr.steps.fetch_data import FetchConfig, fetch

    result = fetch(
        out_dir=raw.path,
        config=FetchConfig(
            dataset=dataset,
            dataset_options=dataset_options,
            data_rev=data_rev,
            data_repo=data_repo,
            data_md5=data_md5,
            dvc_remote=dvc_remote,
            source=source,
        ),
    )
    raw.metadata.update(
        {
            "dataset": dataset,
            "rev": result.rev,
            "commit": result.commit,
            "md5": result.md5,
            "dvc_md5": result.dvc_md5,
            "files": result.files,
        }
    )
    return result.md5
