"""Step: fetch exactly one data version and open the MLflow parent run that every later step logs under."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdctr.config import ConfigError
from mdctr.io import atomic_dir
from mdctr.schema import SchemaError
from mdctr.steps.common import git_sha, parse_options, tracking_uri_or_none

log = logging.getLogger(__name__)

#: what a generated dataset's "raw" directory holds: the options that regenerate it
GENERATED_FILE = "generated.json"
#: parent-run tag: the DVC md5 of the data version (``data.dvc``), when the data came from DVC
TAG_DATA_DVC_MD5 = "mdctr.data_dvc_md5"


@dataclass(frozen=True)
class FetchConfig:
    """What to fetch and where to track it.

    Four ways to name a data version, tried in this order:

    * ``source``: a local directory (the user's own table, or a datasets root): copied, after it has been
      loaded once so that a table that cannot load fails naming the user's files, not the copy's. Local runs
      only (a pod cannot see the path); the data version is the md5 of the copied files.
    * ``data_md5`` (+ ``dvc_remote``): the md5 of ``data`` in ``data.dvc``, read straight from the DVC remote;
      no git needed. The compiled pipeline's default (the version committed with the code), for clusters.
    * ``data_rev="local"``: copy ``DATASETS_DIR`` (the laptop path).
    * ``data_rev`` a git revision of ``data.dvc`` in ``data_repo`` (a git URL, or a local checkout).

    Attributes:
        dataset: registered dataset name.
        data_rev: git revision of ``data.dvc`` (branch, tag, commit) or ``"local"`` (copy ``DATASETS_DIR``).
        data_repo: the project's git repository (path or URL) holding ``data.dvc``; ``""`` = the current
            directory, which must then be a checkout (never inside the image).
        data_md5: DVC md5 of the data version (``<32 hex>.dir``); wins over ``data_rev`` when set.
        dvc_remote: the DVC remote holding it (``s3://bucket/prefix``); needed with ``data_md5``.
        dataset_options: JSON object of adapter options (e.g. synthetic sizes).
        tracking_uri: MLflow URI; ``""`` = ``$MLFLOW_TRACKING_URI`` or the local default.
        kfp_run_id: the KFP run this belongs to (a tag on the parent run).
        datasets_dir: local-mode source; ``""`` = ``$DATASETS_DIR``.
        source: the dataset's own directory (or a datasets root holding it); wins over everything above.
    """

    dataset: str
    data_rev: str = "local"
    data_repo: str = ""
    data_md5: str = ""
    dvc_remote: str = ""
    dataset_options: str = "{}"
    tracking_uri: str = ""
    kfp_run_id: str = ""
    datasets_dir: str = ""
    source: str = ""


@dataclass(frozen=True)
class FetchedData:
    """One fetched data version, before any tracking.

    Attributes:
        path: directory with the raw files.
        rev: revision fetched (``local``, ``generated``, a git revision, or ``md5:<dvc md5>``).
        commit: git commit of ``rev`` ("" when not resolved).
        md5: md5 of the fetched tree (identical bytes → identical md5, whatever the rev).
        dvc_md5: md5 of ``data`` in ``data.dvc`` for that version ("" for local or generated data).
        files: number of files.
    """

    path: Path
    rev: str
    commit: str
    md5: str
    dvc_md5: str
    files: int

    @property
    def data_rev_tag(self) -> str:
        """What the parent run records as the data revision."""
        return f"{self.rev}@{self.commit}" if self.commit else self.rev


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


def fetch(*, out_dir: Path | str, config: FetchConfig) -> FetchedData:
    """Fetch ``config.dataset`` at its data version into ``out_dir``; touches no tracking store.

    Depends only on the data version and options, so a pipeline may cache it. A generated dataset (no source
    files, e.g. ``synthetic``) has nothing to fetch: ``out_dir`` then holds ``generated.json`` with its
    options, whose md5 identifies the data as well as file bytes would.
    """
    from mdctr import versioning
    from mdctr.data import get_dataset

    out_dir = Path(out_dir)
    options = parse_options(config.dataset_options, what="dataset_options")
    adapter = get_dataset(config.dataset, **options)  # unknown dataset or misspelt option fails here
    if not adapter.needs_source:
        text = json.dumps({"dataset": config.dataset, "options": options}, sort_keys=True)
        with atomic_dir(out_dir) as tmp:
            (tmp / GENERATED_FILE).write_text(text)
        return FetchedData(out_dir, "generated", "", hashlib.md5(text.encode()).hexdigest(), "", 1)
    refuse_path_options(adapter, options)
    if config.source:
        src = adapter.resolve_source(Path(config.source))
        check_source(config.dataset, src, options)  # errors name the user's files, not the copy
        # path "data" with the directory as the root: the directory itself is copied
        got = versioning.fetch_data(".", "local", out_dir, path=versioning.DATA_DIR, datasets_dir=src)
        return FetchedData(out_dir, got.rev, got.commit, got.md5, got.dvc_md5, got.files)
    path = f"{versioning.DATA_DIR}/{versioning.dataset_subdir(config.dataset)}"
    if config.data_md5:
        if not config.dvc_remote:
            raise ConfigError(
                f"data_md5={config.data_md5!r} needs dvc_remote (the DVC remote URL, e.g. s3://bucket/prefix)"
            )
        got = versioning.fetch_by_md5(config.dvc_remote, config.data_md5, out_dir, path)
    else:
        repo = config.data_repo or "."
        no_checkout = not (Path.cwd() / versioning.DVC_FILE).is_file()
        if config.data_rev not in versioning.LOCAL_REVS and not config.data_repo and no_checkout:
            raise ConfigError(
                f"data_rev={config.data_rev!r} with data_repo='' needs a git checkout of the project in "
                f"the working directory ({Path.cwd()} has no {versioning.DVC_FILE}; a container has none): "
                "set data_repo to the project's git URL, or data_md5 + dvc_remote (the compiled default)"
            )
        got = versioning.fetch_data(
            repo,
            config.data_rev,
            out_dir,
            path=path,
            datasets_dir=Path(config.datasets_dir) if config.datasets_dir else None,
        )
    return FetchedData(out_dir, got.rev, got.commit, got.md5, got.dvc_md5, got.files)


def refuse_path_options(adapter: Any, options: dict[str, Any]) -> None:
    """A pipeline's tasks read the fetched copy of the data; an option naming a file elsewhere (a table's
    ``path``/``schema``) would bypass it (and the data version), so it is an error saying what to pass instead."""
    named = sorted(k for k in adapter.path_options if options.get(k) is not None)
    if named:
        raise ConfigError(
            f"dataset {adapter.name!r}: option(s) {named} name files outside the fetched data, which a pipeline "
            "run does not read; pass the directory holding the data file and schema.yaml as --source "
            "(pipeline parameter `source`) instead"
        )


def check_source(dataset: str, source: Path | str | None, options: dict[str, Any], *, split: str = "") -> Any:
    """Load ``dataset`` from the user's ``source`` directory, with the schema's checks, and return it (a
    :class:`mdctr.data.LoadedDataset`; None without a source, when only the options are checked).

    Done before the directory is copied (and by ``mdctr pipeline run`` before any task starts), so that a table
    that cannot load fails with a :class:`mdctr.data.DataError` naming the user's file, column and rows: the
    tasks after fetch only see the copy. ``split`` (``random``/``time``) is checked too when given: a time split
    needs a time column.
    """
    from mdctr.data import DataError, get_dataset, load_dataset
    from mdctr.data.encode import check_split

    refuse_path_options(get_dataset(dataset, **options), options)
    if source is None:
        return None
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"dataset {dataset!r}: source {source} is not a directory")
    loaded = load_dataset(dataset, source, **options)
    if split:
        check_split(loaded.schema, split)
    return loaded


def dataset_name(dataset: str, options: dict[str, Any], raw: Path) -> str:
    """The name runs carry: the data's own (a table's ``schema.yaml`` ``name``), else ``dataset``."""
    from mdctr.data import get_dataset

    try:
        return get_dataset(dataset, **options).dataset_name(raw)
    except (ConfigError, SchemaError, OSError) as e:  # validate_data names the problem; a run still opens
        log.warning("dataset %s: no name from %s (%s); runs are named %r", dataset, raw, e, dataset)
        return dataset


def start_run(*, fetched: FetchedData, config: FetchConfig) -> str:
    """Open the MLflow parent run of one pipeline run for ``fetched``; return its id (left RUNNING)."""
    from mdctr import tracking

    options = parse_options(config.dataset_options, what="dataset_options")
    name = dataset_name(config.dataset, options, fetched.path)
    params = {"dataset": config.dataset, "dataset_options": options, "data_rev": config.data_rev}
    if name != config.dataset:
        params["dataset_name"] = name
    if config.data_md5:
        params["data_md5"] = config.data_md5
    tags = {TAG_DATA_DVC_MD5: fetched.dvc_md5} if fetched.dvc_md5 else None
    run_id = tracking.start_parent_run(
        tracking_uri_or_none(config.tracking_uri),
        run_name=f"{name}@{fetched.rev}",
        tags=tags,
        params=params,
        data_rev=fetched.data_rev_tag,
        data_md5=fetched.md5,
        git_sha=git_sha() or None,
        kfp_run_id=config.kfp_run_id or None,
    )
    log.info("parent run %s for %s@%s (md5 %s)", run_id, name, fetched.rev, fetched.md5)
    return run_id


def fetch_data(*, out_dir: Path | str, config: FetchConfig) -> FetchOutput:
    """:func:`fetch`, then :func:`start_run`: fetch the data version and open the MLflow parent run."""
    fetched = fetch(out_dir=out_dir, config=config)
    run_id = start_run(fetched=fetched, config=config)
    log.info(
        "fetched %s@%s (md5 %s, %d files); parent run %s",
        config.dataset,
        fetched.rev,
        fetched.md5,
        fetched.files,
        run_id,
    )
    return FetchOutput(
        path=fetched.path,
        rev=fetched.rev,
        commit=fetched.commit,
        md5=fetched.md5,
        files=fetched.files,
        run_id=run_id,
    )


def finish_run(
    *, tracking_uri: str, kfp_run_id: str, state: str, failed_task: str = "", message: str = ""
) -> list[str]:
    """The exit handler's step: close the parent run(s) of KFP run ``kfp_run_id`` after the DAG ended.

    A failed DAG marks each still-open parent run FAILED with the failing task's name and message as tags
    (``mdctr.failed_task``, ``mdctr.failure``); a succeeded one closes them FINISHED. No step closes the parent
    run: this is the only place it ends. Returns the ids of the runs it changed.
    """
    from mdctr.tracking.runs import fail_parent_runs

    return fail_parent_runs(
        tracking_uri_or_none(tracking_uri),
        kfp_run_id=kfp_run_id,
        succeeded=state == "SUCCEEDED",
        failed_task=failed_task,
        message=message,
    )
