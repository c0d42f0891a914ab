"""What `mdctr pipeline run` does with default arguments (issue 22): the default grid holds no control source
(random, binned are baselines, not production candidates), the README's entry count is the plan's, and the
report it prints is the final one, with the gate decision."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mdctr.models import model_names
from mdctr.pipeline import PipelineArguments, planned_training_tasks
from mdctr.pipeline.local import _final_report
from mdctr.routing import CONTROL_SOURCES
from mdctr.steps.plan_runs import DEFAULT_DOMAIN_SOURCES, PlanConfig, plan_runs

ROOT = Path(__file__).resolve().parents[2]
MDCTR = Path(sys.executable).with_name("mdctr")


def test_the_default_grid_leaves_the_controls_out() -> None:
    assert not set(DEFAULT_DOMAIN_SOURCES) & set(CONTROL_SOURCES)
    entries = plan_runs(
        config=PlanConfig(models=model_names(), domain_sources=DEFAULT_DOMAIN_SOURCES, seeds=(0,))
    ).entries
    assert not [e for e in entries if e["domain_source"] in CONTROL_SOURCES]
    assert {"handcrafted", "mined", "none"} == {e["domain_source"] for e in entries}  # dnn keeps "none"
    # what `pipeline run` plans with no --models/--domain-sources: 29 entries for one seed, not 68
    assert planned_training_tasks(PipelineArguments.local()) == len(entries) == 29
    # asked for explicitly, the controls are still trained (and shown on the leaderboard)
    controls = PipelineArguments.local(
        models=["hamur"], domain_sources=["random", "binned"], promote_controls=True
    )
    assert planned_training_tasks(controls) == 2


def test_the_compiled_pipeline_default_leaves_the_controls_out() -> None:
    """A run started from the Kubeflow UI with the pipeline's own defaults trains no control either."""
    from mdctr.pipeline import load_pipeline

    assert list(PipelineArguments().domain_sources) == list(DEFAULT_DOMAIN_SOURCES)
    compiled = load_pipeline().component_spec.inputs["domain_sources"].default
    assert list(compiled) == list(DEFAULT_DOMAIN_SOURCES)


def test_a_plan_of_controls_only_is_refused_before_the_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"every planned entry routes by a control source"):
        planned_training_tasks(PipelineArguments.local(models=["hamur"], domain_sources=["random"]))
    done = subprocess.run(
        [str(MDCTR), "pipeline", "run", "--dataset", "synthetic", "--models", "hamur", "--domain-sources",
         "random", "--runs-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--promote-controls" in done.stdout + done.stderr and "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "runs" / "kfp").exists()


def test_the_readme_entry_count_is_the_plan_of_make_run() -> None:
    """README: "With the 16 models that is 29 entries" for `make run`'s --domain-sources."""
    make_run = re.search(r"^run:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    sources = re.search(r"--domain-sources (\S+)", make_run).group(1).split(",")
    readme = (ROOT / "README.md").read_text()
    models, entries = re.search(r"the (\d+) models that is (\d+) entries", readme).groups()
    assert int(models) == len(model_names())
    assert int(entries) == planned_training_tasks(PipelineArguments.local(domain_sources=sources))


def test_the_printed_report_is_the_final_one(tmp_path: Path) -> None:
    """register-model's report (with the gate decision), copied as report.html; evaluate's only without it."""
    evaluated = tmp_path / "evaluate" / "tables" / "report.html"
    evaluated.parent.mkdir(parents=True)
    evaluated.write_text("<html>gate: decided after evaluation</html>")
    assert _final_report(tmp_path) == evaluated
    final = tmp_path / "register-model" / "report"
    final.parent.mkdir()
    final.write_text("<html>gate: promote</html>")
    assert _final_report(tmp_path) == tmp_path / "report.html"
    assert (tmp_path / "report.html").read_text() == "<html>gate: promote</html>"
    assert _final_report(tmp_path / "nothing") is None


def test_the_winner_line_names_the_controls_ranked_above_it(tmp_path: Path) -> None:
    from mdctr.cli.pipeline import _ranked_above

    board = tmp_path / "leaderboard.json"
    board.write_text(
        '{"entries": [{"entry": "hamur/random"}, {"entry": "star/mined"}, {"entry": "dnn/none"}]}'
    )
    assert _ranked_above(board, "star/mined") == ["hamur/random"]
    assert _ranked_above(board, "hamur/random") == []
    assert _ranked_above(None, "star/mined") == []  # evaluate wrote no table
