"""The evaluate step on a user's table: a control entry (random, binned) that ranks first stays on the
leaderboard but is not the winner unless promote_controls says so; titles name the table's schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mdctr.evaluation.leaderboard import NoCandidateError
from mdctr.steps.evaluate import WINNER_ENTRY_FILE, EvaluateConfig, evaluate
from mdctr.steps.prepare_data import PrepareConfig, prepare_data
from mdctr.steps.train_model import METRICS_FILE, TrainStepConfig, train_model

#: the table's schema name: what titles must say, where the adapter's name ("table") is what they said
SCHEMA_NAME = "shop-controls"


@pytest.fixture(scope="module")
def one_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A dnn/none run trained one epoch on a 600-row table → (results dir, bundle dir)."""
    root = tmp_path_factory.mktemp("controls")
    table = root / "shop"
    table.mkdir()
    (table / "schema.yaml").write_text(
        f"name: {SCHEMA_NAME}\nsparse: [user, item]\ndense: [price]\nlabel: clicked\ndomain: country\n"
    )
    rng = np.random.default_rng(0)
    n = 600
    pd.DataFrame(
        {
            "user": rng.integers(0, 50, n),
            "item": rng.integers(0, 20, n),
            "price": rng.gamma(2.0, 5.0, n),  # distinct: a table may not repeat rows
            "clicked": rng.integers(0, 2, n),
            "country": rng.choice(["us", "de"], n),
        }
    ).to_csv(table / "events.csv", index=False)
    prepared = prepare_data(source=table, out_dir=root / "prepared", config=PrepareConfig(dataset="table"))
    out = train_model(
        prepared_dir=prepared.path,
        domains_dir=None,
        bundle_dir=root / "bundle",
        results_dir=root / "results",
        config=TrainStepConfig(model_name="dnn", domain_source="none", seed=0, epochs=1),
    )
    return out.results_dir, out.bundle_dir


def _as_entry(results: Path, out: Path, model: str, source: str, valid_auc: float) -> Path:
    """A copy of ``results`` relabelled as ``model/source`` with the given validation AUC (what ranks)."""
    shutil.copytree(results, out)
    summary = json.loads((out / METRICS_FILE).read_text())
    summary["entry"] |= {"model": model, "domain_source": source}
    summary["overall"]["best_valid_auc"] = valid_auc
    (out / METRICS_FILE).write_text(json.dumps(summary))
    return out


def _evaluate(root: Path, runs: list[Path], bundle: Path, **config: Any) -> Any:
    return evaluate(
        results_dirs=runs,
        bundle_dirs=[bundle] * len(runs),
        leaderboard_path=root / "leaderboard.md",
        report_path=root / "report.html",
        tables_dir=root / "tables",
        winner_dir=root / "winner",
        config=EvaluateConfig(**config),
    )


def test_a_control_ranked_first_is_shown_but_not_the_winner(
    one_run: tuple[Path, Path], tmp_path: Path
) -> None:
    results, bundle = one_run
    runs = [
        _as_entry(results, tmp_path / "r1", "hamur", "random", 0.90),
        _as_entry(results, tmp_path / "r2", "star", "binned", 0.85),
        _as_entry(results, tmp_path / "r3", "hamur", "mined", 0.70),
        _as_entry(results, tmp_path / "r4", "dnn", "none", 0.60),
    ]
    out = _evaluate(tmp_path / "eval", runs, bundle)
    # the controls stay on the leaderboard, ranked where their validation AUC puts them
    board = json.loads((tmp_path / "eval" / "tables" / "leaderboard.json").read_text())["entries"]
    assert [e["entry"] for e in board] == ["hamur/random", "star/binned", "hamur/mined", "dnn/none"]
    # but the winner, exported for registration, is the best entry that is not a control
    assert out.winner == "hamur/mined" and out.winner_tags["domain_source"] == "mined"
    exported = json.loads((tmp_path / "eval" / "winner" / WINNER_ENTRY_FILE).read_text())
    assert exported["entry"] == "hamur/mined" and exported["domain_source"] == "mined"
    page = (tmp_path / "eval" / "report.html").read_text()
    assert (
        "<b>hamur/mined</b>" in page
        and "Ranked above it but not a candidate: hamur/random, star/binned" in page
    )
    # titles name the table's schema, not the adapter ("table")
    title = f"FLOP-matched leaderboard: {SCHEMA_NAME}"
    assert f"<title>{title}</title>" in page and f"<h1>{title}</h1>" in page
    assert (tmp_path / "eval" / "leaderboard.md").read_text().startswith(f"# {title}\n")


def test_promote_controls_lets_a_control_win(one_run: tuple[Path, Path], tmp_path: Path) -> None:
    results, bundle = one_run
    runs = [
        _as_entry(results, tmp_path / "r1", "hamur", "random", 0.90),
        _as_entry(results, tmp_path / "r2", "dnn", "none", 0.60),
    ]
    out = _evaluate(tmp_path / "eval", runs, bundle, promote_controls=True)
    assert out.winner == "hamur/random"
    assert "not a candidate" not in (tmp_path / "eval" / "report.html").read_text()


def test_only_controls_fail_with_one_line_naming_the_flag(one_run: tuple[Path, Path], tmp_path: Path) -> None:
    results, bundle = one_run
    runs = [_as_entry(results, tmp_path / "r1", "hamur", "random", 0.90)]
    with pytest.raises(NoCandidateError, match=r"control source \(random, binned\).*promote_controls") as e:
        _evaluate(tmp_path / "eval", runs, bundle)
    assert "\n" not in str(e.value)
