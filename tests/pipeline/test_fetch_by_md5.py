"""The cluster default of fetch_data: a data version by its DVC md5 straight from the remote (local s3rver), no
git checkout; and a clear error for a git revision where there is no checkout (inside the image)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mdctr.config import ConfigError
from mdctr.devservices import S3Server
from mdctr.steps.fetch_data import FetchConfig, fetch
from mdctr.versioning import (
    VersioningError,
    data_version_md5,
    default_remote_url,
    fetch_by_md5,
    import_data,
    tree_md5,
)

pytestmark = pytest.mark.integration


def _sh(args: list[str], cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True)


def _ml1m(root: Path, extra: int = 0) -> Path:
    d = root / "ml-1m"
    d.mkdir(parents=True)
    ratings = ["1::1::5::100", "2::2::3::101", "3::1::4::102"] + [f"1::2::3::{200 + i}" for i in range(extra)]
    (d / "ratings.dat").write_text("\n".join(ratings) + "\n")
    (d / "users.dat").write_text("1::F::1::10::48067\n2::M::25::16::70072\n3::M::35::15::55117\n")
    (d / "movies.dat").write_text("1::Toy Story (1995)::Animation\n2::Jumanji (1995)::Adventure\n")
    return root


@pytest.fixture
def pushed(tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A git + DVC repo with one ML-1M version pushed to a fresh prefix of the local S3 server."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    repo = tmp_path / "repo"
    repo.mkdir()
    _sh(["git", "init", "-q"], repo)
    _sh([sys.executable, "-m", "dvc", "init", "-q"], repo)
    url = f"s3://{s3_server.bucket}/dvcstore-{uuid.uuid4().hex[:8]}"
    with (repo / ".dvc" / "config").open("a") as fh:
        fh.write(f"[core]\n    remote = storage\n['remote \"storage\"']\n    url = {url}\n")
    src = _ml1m(tmp_path / "src", extra=5)
    import_data(src, repo, ["ml-1m"])
    return repo, src


def test_fetch_by_md5_reads_the_version_from_the_remote_without_git(
    pushed, tmp_path: Path, monkeypatch
) -> None:
    repo, src = pushed
    md5, remote = data_version_md5(repo / "data.dvc"), default_remote_url(repo)
    assert md5.endswith(".dir") and remote.startswith("s3://")
    elsewhere = tmp_path / "pod"  # no checkout, no DVC cache: what a container has
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    got = fetch_by_md5(remote, md5, elsewhere / "raw", "data/ml-1m")
    assert (got.md5, got.files, got.dvc_md5) == (*tree_md5(src / "ml-1m"), md5)
    assert (elsewhere / "raw" / "ratings.dat").read_bytes() == (src / "ml-1m" / "ratings.dat").read_bytes()

    # the step: data_md5 wins over data_rev, and the md5 travels to the parent run's tags
    step = fetch(
        out_dir=elsewhere / "raw2",
        config=FetchConfig(dataset="ml-1m", data_rev="HEAD", data_md5=md5, dvc_remote=remote),
    )
    assert step.md5 == got.md5 and step.dvc_md5 == md5 and step.rev == f"md5:{md5}"


def test_unknown_md5_and_missing_remote_are_clear_errors(pushed, tmp_path: Path) -> None:
    repo, _ = pushed
    remote = default_remote_url(repo)
    with pytest.raises(VersioningError, match="was the version pushed"):
        fetch_by_md5(remote, "0" * 32 + ".dir", tmp_path / "x", "data/ml-1m")
    with pytest.raises(VersioningError, match="not a DVC directory md5"):
        fetch_by_md5(remote, "abc", tmp_path / "x", "data/ml-1m")
    with pytest.raises(ConfigError, match="needs dvc_remote"):
        fetch(out_dir=tmp_path / "x", config=FetchConfig(dataset="ml-1m", data_md5="0" * 32 + ".dir"))


def test_a_git_revision_without_a_checkout_says_what_to_set(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # like the image: no data.dvc, no .git
    with pytest.raises(ConfigError, match="set data_repo to the project's git URL, or data_md5"):
        fetch(out_dir=tmp_path / "raw", config=FetchConfig(dataset="ml-1m", data_rev="HEAD"))
