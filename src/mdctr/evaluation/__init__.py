"""Evaluation: the FLOP-matched benchmark, significance tests and the leaderboard.

The FLOP definition and budget fitting live one layer down, in :mod:`mdctr.routing`, so that training uses
them without importing this package.
"""

from mdctr.evaluation.benchmark import run_benchmark
from mdctr.evaluation.leaderboard import RunRecord, build_leaderboard, write_leaderboard

__all__ = ["RunRecord", "build_leaderboard", "run_benchmark", "write_leaderboard"]
