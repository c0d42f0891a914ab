"""Step: fetch exactly one data version and open the MLflow parent run that every later step logs under."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from mdctr.io import atomic_dir
from mdctr.steps.common import git_sha, parse_options, tracking_uri_or_none

log = logging.getLogger(__name__)

#: what a generated dataset's "raw" directory holds: the options that regenerate it
GENERATED_FILE = "generated.json"


@dataclass(frozen=True)
class FetchConfig:
    """What to fetch and where to track it.

    Attributes:
        dataset: registered dataset name.
        data_rev: git revision of ``data.dvc`` (branch, tag, commit) or ``"local"`` (copy ``DATASETS_DIR``).
        data_repo: the project's git repository (path or URL) holding ``data.dvc``; ``""`` = current directory.
        dataset_options: JSON object of adapter options (e.g. synthetic sizes).
        tracking_uri: MLflow URI; ``""`` = ``$MLFLOW_TRACKING_URI`` or the local default.
        kfp_run_id: the KFP run this belongs to (a tag on the parent run).
        datasets_dir: local-mode source; ``""`` = ``$DATASETS_DIR``.
    """

    dataset: str
    data_rev: str = "local"
    data_repo: str = ""
    dataset_options: str = "{}"
    tracking_uri: str = ""
    kfp_run_id: str = ""
    datasets_dir: str = ""


@dataclass(frozen=True)
class FetchOutput:
    """The fetched version and the parent run.

    Attributes:
        path: directory with the raw files.
        rev: revision fetched (``local`` or ``generated`` for datasets made from options).
        commit: git commit of ``rev`` ("" when not resolved).
        md5: md5 of the fetched tree (identical bytes → identical md5, whatever the rev).
        files: number of files.
        run_id: MLflow parent run id.
    """

    path: Path
    rev: str
    commit: str
    md5: str
    files: int
    run_id: str


def fetch_data(*, out_dir: Path | str, config: FetchConfig) -> FetchOutput:
    """Fetch ``config.dataset`` at ``config.data_rev`` into ``out_dir`` and start the MLflow parent run.

    A generated dataset (no source files, e.g. ``synthetic``) has nothing to fetch: ``out_dir`` then holds
    ``generated.json`` with its options, whose md5 identifies the data as well as file bytes would.
    """
    from mdctr import tracking, versioning
    from mdctr.data import get_dataset

    out_dir = Path(out_dir)
    options = parse_options(config.dataset_options, what="dataset_options")
    adapter = get_dataset(config.dataset, **options)  # unknown dataset or misspelt option fails here
    if adapter.needs_source:
        fetched = versioning.fetch_data(
            config.data_repo or ".",
            config.data_rev,
            out_dir,
            path=f"{versioning.DATA_DIR}/{versioning.dataset_subdir(config.dataset)}",
            datasets_dir=Path(config.datasets_dir) if config.datasets_dir else None,
        )
        rev, commit, md5, files = fetched.rev, fetched.commit, fetched.md5, fetched.files
    else:
        text = json.dumps({"dataset": config.dataset, "options": options}, sort_keys=True)
        with atomic_dir(out_dir) as tmp:
            (tmp / GENERATED_FILE).write_text(text)
        rev, commit, md5, files = "generated", "", hashlib.md5(text.encode()).hexdigest(), 1
    run_id = tracking.start_parent_run(
        tracking_uri_or_none(config.tracking_uri),
        run_name=f"{config.dataset}@{rev}",
        params={"dataset": config.dataset, "dataset_options": options, "data_rev": config.data_rev},
        data_rev=f"{rev}@{commit}" if commit else rev,
        data_md5=md5,
        git_sha=git_sha() or None,
        kfp_run_id=config.kfp_run_id or None,
    )
    log.info("fetched %s@%s (md5 %s, %d files); parent run %s", config.dataset, rev, md5, files, run_id)
    return FetchOutput(path=out_dir, rev=rev, commit=commit, md5=md5, files=files, run_id=run_id)
