"""Local runs give each concurrent task its share of the CPU cores."""

from __future__ import annotations

import pytest

from mdctr.pipeline import THREAD_VARIABLES, local_thread_env


def test_each_parallel_task_gets_its_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in THREAD_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    assert local_thread_env(cpus=2, parallel=2) == dict.fromkeys(THREAD_VARIABLES, "1")
    assert local_thread_env(cpus=16, parallel=2) == dict.fromkeys(THREAD_VARIABLES, "8")
    assert local_thread_env(cpus=1, parallel=2) == dict.fromkeys(THREAD_VARIABLES, "1")


def test_a_setting_the_user_made_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert local_thread_env(cpus=8, parallel=2) == {"MKL_NUM_THREADS": "4"}


def test_thread_settings_last_only_for_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from mdctr.pipeline.runners import _environ

    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with _environ({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}):
        import os

        assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["MKL_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in os.environ
    assert os.environ["MKL_NUM_THREADS"] == "3"
