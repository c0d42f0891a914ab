"""Evaluation: the FLOP definition, width fitting to a budget, significance tests and the leaderboard."""

from typing import Any

from mdctr.evaluation.budget import BudgetError, BudgetSpec, WidthFit, fit_width, parse_budget, resolve_budget
from mdctr.evaluation.flops import FLOP_BUDGET_DEFAULT, count_batch, dense_parameters, flops_per_sample

__all__ = [
    "FLOP_BUDGET_DEFAULT",
    "BudgetError",
    "BudgetSpec",
    "WidthFit",
    "count_batch",
    "dense_parameters",
    "fit_width",
    "flops_per_sample",
    "parse_budget",
    "resolve_budget",
    "run_benchmark",
]


def __getattr__(name: str) -> Any:
    # run_benchmark needs mdctr.training, which itself imports this package: load it on first use
    if name == "run_benchmark":
        from mdctr.evaluation.benchmark import run_benchmark

        return run_benchmark
    raise AttributeError(f"module 'mdctr.evaluation' has no attribute {name!r}")
