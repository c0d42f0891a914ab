"""Logloss beside AUC and the base-rate predictor on the leaderboard and in the report (issue #23 item 6):
an entry whose test logloss is worse than predicting the train positive rate is flagged; the winner is still
the validation-AUC leader."""

from __future__ import annotations

import math

import numpy as np

from mdctr.evaluation.leaderboard import RunRecord, build_leaderboard, pick_winner, to_markdown
from mdctr.evaluation.report import render_report
from mdctr.training.entry_result import EntryKey, EntryMetrics, EntryResult

BASE = 0.5235  # the Ciao time split's base-rate logloss in issue #23


def _records() -> list[RunRecord]:
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.3).astype(np.float64)
    out = []
    for seed in (0, 1):
        # star/none leads on validation AUC but its test logloss (0.549) is worse than the base rate's
        for model, source, valid_auc, logloss, valid_ll in (
            ("star", "none", 0.80, 0.549, 0.55),
            ("dnn", "none", 0.78, 0.500, 0.49),
        ):
            probs = np.clip(labels * 0.3 + rng.random(400) * 0.5, 0.01, 0.99)
            out.append(
                RunRecord(
                    model,
                    source,
                    seed,
                    1.0,
                    1e5,
                    1000,
                    0.75,
                    logloss + 0.001 * seed,
                    labels=labels,
                    probs=probs,
                    valid_auc=valid_auc,
                    valid_logloss=valid_ll,
                    base_logloss=BASE,
                )
            )
    return out


def test_leaderboard_has_logloss_columns_and_flags_entries_worse_than_the_base_rate() -> None:
    df = build_leaderboard(_records())
    assert list(df["entry"]) == ["star/none", "dnn/none"]  # ranked on validation AUC, not logloss
    assert df.iloc[pick_winner(df)]["entry"] == "star/none"  # the flag is information, not a choice
    star, dnn = df.iloc[0], df.iloc[1]
    assert star["base_logloss"] == BASE and star["worse_than_base"] and not dnn["worse_than_base"]
    assert math.isclose(star["valid_logloss_mean"], 0.55) and math.isclose(dnn["valid_logloss_mean"], 0.49)

    md = to_markdown(df, "t")
    assert "| valid logloss |" in md and "| base-rate logloss |" in md
    assert "0.5495 ± 0.0007 ⚠" in md and "0.5235" in md
    assert "Test logloss worse than the base-rate predictor" in md and "star/none (0.5495 vs 0.5235)" in md
    assert "dnn/none (" not in md


def test_records_without_a_base_rate_are_not_flagged() -> None:
    old = [RunRecord("dnn", "none", 0, 1.0, 1e5, 1000, 0.7, 0.9, valid_auc=0.7)]  # a store from before
    df = build_leaderboard(old)
    assert not df.iloc[0]["worse_than_base"] and math.isnan(df.iloc[0]["base_logloss"])
    assert "⚠" not in to_markdown(df)


def test_report_flags_a_winner_worse_than_the_base_rate() -> None:
    df = build_leaderboard(_records())
    summary = EntryResult(
        entry=EntryKey("star", "none", 0),
        run_id="",
        overall=EntryMetrics(auc=0.75, logloss=0.5495, flops_per_sample=1e5, dense_params=1000, width=1.0),
        per_domain=(),
    )
    page = render_report(df, title="t", winner="star/none", winner_result=summary, pngs={})
    assert "the winner&#x27;s test logloss" in page or "the winner's test logloss" in page
    assert "worse than the base-rate predictor" in page and "0.5235" in page
    assert "⚠ worse than base rate" in page  # the leaderboard cell
    assert "<th>valid logloss</th>" in page and "<th>base-rate logloss</th>" in page

    fine = df[df["entry"] == "dnn/none"].reset_index(drop=True)
    page = render_report(fine, title="t", winner="dnn/none", winner_result=summary, pngs={})
    assert "⚠" not in page and "base-rate predictor 0.5235" in page
