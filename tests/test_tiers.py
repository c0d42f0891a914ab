"""The test tiers (README "Testing"): ``make test`` runs every test and lists the slowest, ``make test-fast``
leaves out the three markers, and no test outside ``integration`` starts a server."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIERS = {"integration", "container", "slow"}
#: fixtures that start a real server (S3, mlflow server on PostgreSQL, ``mdctr serve``)
SERVER_FIXTURES = {"s3_server", "postgres_s3_server", "serve_demo"}


def _recipe(target: str) -> str:
    """The recipe lines of ``target`` in the Makefile, joined."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.MULTILINE)
    assert match, f"Makefile has no {target!r} target"
    return match.group(1)


def test_the_tier_markers_are_registered_and_strict() -> None:
    pytest_ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    registered = {m.split(":", 1)[0].strip() for m in pytest_ini["markers"]}
    assert registered >= TIERS
    assert "--strict-markers" in pytest_ini["addopts"]


def test_make_test_is_the_whole_suite_with_durations_and_ci_runs_it() -> None:
    recipe = _recipe("test")
    assert "pytest" in recipe and "--durations=25" in recipe
    assert not re.search(r"pytest\b.*\s-m\s", recipe), f"make test selects markers: {recipe.strip()}"
    assert "make test\n" in (ROOT / ".ci" / "run").read_text()


def test_make_test_fast_leaves_out_every_tier() -> None:
    text = (ROOT / "Makefile").read_text()
    assert '-m "$(FAST_TESTS)"' in _recipe("test-fast")
    expr = re.search(r"^FAST_TESTS := (.+)$", text, re.MULTILINE)
    assert expr and set(re.findall(r"not (\w+)", expr.group(1))) == TIERS


def test_no_unmarked_test_starts_a_server(request: pytest.FixtureRequest) -> None:
    """Over the tests this session collected (in ``make test-fast``: the fast tier)."""
    unmarked = [
        item.nodeid
        for item in request.session.items
        if item.get_closest_marker("integration") is None
        and SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
    ]
    assert unmarked == [], f"these tests start a server but are not marked integration: {unmarked}"
