"""DVC-versioned raw data on S3: import a version, push it, fetch exactly a given version.

The project tracks one DVC output, the directory ``data/`` (one sub-directory per dataset, named like the
dataset's directory under ``DATASETS_DIR``), in a top-level ``data.dvc``; git holds ``data.dvc``, the DVC
remote (S3) holds the bytes. A *data version* is a git revision of ``data.dvc``.

DVC runs as a subprocess (``python -m dvc``) rather than through its Python API: that keeps DVC's global state,
locks and logging out of the calling process (the pipeline step, the CLI, pytest) and matches exactly what a
user types. Endpoint and credentials are never written here: boto3/s3fs read ``AWS_ENDPOINT_URL_S3``,
``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` from the environment, or DVC reads them from the untracked
``.dvc/config.local``.

Two ways to get data (:func:`fetch_data`):

* a git revision (``rev="main"``, a tag, a commit): ``dvc get --rev`` pulls exactly that version;
* ``rev=""`` or ``"local"``: copy from ``DATASETS_DIR``, no git or remote needed (the laptop path).

Both record :func:`tree_md5` of the files fetched, so the same bytes give the same md5 either way.
"""

from __future__ import annotations

import configparser
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import yaml

from mdctr.io import atomic_dir

log = logging.getLogger(__name__)

DATA_DIR = "data"
DVC_FILE = "data.dvc"
LOCAL_REVS = ("", "local")


class VersioningError(RuntimeError):
    """A data version could not be imported, pushed or fetched; the message says which repo/rev/endpoint."""


@dataclass(frozen=True)
class DataVersion:
    """A data version recorded in ``data.dvc``.

    Attributes:
        md5: DVC's md5 of the ``data`` directory (``<32 hex digits>.dir``); identical for identical bytes at any rev.
        nfiles: number of files in ``data/``.
        size: bytes in ``data/``.
        datasets: dataset sub-directories present in ``data/``.
        pushed: whether the bytes were pushed to the default remote.
        remote: the remote URL (``s3://…``) or "" when none is configured.
    """

    md5: str
    nfiles: int
    size: int
    datasets: tuple[str, ...]
    pushed: bool
    remote: str


@dataclass(frozen=True)
class FetchResult:
    """Files fetched for one data version.

    Attributes:
        path: local directory holding the fetched files.
        rev: the revision asked for (``"local"`` for the DATASETS_DIR copy).
        commit: the git commit ``rev`` resolved to ("" in local mode or when it cannot be resolved).
        md5: :func:`tree_md5` of the fetched files.
        dvc_md5: md5 of the ``data`` output in ``data.dvc`` at ``rev`` ("" in local mode).
        files: number of files fetched.
    """

    path: Path
    rev: str
    commit: str
    md5: str
    dvc_md5: str
    files: int


# -- helpers --------------------------------------------------------------------------------------------------
def _dvc_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    # Fail fast on an unreachable endpoint instead of botocore's long retry loop.
    env.setdefault("AWS_MAX_ATTEMPTS", "2")
    env.setdefault("AWS_RETRY_MODE", "standard")
    return env


def _run(args: list[str], cwd: Path | None, what: str) -> subprocess.CompletedProcess[str]:
    """Run a command; return the completed process (the caller decides what a failure means)."""
    log.debug("run %s in %s", args, cwd)
    return subprocess.run(args, cwd=cwd, env=_dvc_env(), capture_output=True, text=True, check=False)


def _dvc(args: list[str], cwd: Path | None, what: str) -> str:
    res = _run([sys.executable, "-m", "dvc", *args], cwd, what)
    if res.returncode != 0:
        raise VersioningError(f"{what} failed (dvc {' '.join(args)} in {cwd}): {_last_lines(res)}")
    return res.stdout


def _git(args: list[str], cwd: Path, what: str) -> str:
    res = _run(["git", *args], cwd, what)
    if res.returncode != 0:
        raise VersioningError(f"{what} failed (git {' '.join(args)} in {cwd}): {_last_lines(res)}")
    return res.stdout.strip()


