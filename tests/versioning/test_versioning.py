"""DVC data versions against a real local S3 server (s3rver): push/pull, revisions, restarts, outages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mdctr.devservices import S3Server, start_s3
from mdctr.versioning import (
    VersioningError,
    fetch_data,
    file_md5,
    import_data,
    pull_data,
    push_data,
    tree_md5,
)

pytestmark = pytest.mark.integration


def _sh(args: list[str], cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout


def _write_ml1m(root: Path, extra_ratings: int = 0) -> Path:
    """A tiny dataset root in the ML-1M layout; ``extra_ratings`` makes a different version."""
    d = root / "ml-1m"
    d.mkdir(parents=True, exist_ok=True)
    ratings = ["1::1::5::100", "2::2::3::101", "3::1::4::102"] + [
        f"1::2::{1 + i % 5}::{200 + i}" for i in range(extra_ratings)
    ]
    (d / "ratings.dat").write_text("\n".join(ratings) + "\n")
    (d / "users.dat").write_text("1::F::1::10::48067\n2::M::25::16::70072\n3::M::35::15::55117\n")
    (d / "movies.dat").write_text("1::Toy Story (1995)::Animation|Children's\n2::Jumanji (1995)::Adventure\n")
    return root


def _make_repo(tmp: Path, server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git + DVC repo whose default remote is a fresh prefix in the server's bucket."""
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    repo = tmp / "repo"
    repo.mkdir()
    _sh(["git", "init", "-q"], repo)
    _sh(["git", "config", "user.email", "test@example.com"], repo)
    _sh(["git", "config", "user.name", "test"], repo)
    _sh([sys.executable, "-m", "dvc", "init", "-q"], repo)
    url = f"s3://{server.bucket}/dvcstore-{uuid.uuid4().hex[:8]}"
    # What `dvc remote add -d storage URL` writes, without another ~1 s DVC process.
    with (repo / ".dvc" / "config").open("a") as fh:
        fh.write(f"[core]\n    remote = storage\n['remote \"storage\"']\n    url = {url}\n")
    return repo


def _commit(repo: Path, msg: str) -> str:
    _sh(["git", "add", "data.dvc", ".gitignore", ".dvc/config"], repo)
    _sh(["git", "commit", "-q", "-m", msg], repo)
    return _sh(["git", "rev-parse", "HEAD"], repo).strip()


def _cache_snapshot(repo: Path) -> dict[str, str]:
    cache = repo / ".dvc" / "cache"
    return {p.relative_to(cache).as_posix(): file_md5(p) for p in cache.rglob("*") if p.is_file()}


def test_push_delete_pull_gives_identical_bytes(tmp_path: Path, s3_server: S3Server, monkeypatch) -> None:
    src = _write_ml1m(tmp_path / "src")
    repo = _make_repo(tmp_path, s3_server, monkeypatch)
    version = import_data(src, repo, ["ml-1m"])
    assert version.pushed and version.md5.endswith(".dir") and version.nfiles == 3
    _commit(repo, "data v1")
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data")

    pulled = pull_data(repo)

    assert pulled.md5 == version.md5
    assert tree_md5(repo / "data" / "ml-1m") == tree_md5(src / "ml-1m")


def test_each_revision_fetches_its_own_version(tmp_path: Path, s3_server: S3Server, monkeypatch) -> None:
    repo = _make_repo(tmp_path, s3_server, monkeypatch)
    src1 = _write_ml1m(tmp_path / "src1")
    src2 = _write_ml1m(tmp_path / "src2", extra_ratings=4)
    v1 = import_data(src1, repo, ["ml-1m"])
    rev1 = _commit(repo, "data v1")
    v2 = import_data(src2, repo, ["ml-1m"])
    rev2 = _commit(repo, "data v2")
    assert v1.md5 != v2.md5
    shutil.rmtree(repo / ".dvc" / "cache")  # force the fetch to come from S3

    got1 = fetch_data(repo, rev1, tmp_path / "out1", "data/ml-1m")
    got2 = fetch_data(repo, rev2, tmp_path / "out2", "data/ml-1m")

    assert (got1.md5, got1.dvc_md5, got1.commit) == (tree_md5(src1 / "ml-1m")[0], v1.md5, rev1)
    assert (got2.md5, got2.dvc_md5, got2.commit) == (tree_md5(src2 / "ml-1m")[0], v2.md5, rev2)
    assert (tmp_path / "out1" / "ratings.dat").read_text() == (src1 / "ml-1m" / "ratings.dat").read_text()


def test_pull_works_after_the_server_restarts(tmp_path: Path, monkeypatch) -> None:
    with start_s3(tmp_path / "s3") as server:
        src = _write_ml1m(tmp_path / "src")
        repo = _make_repo(tmp_path, server, monkeypatch)
        version = import_data(src, repo, ["ml-1m"])
        rev = _commit(repo, "data v1")
        port = server.port

        server.restart()  # s3rver keeps objects on disk

        assert server.port == port
        got = fetch_data(repo, rev, tmp_path / "out", "data/ml-1m")
        assert (got.dvc_md5, got.md5) == (version.md5, tree_md5(src / "ml-1m")[0])


def test_unreachable_s3_is_a_clear_error_and_leaves_the_cache_alone(tmp_path: Path, monkeypatch) -> None:
    with start_s3(tmp_path / "s3") as server:
        src = _write_ml1m(tmp_path / "src")
        repo = _make_repo(tmp_path, server, monkeypatch)
        import_data(src, repo, ["ml-1m"], push=False)
        rev = _commit(repo, "data v1")
        before = _cache_snapshot(repo)
        out = tmp_path / "out"
        out.mkdir()
        (out / "earlier.txt").write_text("an earlier fetch")
        server.stop()

        with pytest.raises(VersioningError, match=f"S3 endpoint {server.endpoint_url} is unreachable"):
            push_data(repo)
        # A fresh clone has no cache, so its fetch needs S3.
        clone = tmp_path / "clone"
        _sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
        with pytest.raises(VersioningError, match=server.endpoint_url):
            fetch_data(clone, rev, out, "data/ml-1m")
        shutil.rmtree(repo / "data")

    assert _cache_snapshot(repo) == before
    assert [p.name for p in out.iterdir()] == ["earlier.txt"]
    _sh([sys.executable, "-m", "dvc", "checkout", "-q"], repo)  # the cache still restores the data
    assert tree_md5(repo / "data" / "ml-1m") == tree_md5(src / "ml-1m")


def test_local_mode_copies_from_the_datasets_dir(tmp_path: Path) -> None:
    src = _write_ml1m(tmp_path / "src")
    got = fetch_data(tmp_path / "no-repo", "local", tmp_path / "out", "data/ml-1m", datasets_dir=src)
    assert (got.rev, got.files, got.md5) == ("local", 3, tree_md5(src / "ml-1m")[0])


def test_import_needs_a_dvc_repo(tmp_path: Path) -> None:
    src = _write_ml1m(tmp_path / "src")
    with pytest.raises(VersioningError, match="not a DVC repository"):
        import_data(src, tmp_path, ["ml-1m"])
