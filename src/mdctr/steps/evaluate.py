"""Step: the FLOP-matched leaderboard over every trained entry, an HTML report, and the winner's bundle."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mdctr.evaluation.report import ReportSummary, render_report
from mdctr.io import atomic_dir, write_json_atomic
from mdctr.steps.common import tracking_uri_or_none
from mdctr.steps.prepare_data import SERVING_EXAMPLE_FILE
from mdctr.training.entry_result import EntryResult, read_predictions

log = logging.getLogger(__name__)

#: the winner directory: ``bundle/`` (the serving bundle), the serving example and ``entry.json``
WINNER_BUNDLE_DIR = "bundle"
WINNER_ENTRY_FILE = "entry.json"
ROC_FILE = "roc_winner.json"
ROC_PNG = "roc_winner.png"
REPORT_FILE = "report.html"
CALIBRATION_PNG = "calibration_winner.png"
LEARNING_CURVES_PNG = "learning_curves.png"
#: ROC curves are thinned to about this many points before they go into KFP metadata and the report
ROC_POINTS = 200


#: the leaderboard's and the report's title, with the dataset's schema name (``ml-1m``, a table's ``name:``)
TITLE = "FLOP-matched leaderboard: {dataset}"


@dataclass(frozen=True)
class EvaluateConfig:
    """Attributes: MLflow URI and parent run (``""``: do not log); leaderboard ``title`` (``""``:
    :data:`TITLE` with the schema name of the trained data); ``promote_controls``: let an entry routed by a
    control source (``random``, ``binned``) be the winner, which is otherwise the best non-control entry
    (:func:`mdctr.evaluation.leaderboard.pick_winner`)."""

    tracking_uri: str = ""
    parent_run_id: str = ""
    title: str = ""
    promote_controls: bool = False
    #: shown in the report's summary; "" → the parent run's data tags (rev, md5) when there is a parent run
    data_version: str = ""


@dataclass(frozen=True)
class RocCurve:
    """Points of an ROC curve, thresholds finite and decreasing."""

    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    thresholds: tuple[float, ...]


@dataclass(frozen=True)
class EvaluateOutput:
    """Attributes:
    winner: the best entry (``model/domain_source``, highest mean validation AUC; not a control source unless
        the config allows it); ``winner_seed`` the seed whose bundle was exported (best validation AUC among the
        entry's seeds, so the test split picks nothing).
    winner_run_id: the winner's nested MLflow run.
    winner_metrics: finite scalars of the exported run; ``winner_tags``: model, source, seed.
    entries: leaderboard rows; ``runs``: trained runs; ``roc``: the winner's test ROC curve.
    """

    winner: str
    winner_seed: int
    winner_run_id: str
    winner_metrics: dict[str, float]
    winner_tags: dict[str, Any]
    entries: int
    runs: int
    roc: RocCurve
    leaderboard_markdown: str
    files: dict[str, Path] = field(default_factory=dict)


def thin_roc(labels: np.ndarray, probs: np.ndarray, points: int = ROC_POINTS) -> RocCurve:
    """The ROC curve of ``probs`` against ``labels`` [N], keeping about ``points`` points (first and last
    included); sklearn's leading ``inf`` threshold becomes 1.0 so the values are JSON-safe."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(labels, probs)
    keep = np.unique(np.linspace(0, len(fpr) - 1, num=min(points, len(fpr))).round().astype(int))
    thr = np.where(np.isfinite(thr), thr, 1.0)
    return RocCurve(
        tuple(float(x) for x in fpr[keep]),
        tuple(float(x) for x in tpr[keep]),
        tuple(float(x) for x in thr[keep]),
    )


def _load_run(results_dir: Path) -> tuple[EntryResult, Any]:
    """(the entry's record, its leaderboard :class:`~mdctr.evaluation.leaderboard.RunRecord` with the test
    predictions) from a ``train_model`` results directory."""
    from mdctr.evaluation.leaderboard import RunRecord

    result = EntryResult.read(results_dir)
    preds = read_predictions(results_dir)
    ov = result.overall
    record = RunRecord(
        model=result.entry.model,
        domain_source=result.entry.domain_source,
        seed=int(result.entry.seed),
        width=result.width,
        flops=result.flops,
        dense_params=int(ov.dense_params),
        auc=float(ov.auc),
        logloss=float(ov.logloss),
        domain_auc={d.name: float(d.auc) for d in result.per_domain},
        labels=preds["labels"],
        probs=preds["probs"],
        train_samples_per_s=float(ov.train_samples_per_s),
        wall_s=float(ov.train_wall_s),
        valid_auc=float(ov.best_valid_auc),
        valid_logloss=float(ov.valid_logloss),
        base_logloss=float(ov.base_rate_logloss),
    )
    return result, record


def _plot_roc(roc: RocCurve, title: str, path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.add_subplot()
    ax.plot(roc.fpr, roc.tpr, lw=1.5)
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _log_parent(
    config: EvaluateConfig,
    headline: dict[str, float],
    tables_dir: Path,
    winner_result: EntryResult,
    winner: str,
    results: list[EntryResult],
    domains_dir: Path | str | None,
) -> None:
    """The parent run gets the headline metrics and ``tables_dir``, the winner, the pipeline's training
    parameters (from the entries' settings) and the domain report of ``domains_dir`` (if any)."""
    from mdctr import tracking

    uri = tracking_uri_or_none(config.tracking_uri)
    tracking.log_evaluation(uri, config.parent_run_id, metrics=headline, artifact_dir=tables_dir)
    names = tracking.names
    tracking.runs.tag_run(
        uri,
        config.parent_run_id,
        {names.TAG_WINNER: winner, names.TAG_WINNER_RUN_ID: winner_result.run_id or None},
    )
    entries = [r.entry for r in results]
    params: dict = {
        "models": sorted({str(e.model) for e in entries}),
        "domain_sources": sorted({str(e.domain_source) for e in entries}),
        "seeds": sorted({int(e.seed) for e in entries}),
    }
    settings = [r.settings for r in results if r.settings]
    if settings and all(s == settings[0] for s in settings):
        params.update(settings[0])
    tracking.runs.log_run_params(uri, config.parent_run_id, params)
    if domains_dir is not None:
        from mdctr.steps.mine_domains import log_domain_report

        log_domain_report(domains_dir, tracking_uri=uri, parent_run_id=config.parent_run_id)


def evaluate(
    *,
    results_dirs: Sequence[Path | str],
    bundle_dirs: Sequence[Path | str],
    leaderboard_path: Path | str,
    report_path: Path | str,
    tables_dir: Path | str,
    winner_dir: Path | str,
    config: EvaluateConfig,
    domains_dir: Path | str | None = None,
) -> EvaluateOutput:
    """Build the leaderboard from every ``train_model`` output (``results_dirs[i]`` pairs with
    ``bundle_dirs[i]``) and write:

    * ``leaderboard_path``: Markdown; ``report_path``: self-contained HTML (plots inline as base64);
    * ``tables_dir``: leaderboard Markdown/CSV/JSON, PNG plots, the winner's ROC (JSON + PNG), the report;
    * ``winner_dir``: ``bundle/`` (the winner's serving bundle), its serving example and ``entry.json``;

    and log the leaderboard files and headline metrics to the MLflow parent run, with the domain report of
    ``domains_dir`` (a ``mine_domains`` output; logged here because mine_domains is cached and takes no run).
    """
    from mdctr.evaluation.leaderboard import build_leaderboard, pick_winner, to_markdown

    if len(results_dirs) != len(bundle_dirs):
        raise ValueError(f"{len(results_dirs)} results but {len(bundle_dirs)} bundles; they must pair up")
    if not results_dirs:
        raise ValueError("nothing to evaluate: no trained runs")
    loaded = [_load_run(Path(d)) for d in results_dirs]
    df = build_leaderboard([rec for _, rec in loaded])
    best = df.iloc[pick_winner(df, promote_controls=config.promote_controls)]
    pick = _pick_winner(best, loaded)
    result, record = loaded[pick]
    winner = str(best["entry"])
    if winner != df.iloc[0]["entry"]:
        log.info("winner %s: the entries ranked above it route by a control source (a baseline)", winner)
    roc = thin_roc(record.labels, record.probs)
    title = config.title or TITLE.format(dataset=_dataset_name(Path(bundle_dirs[pick])))

    tables_dir = Path(tables_dir)
    parent = _parent_run(config)
    report_summary = ReportSummary(
        data_version=config.data_version or _data_version(parent),
        run_links=_run_links(config, parent, result.run_id, winner, record.seed),
    )
    histories: dict[str, list[Any]] = {}
    for run_result, rec in loaded:
        histories.setdefault(rec.entry, []).append(run_result.history or [])
    files, page = _write_tables(df, tables_dir, title, winner, result, record, roc, histories, report_summary)
    markdown = to_markdown(df, title)
    for path, text in ((Path(leaderboard_path), markdown), (Path(report_path), page)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _write_winner(Path(winner_dir), Path(bundle_dirs[pick]), Path(results_dirs[pick]), winner, result)

    if config.parent_run_id:
        headline = {  # the winner's: what is registered, not a control ranked above it
            "best.valid_auc_mean": float(best["valid_auc_mean"]),
            "best.auc_mean": float(best["auc_mean"]),
            "leaderboard.entries": len(df),
        }
        _log_parent(config, headline, tables_dir, result, winner, [r for r, _ in loaded], domains_dir)
    log.info(
        "leaderboard: %d entries from %d runs; winner %s (seed %d)", len(df), len(loaded), winner, record.seed
    )
    return EvaluateOutput(
        winner=winner,
        winner_seed=record.seed,
        winner_run_id=result.run_id,
        # per-domain AUCs only: the KFP Metrics of the winner have always shown those
        winner_metrics=result.scalars(("auc",)),
        winner_tags=dataclasses.asdict(result.entry),
        entries=len(df),
        runs=len(loaded),
        roc=roc,
        leaderboard_markdown=markdown,
        files={k: tables_dir / Path(v).name for k, v in files.items()} | {"report": tables_dir / REPORT_FILE},
    )


def _dataset_name(bundle_dir: Path) -> str:
    """The schema name of the data a bundle was trained on (``ml-1m``; a table's ``name:``), not the adapter's
    name (``table``)."""
    from mdctr.data.encode import FeatureSpec
    from mdctr.serving.bundle import SPEC_FILE

    return FeatureSpec.load(bundle_dir / SPEC_FILE).schema.name


def _pick_winner(best: Any, loaded: Sequence[tuple[EntryResult, Any]]) -> int:
    """Index of the run to export: among the seeds of the winning leaderboard row ``best`` (ranked by mean
    validation AUC), the one with the best validation AUC. Test metrics play no part."""
    candidates = [
        i
        for i, (_, rec) in enumerate(loaded)
        if rec.model == best["model"] and rec.domain_source == best["domain_source"]
    ]
    return max(candidates, key=lambda i: float(loaded[i][0].overall.best_valid_auc))


def _write_tables(
    df: Any,
    tables_dir: Path,
    title: str,
    winner: str,
    result: EntryResult,
    record: Any,
    roc: RocCurve,
    histories: dict[str, list[Any]],
    report_summary: ReportSummary,
) -> tuple[dict[str, Path], str]:
    """Leaderboard files, plots, the winner's ROC and the HTML report into ``tables_dir`` (atomically) →
    (leaderboard files by kind, the report page)."""
    from mdctr.evaluation.leaderboard import write_leaderboard
    from mdctr.evaluation.plots import plot_calibration, plot_learning_curves

    seed = record.seed
    with atomic_dir(tables_dir) as tmp:
        files = write_leaderboard(df, tmp, title=title)
        write_json_atomic(tmp / ROC_FILE, {"entry": winner, "seed": seed, **roc.__dict__})
        _plot_roc(roc, f"ROC {winner} seed {seed} (test)", tmp / ROC_PNG)
        plot_calibration(
            record.labels,
            record.probs,
            tmp / CALIBRATION_PNG,
            title=f"calibration {winner} seed {seed} (test)",
        )
        plot_learning_curves(histories, tmp / LEARNING_CURVES_PNG)
        pngs = {
            "test AUC vs FLOPs per sample": files["auc_vs_flops"],
            "test AUC per hand-crafted domain": files["domain_auc"],
            f"calibration of the winner ({winner}, seed {seed}, test; equal-count bins)": tmp
            / CALIBRATION_PNG,
            f"ROC of the winner ({winner}, seed {seed}, test)": tmp / ROC_PNG,
            "learning curves: validation AUC per epoch": tmp / LEARNING_CURVES_PNG,
        }
        page = render_report(
            df, title=title, winner=winner, winner_result=result, pngs=pngs, summary=report_summary
        )
        (tmp / REPORT_FILE).write_text(page)
    return files, page


def _parent_run(config: EvaluateConfig) -> Any:
    """The MLflow parent run, or None when there is none or the store cannot be read (the report then says
    "not recorded": a report must not fail for want of a summary line)."""
    if not config.parent_run_id:
        return None
    import mlflow

    try:
        return mlflow.MlflowClient(tracking_uri_or_none(config.tracking_uri)).get_run(config.parent_run_id)
    except Exception as e:  # any store error only costs the summary its data version and links
        log.warning("report summary: cannot read parent run %s: %s", config.parent_run_id, e)
        return None


def _data_version(run: Any) -> str:
    """``rev <rev>, md5 <md5>`` from the parent run's data tags ("" when unknown)."""
    from mdctr.tracking import names

    if run is None:
        return ""
    tags = run.data.tags
    parts = [
        f"{k} {tags[t]}" for k, t in (("rev", names.TAG_DATA_REV), ("md5", names.TAG_DATA_MD5)) if tags.get(t)
    ]
    return ", ".join(parts)


def _run_links(
    config: EvaluateConfig, run: Any, winner_run_id: str, winner: str, seed: int
) -> dict[str, str]:
    """Links to the MLflow UI's pages of the parent run and the exported winner run, for an http(s) tracking
    URI only (a file or sqlite store has no page to link to)."""
    uri = config.tracking_uri.rstrip("/")
    if not uri.startswith(("http://", "https://")):
        return {}
    if run is None:
        return {}
    from mdctr.tracking.reports import ui_url  # the one builder of UI links (opens the training-runs layout)

    experiment = run.info.experiment_id
    links = {"pipeline run (parent)": ui_url(uri, experiment, f"/runs/{config.parent_run_id}")}
    if winner_run_id:
        links[f"winner {winner} seed {seed}"] = ui_url(uri, experiment, f"/runs/{winner_run_id}")
    return links


def _write_winner(
    winner_dir: Path, bundle_dir: Path, results_dir: Path, winner: str, result: EntryResult
) -> None:
    """The winner's serving bundle, serving example and ``entry.json`` into ``winner_dir`` (atomically)."""
    with atomic_dir(winner_dir) as tmp:
        shutil.copytree(bundle_dir, tmp / WINNER_BUNDLE_DIR)
        example = results_dir / SERVING_EXAMPLE_FILE
        if example.is_file():
            shutil.copyfile(example, tmp / SERVING_EXAMPLE_FILE)
        write_json_atomic(
            tmp / WINNER_ENTRY_FILE,
            {"entry": winner, **dataclasses.asdict(result.entry), "run_id": result.run_id},
        )
