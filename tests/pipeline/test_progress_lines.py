"""What `mdctr pipeline run` prints per task: one line per finished task, numbered training tasks, and a progress
bar only when the output is a terminal."""

from __future__ import annotations

import io

from mdctr.cli.pipeline import _Progress
from mdctr.pipeline import TaskEvent


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _events(progress: _Progress) -> None:
    progress(TaskEvent("fetch-data", "RUNNING"))
    progress(TaskEvent("fetch-data", "SUCCESS", 0.42))
    progress(TaskEvent("train-model", "RUNNING"))
    progress(TaskEvent("train-model", "RUNNING"))
    progress(TaskEvent("train-model", "FAILURE", 3.0, "hamur/mined seed 1", "ValueError: boom"))
    progress(TaskEvent("train-model", "SUCCESS", 12.25, "dnn/none seed 0"))
    progress(TaskEvent("promote-model", "SKIPPED"))
    progress.close()


def test_piped_output_gets_only_the_task_lines() -> None:
    out = io.StringIO()
    _events(_Progress(out, training_tasks=2))
    assert out.getvalue().splitlines() == [
        "  fetch-data           success     0.4s",
        "  train-model 1/2      failure     3.0s  hamur/mined seed 1",
        "  train-model 2/2      success    12.2s  dnn/none seed 0",
        "  promote-model        skipped",
    ]


def test_a_terminal_also_gets_the_training_bar() -> None:
    out = _Terminal()
    _events(_Progress(out, training_tasks=2))
    text = out.getvalue()
    assert "training:" in text and "2/2" in text and "2 running" in text
    assert "  train-model 2/2      success    12.2s  dnn/none seed 0" in text


def test_the_leaderboard_shows_the_top_entries_and_the_baseline(tmp_path) -> None:
    import json

    from mdctr.cli.pipeline import _compact_leaderboard

    tables = tmp_path / "evaluate" / "tables"
    tables.mkdir(parents=True)
    names = [f"m{i}/mined" for i in range(7)] + ["dnn/none"]
    entries = [
        {
            "rank": i + 1,
            "entry": name,
            "valid_auc_mean": 0.8 - i / 100,
            "auc_mean": 0.79 - i / 100,
            "auc_ci_low": 0.78 - i / 100,
            "auc_ci_high": 0.8 - i / 100,
            "flops": 99_584.0,
        }
        for i, name in enumerate(names)
    ]
    (tables / "leaderboard.json").write_text(
        json.dumps({"attrs": {"baseline": "dnn/none"}, "entries": entries})
    )
    rows = _compact_leaderboard(tables / "leaderboard.json", top=3)
    assert [r.split()[1] for r in rows[1:5]] == ["m0/mined", "m1/mined", "m2/mined", "dnn/none"]
    assert rows[1] == "   1  m0/mined                    0.8000  0.7900 [0.7800, 0.8000]         99,584"
    assert rows[-1] == f"  … 4 more of 8 entries: {tables / 'leaderboard.md'}"
    assert len(rows) == 6