def _last_lines(res: subprocess.CompletedProcess[str], n: int = 6) -> str:
    text = (res.stderr or "") + (res.stdout or "")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or f"exit status {res.returncode}"


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_md5(root: Path) -> tuple[str, int]:
    """md5 over every file under ``root`` (relative path and content md5, sorted); returns (md5, nfiles).

    Independent of timestamps and of where the tree lives, so a DVC fetch and a local copy of the same bytes
    agree. A single file is hashed as a one-file tree named by its basename.
    """
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.md5()
    for p in files:
        rel = p.name if p == root else p.relative_to(root).as_posix()
        h.update(f"{rel}\t{file_md5(p)}\n".encode())
    return h.hexdigest(), len(files)


def endpoint_url() -> str:
    """The S3 endpoint clients will use: ``$AWS_ENDPOINT_URL_S3``/``$AWS_ENDPOINT_URL``, else AWS ("")."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""


def _dvc_config(repo: Path) -> configparser.ConfigParser:
    """The repo's DVC config: ``.dvc/config`` overlaid with the untracked ``.dvc/config.local``.

    Read directly (DVC's files are INI) rather than through three ``dvc config`` processes of ~1 s each.
    """
    parser = configparser.ConfigParser(interpolation=None)
    parser.read([repo / ".dvc" / "config", repo / ".dvc" / "config.local"])
    return parser


def _remote(repo: Path) -> tuple[str, str, str]:
    """(name, url, endpoint) of the default DVC remote; ("", "", "") when none is configured.

    The endpoint is the remote's ``endpointurl`` (from ``.dvc/config.local``) or the environment's.
    """
    cfg = _dvc_config(Path(repo))
    name = cfg.get("core", "remote", fallback="").strip()
    if not name:
        return "", "", ""
    section = f"'remote \"{name}\"'"
    if not cfg.has_section(section):
        raise VersioningError(f"{repo}/.dvc/config: default remote {name!r} is not defined")
    url = cfg.get(section, "url", fallback="")
    endpoint = cfg.get(section, "endpointurl", fallback="") or endpoint_url()
    return name, url, endpoint


def check_endpoint(endpoint: str, timeout: float = 3.0) -> None:
    """Raise :class:`VersioningError` naming ``endpoint`` if nothing accepts a TCP connection there."""
    if not endpoint:
        return  # real AWS: let the client resolve the regional endpoint itself
    parsed = urlparse(endpoint)
    host = parsed.hostname or endpoint
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise VersioningError(
            f"S3 endpoint {endpoint} is unreachable ({e.strerror or e}); start it (scripts/local-s3 start) or "
            "set AWS_ENDPOINT_URL_S3 / .dvc/config.local to a reachable endpoint"
        ) from None


def _read_dvc_out(text: str, where: str) -> tuple[str, int, int]:
    try:
        meta = yaml.safe_load(text)
        out = meta["outs"][0]
        return str(out["md5"]), int(out.get("nfiles", 0)), int(out.get("size", 0))
    except (yaml.YAMLError, KeyError, IndexError, TypeError) as e:
        raise VersioningError(f"{where}: not a valid DVC file with one output ({e!r})") from None


def _require_dvc_repo(repo: Path) -> None:
    if not (repo / ".dvc").is_dir():
        raise VersioningError(
            f"{repo} is not a DVC repository (no .dvc/); run 'git init && dvc init' there first"
        )


def dataset_subdir(name: str) -> str:
    """Directory of dataset ``name`` under the datasets root (the adapter's ``default_subdir`` or the name)."""
    from mdctr.data import get_dataset

    try:
        return get_dataset(name).default_subdir or name
    except KeyError:
        return name


def _default_datasets(source: Path) -> list[str]:
    from mdctr.data import dataset_names, get_dataset

    names = []
    for name in dataset_names():
        adapter = get_dataset(name)
        if adapter.needs_source and (source / (adapter.default_subdir or name)).is_dir():
            names.append(name)
    return names


# -- import / push / pull ---------------------------------------------------------------------------------
def import_data(
    source: Path, repo: Path, datasets: list[str] | None = None, push: bool = True
) -> DataVersion:
    """Copy raw dataset files into ``repo/data/``, ``dvc add data`` and (if a remote is configured) push.

    Args:
        source: datasets root (``DATASETS_DIR``) holding one directory per dataset.
        repo: a git + DVC repository (``git init && dvc init``).
        datasets: dataset names to (re)import; default: every registered dataset present in ``source``.
            Other datasets already in ``data/`` are kept.
        push: push to the default remote when one is configured.

    The new ``data.dvc`` still has to be committed to git: that commit is the data version.
    """
    source, repo = Path(source), Path(repo)
    _require_dvc_repo(repo)
    names = list(datasets) if datasets else _default_datasets(source)
    if not names:
        raise VersioningError(f"no dataset directory found under {source}")
    data = repo / DATA_DIR
    data.mkdir(exist_ok=True)
    remote_name, remote_url, endpoint = _remote(repo) if push else ("", "", "")
    if push and remote_name:
        # Check before touching data/: a push that cannot happen should not leave a half-updated version.
        check_endpoint(endpoint)
    for name in names:
        sub = dataset_subdir(name)
        src = source / sub
        if not src.is_dir():
            raise VersioningError(f"dataset {name!r}: directory {src} not found under {source}")
        with atomic_dir(data / sub) as tmp:
            # copyfile, not copy2: files from a read-only share must stay writable for DVC's checkout.
            shutil.copytree(src, tmp, dirs_exist_ok=True, copy_function=shutil.copyfile)
        log.info("copied %s into %s", src, data / sub)
    _dvc(["add", DATA_DIR], repo, f"dvc add {data}")
    md5, nfiles, size = _read_dvc_out((repo / DVC_FILE).read_text(), str(repo / DVC_FILE))
    pushed = False
    if push and remote_name:
        push_data(repo)
        pushed = True
    elif push:
        log.warning("no default DVC remote in %s: data added to the local cache only", repo)
    present = tuple(sorted(p.name for p in data.iterdir() if p.is_dir()))
    log.info("data version %s: %d files, %d bytes, datasets %s", md5, nfiles, size, present)
    return DataVersion(md5=md5, nfiles=nfiles, size=size, datasets=present, pushed=pushed, remote=remote_url)


def push_data(repo: Path) -> None:
    """``dvc push data.dvc`` to the default remote; an unreachable endpoint is a clear error."""
    repo = Path(repo)
    name, url, endpoint = _remote(repo)
    if not name:
        raise VersioningError(f"{repo}: no default DVC remote configured (dvc remote add -d NAME s3://…)")
    check_endpoint(endpoint)
    try:
        _dvc(["push", DVC_FILE], repo, f"pushing {repo / DVC_FILE} to {url} (endpoint {endpoint or 'AWS'})")
    except VersioningError as e:
        raise VersioningError(f"{e}") from None
    log.info("pushed %s to %s", repo / DVC_FILE, url)


def pull_data(repo: Path) -> DataVersion:
    """``dvc pull data.dvc`` into ``repo/data`` (the version checked out in git)."""
    repo = Path(repo)
    _require_dvc_repo(repo)
    name, url, endpoint = _remote(repo)
    if name:
        check_endpoint(endpoint)
    _dvc(["pull", DVC_FILE], repo, f"pulling {repo / DVC_FILE} from {url or 'the local cache'}")
    md5, nfiles, size = _read_dvc_out((repo / DVC_FILE).read_text(), str(repo / DVC_FILE))
    present = tuple(sorted(p.name for p in (repo / DATA_DIR).iterdir() if p.is_dir()))
    return DataVersion(md5=md5, nfiles=nfiles, size=size, datasets=present, pushed=bool(name), remote=url)


# -- fetch ----------------------------------------------------------------------------------------------------
def _is_local_repo(repo: Path | str) -> bool:
    return "://" not in str(repo) and not str(repo).startswith("git@")


def fetch_data(
    repo: Path | str,
    rev: str,
    out_dir: Path,
    path: str = DATA_DIR,
    *,
    datasets_dir: Path | None = None,
) -> FetchResult:
    """Fetch exactly data version ``rev`` of ``path`` into ``out_dir`` (replaced atomically).

    Args:
        repo: the project repository: a local path or a git URL.
        rev: a git revision of ``data.dvc`` (branch, tag, commit); ``""``/``"local"`` copies from
            ``datasets_dir`` instead, with no git or remote involved.
        out_dir: where the files go; on failure it is left as it was.
        path: what to fetch inside the repo: ``"data"`` (everything) or ``"data/<dataset dir>"``.
        datasets_dir: local mode source (default ``$DATASETS_DIR`` or ``../shared/datasets``).
    """
    out_dir = Path(out_dir)
    rel = Path(path)
    if rel.parts[:1] != (DATA_DIR,):
        raise VersioningError(f"path {path!r} must be {DATA_DIR!r} or lie under it (e.g. 'data/ml-1m')")
    if rev in LOCAL_REVS:
        return _fetch_local(rel, out_dir, datasets_dir)
    commit, dvc_md5 = _describe_rev(repo, rev)
    _, remote_url, endpoint = _remote(Path(repo)) if _is_local_repo(repo) else ("", "", endpoint_url())
    with atomic_dir(out_dir) as tmp:
        target = tmp / "fetched"
        res = _run(
            [sys.executable, "-m", "dvc", "get", "--rev", rev, "-o", str(target), str(repo), rel.as_posix()],
            None,
            "dvc get",
        )
        if res.returncode != 0:
            check_endpoint(endpoint)  # the most common cause: name it plainly
            raise VersioningError(
                f"fetching {path} at rev {rev!r} of {repo} (remote {remote_url or '?'}, endpoint "
                f"{endpoint or 'AWS'}) failed: {_last_lines(res)}"
            )
        # dvc get writes a directory at -o; move its content up so out_dir holds the files themselves.
        if target.is_dir():
            for child in target.iterdir():
                child.rename(tmp / child.name)
            target.rmdir()
    md5, nfiles = tree_md5(out_dir)
    log.info("fetched %s@%s (%s) into %s: %d files, md5 %s", path, rev, commit[:10], out_dir, nfiles, md5)
    return FetchResult(path=out_dir, rev=rev, commit=commit, md5=md5, dvc_md5=dvc_md5, files=nfiles)


def _describe_rev(repo: Path | str, rev: str) -> tuple[str, str]:
    """(commit, md5 of the data output) of ``rev``; for a remote git URL the commit via ls-remote."""
    if _is_local_repo(repo):
        repo = Path(repo)
        commit = _git(
            ["rev-parse", "--verify", f"{rev}^{{commit}}"], repo, f"resolving rev {rev!r} in {repo}"
        )
        text = _git(["show", f"{commit}:{DVC_FILE}"], repo, f"reading {DVC_FILE} at {rev!r} in {repo}")
        return commit, _read_dvc_out(text, f"{repo}@{rev}:{DVC_FILE}")[0]
    with tempfile.TemporaryDirectory() as tmp:
        res = _run(["git", "ls-remote", str(repo), rev], Path(tmp), "git ls-remote")
    commit = res.stdout.split()[0] if res.returncode == 0 and res.stdout.strip() else ""
    if not commit and len(rev) == 40:
        commit = rev  # a full sha is its own commit
    return commit, ""


def _fetch_local(rel: Path, out_dir: Path, datasets_dir: Path | None) -> FetchResult:
    root = Path(datasets_dir or os.environ.get("DATASETS_DIR", "../shared/datasets"))
    src = root.joinpath(*rel.parts[1:])
    if not src.exists():
        raise VersioningError(f"local mode: {src} not found (DATASETS_DIR={root})")
    with atomic_dir(out_dir) as tmp:
        if src.is_dir():
            shutil.copytree(src, tmp, dirs_exist_ok=True, copy_function=shutil.copyfile)
        else:
            shutil.copyfile(src, tmp / src.name)
    md5, nfiles = tree_md5(out_dir)
    log.info("copied %s into %s (local mode): %d files, md5 %s", src, out_dir, nfiles, md5)
    return FetchResult(path=out_dir, rev="local", commit="", md5=md5, dvc_md5="", files=nfiles)


# -- fetch by DVC md5 (no git) --------------------------------------------------------------------------------
def data_version_md5(dvc_file: Path | str = DVC_FILE) -> str:
    """The md5 of the ``data`` output recorded in ``dvc_file`` (``<32 hex digits>.dir``): a data version without git."""
    path = Path(dvc_file)
    if not path.is_file():
        raise VersioningError(f"{path} not found; version the data first (mdctr data import, docs/data.md)")
    return _read_dvc_out(path.read_text(), str(path))[0]


def default_remote_url(repo: Path | str = ".") -> str:
    """The URL of the repo's default DVC remote (``s3://…``), "" when none is configured."""
    return _remote(Path(repo))[1]


def _s3_location(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise VersioningError(f"DVC remote {url!r}: only s3://bucket/prefix remotes can be read without git")
    return parsed.netloc, parsed.path.strip("/")


def _object_key(prefix: str, md5: str) -> str:
    # DVC 3 remote layout: <prefix>/files/md5/<first two hex digits>/<the rest>
    return "/".join(p for p in (prefix, "files", "md5", md5[:2], md5[2:]) if p)


def fetch_by_md5(remote_url: str, dvc_md5: str, out_dir: Path, path: str = DATA_DIR) -> FetchResult:
    """Fetch ``path`` of the data version whose ``data.dvc`` md5 is ``dvc_md5`` straight from the DVC remote.

    What a container on a cluster does: it has no git checkout of the project, only the md5 compiled into the
    pipeline (from ``data.dvc``) and the remote URL. Reads the ``.dir`` manifest and the files it lists under
    ``path`` with boto3 (endpoint and credentials from the environment, like DVC); every file's md5 is checked,
    so the bytes are exactly that version's.
    """
    import json

    import boto3
    import botocore.exceptions

    out_dir = Path(out_dir)
    rel = Path(path)
    if rel.parts[:1] != (DATA_DIR,):
        raise VersioningError(f"path {path!r} must be {DATA_DIR!r} or lie under it (e.g. 'data/ml-1m')")
    if not dvc_md5.endswith(".dir") or len(dvc_md5) != 36:
        raise VersioningError(f"data md5 {dvc_md5!r} is not a DVC directory md5 (32 hex digits + '.dir')")
    bucket, prefix = _s3_location(remote_url)
    s3 = boto3.client("s3")
    where = f"{remote_url} (endpoint {endpoint_url() or 'AWS'})"

    def get(md5: str) -> bytes:
        key = _object_key(prefix, md5)
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except botocore.exceptions.EndpointConnectionError:
            check_endpoint(endpoint_url())
            raise
        except botocore.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "?")
            raise VersioningError(
                f"s3://{bucket}/{key} ({md5}) unreadable in {where}: {code}; was the version pushed "
                "(mdctr data import)?"
            ) from None

    try:
        manifest = json.loads(get(dvc_md5))
    except json.JSONDecodeError as e:
        raise VersioningError(f"{dvc_md5} in {where} is not a DVC directory manifest ({e})") from None
    sub = Path(*rel.parts[1:]).as_posix() if len(rel.parts) > 1 else ""
    entries = [e for e in manifest if not sub or e["relpath"] == sub or e["relpath"].startswith(sub + "/")]
    if not entries:
        raise VersioningError(f"data version {dvc_md5} has no files under {path!r}")
    with atomic_dir(out_dir) as tmp:
        for entry in entries:
            data = get(entry["md5"])
            if hashlib.md5(data).hexdigest() != entry["md5"]:
                raise VersioningError(f"{entry['relpath']} from {where}: content does not match its md5")
            dest = tmp / (Path(entry["relpath"]).relative_to(sub) if sub else Path(entry["relpath"]))
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
    md5, nfiles = tree_md5(out_dir)
    log.info("fetched %s of data version %s from %s: %d files, md5 %s", path, dvc_md5, where, nfiles, md5)
    return FetchResult(path=out_dir, rev=f"md5:{dvc_md5}", commit="", md5=md5, dvc_md5=dvc_md5, files=nfiles)
