"""Evaluation: pure scoring of trained runs: significance tests, the leaderboard and the HTML report.

It sits below :mod:`mdctr.training` and imports none of it (the benchmark grid that trains runs is
:mod:`mdctr.steps.grid`); the FLOP definition and budget fitting live in :mod:`mdctr.routing`.
"""

from mdctr.evaluation.leaderboard import RunRecord, build_leaderboard, write_leaderboard

__all__ = ["RunRecord", "build_leaderboard", "write_leaderboard"]
