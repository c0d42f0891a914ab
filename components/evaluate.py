"""Component: the FLOP-matched leaderboard over every trained entry; names and exports the winner."""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

import mdctr
from components import described


@dsl.component(base_image=mdctr.image_ref(), install_kfp_package=False)
@described(
    leaderboard="FLOP-matched leaderboard (Markdown), ranked on mean validation AUC.",
    report="The run report (HTML): summary, leaderboard, plots.",
    tables="Leaderboard and per-domain tables (CSV/JSON) and the report's plots.",
    winner_metrics="The winner's overall and per-domain metrics.",
    roc="The winner's ROC curve on the test split.",
)
def evaluate(
    tracking_uri: str,
    parent_run_id: str,
    results: Input[list[Dataset]],
    bundles: Input[list[Model]],
    domains: Input[Dataset],
    leaderboard: Output[Markdown],
    report: Output[HTML],
    tables: Output[Dataset],
    winner: Output[Model],
    winner_metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    promote_controls: bool = False,
) -> str:
    """Build the leaderboard from all ``results``; copy the winner's bundle to ``winner``; return its name."""
    from mdctr.steps.evaluate import EvaluateConfig
    from mdctr.steps.evaluate import evaluate as step

    result = step(
        results_dirs=[r.path for r in results],
        bundle_dirs=[b.path for b in bundles],
        leaderboard_path=leaderboard.path,
        report_path=report.path,
        tables_dir=tables.path,
        winner_dir=winner.path,
        domains_dir=domains.path,  # its report goes to the parent run (mine_domains is cached, takes no run)
        config=EvaluateConfig(
            tracking_uri=tracking_uri, parent_run_id=parent_run_id, promote_controls=promote_controls
        ),
    )
    for name, value in result.winner_metrics.items():
        winner_metrics.log_metric(name, value)
    roc.log_roc_curve(list(result.roc.fpr), list(result.roc.tpr), list(result.roc.thresholds))
    winner.metadata.update({"entry": result.winner, **result.winner_tags})
    leaderboard.metadata.update({"entries": result.entries, "winner": result.winner})
    return result.winner
