"""Train a benchmark grid (:mod:`mdctr.steps.grid`): per-split data and miners, width fitting at the budget,
one :func:`mdctr.training.run.train_model` per (entry, seed) on worker processes, a deadline, resume, and the
leaderboard of what finished.

The runs go seed-major to ``GridConfig.workers`` processes (spawned; one worker trains in this process), so a
machine with many cores, or one GPU shared by several processes, finishes the grid in a fraction of the time.
When ``deadline_s`` runs out no further run starts; the runs left are listed (``grid.json``,
:attr:`GridResult.skipped_by_deadline`) and the leaderboard holds what finished (it says how many seeds each
entry has). A run that fails is listed too, and does not stop the others.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import logging
import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mdctr.config import ConfigError
from mdctr.io import write_json_atomic, write_text_atomic
from mdctr.steps.grid import (
    Entry,
    GridConfig,
    GridPlan,
    StaleRunsError,
    Task,
    check_settings,
    grid_settings,
    plan_grid,
    probs_path,
    read_back,
    record_path,
    resolved_config,
    run_tag,
    stale_message,
    store_lines,
    variant_name,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridResult:
    """Attributes: ``leaderboard`` (None when no run finished; ``attrs`` hold ``dataset``, the schema's name, and
    ``title``), ``records`` (each finished run's record with its ``tag``), ``read_back`` (how many of them an
    earlier grid trained), ``planned``, ``skipped_by_deadline`` and ``failed`` (runs, with the error), ``wall_s``."""

    leaderboard: Any
    records: list[dict[str, Any]]
    read_back: int
    planned: int
    skipped_by_deadline: list[list[Any]]
    failed: list[dict[str, Any]]
    wall_s: float

    def summary(self) -> dict[str, Any]:
        """The counts ``benchmarks/grid.py`` prints as its last line."""
        return {
            "finished": len(self.records),
            "read_back": self.read_back,
            "planned": self.planned,
            "failed": len(self.failed),
            "wall_s": self.wall_s,
        }


def prepare_split(config: GridConfig, split_seed: int) -> Any:
    """The dataset loaded and split with ``split_seed`` (in memory); a split the data cannot take fails first."""
    from mdctr.data import load_dataset
    from mdctr.data.encode import check_split
    from mdctr.data.prepare import prepare_in_memory

    loaded = load_dataset(config.dataset, config.source_dir or ".", **config.dataset_options)
    check_split(loaded.schema, config.split)
    return prepare_in_memory(loaded, split=config.split, seed=split_seed)  # type: ignore[arg-type]


def miner_dir_of(out: Path, split_seed: int) -> Path:
    """Where the miner pre-trained on split ``split_seed``'s train rows is kept (one per split)."""
    return out / "miner" / f"split{split_seed}"


def device_name(device: str) -> str:
    import torch

    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return torch.cuda.get_device_name(0) if use_cuda else "cpu"


def _fit_miners(config: GridConfig, splits: dict[int, Any]) -> dict[int, Any]:
    """One miner per split, pre-trained on that split's train rows only; a resumed grid keeps the one its runs
    used."""
    from mdctr.domains.miner import STATE_FILE, DomainMiner, MinerConfig, fit_miner
    from mdctr.routing import model_inputs

    miners = {}
    for s, data in splits.items():
        where = miner_dir_of(config.out, s)
        if config.resume and (where / STATE_FILE).is_file():
            miners[s] = DomainMiner.load(where)
        else:
            miners[s] = fit_miner(data.train, model_inputs(data, 1), config.miner or MinerConfig())
            miners[s].save(where)
    return miners


class _Worker:
    """One process's state: the prepared splits and their miners (each loaded once, on first use), and the
    widths fitted per (entry, split)."""

    def __init__(
        self, config: GridConfig, budget: float | None, uses_miner: bool, splits: dict[int, Any], miners: dict
    ) -> None:
        self.config, self.budget, self.uses_miner = config, budget, uses_miner
        self.splits, self.miners = splits, miners
        self.widths: dict[tuple[Any, int], float] = {}

    def split(self, split_seed: int) -> tuple[Any, Any]:
        if split_seed not in self.splits:
            self.splits[split_seed] = prepare_split(self.config, split_seed)
            if self.uses_miner:
                from mdctr.domains.miner import DomainMiner

                self.miners[split_seed] = DomainMiner.load(miner_dir_of(self.config.out, split_seed))
        return self.splits[split_seed], self.miners.get(split_seed)

    def width(self, entry: Entry, split_seed: int, prepared: Any, routing: Any) -> float:
        """The entry's width at the budget, fitted on the split's first validation rows."""
        from mdctr.routing import count_batch, fit_width

        if (entry, split_seed) not in self.widths:
            if self.budget is None:  # budget none: the model's default sizes
                self.widths[entry, split_seed] = 1.0
            else:
                routed = routing.route(prepared)
                fitted = fit_width(
                    entry.model, routed.inputs, self.budget, count_batch(routed.data.valid),
                    entry.overrides or None, routing,
                )  # fmt: skip
                self.widths[entry, split_seed] = fitted.width
        return self.widths[entry, split_seed]

    def run(self, task: Task, deadline: float, settings: dict[str, Any]) -> dict[str, Any] | None:
        """Train one run and write its files (``settings`` recorded); None when the deadline passed first."""
        from mdctr.evaluation.leaderboard import RunRecord
        from mdctr.training.run import train_model

        if time.time() > deadline:
            return None
        seed, entry = task
        config = self.config
        split_seed = config.split_seed_of(seed)
        prepared, miner = self.split(split_seed)
        routing = entry.routing(miner)
        tag = run_tag(seed, entry)
        checkpoints = config.train.checkpoint_dir
        trained = train_model(
            prepared,
            entry.model,
            entry.source,
            width=self.width(entry, split_seed, prepared, routing),
            model_config=entry.overrides or None,
            miner=routing.miner,
            config=dataclasses.replace(
                config.train, seed=seed, checkpoint_dir=str(Path(checkpoints) / tag) if checkpoints else None
            ),
        )
        runs = config.out / "runs"
        summary = trained.summary() | {
            "budget": config.budget,
            "budget_flops": self.budget,
            "split_seed": split_seed,
            "model_config": entry.overrides,
        }
        write_json_atomic(runs / f"{tag}.json", summary)
        np.save(probs_path(config.out, tag), trained.predictions.astype(np.float32))
        record = RunRecord.from_trained(trained).to_json()
        if entry.overrides:  # a variant is its own leaderboard entry, named by its overrides
            record["model"] = variant_name(entry.model, entry.overrides)
        # written last: its presence marks the run complete for a resumed grid
        write_json_atomic(
            record_path(config.out, tag),
            {"record": record, "settings": settings, "device": device_name(config.train.device)},
        )
        return record | {"tag": tag}


#: the worker of this process when it is one of a pool's
_POOL_WORKER: list[_Worker] = []


def _init_pool_worker(config: GridConfig, budget: float | None, uses_miner: bool) -> None:
    import torch

    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    logging.basicConfig(level=logging.WARNING)
    _POOL_WORKER.append(_Worker(config, budget, uses_miner, {}, {}))


def _run_in_pool(task: Task, deadline: float, settings: dict[str, Any]) -> dict[str, Any] | None:
    return _POOL_WORKER[0].run(task, deadline, settings)


def _execute(
    config: GridConfig, worker: _Worker, todo: list[Task], deadline: float, settings: Callable[[Task], dict]
) -> Iterator[tuple[Task, cf.Future]]:
    """Each run's outcome as it finishes: in this process (one worker), or on a pool of spawned processes."""
    if config.workers <= 1:
        for task in todo:
            outcome: cf.Future = cf.Future()
            try:
                outcome.set_result(worker.run(task, deadline, settings(task)))
            except Exception as e:  # one broken run must not lose the others
                outcome.set_exception(e)
            yield task, outcome
        return
    initargs = (config, worker.budget, worker.uses_miner)
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(
        config.workers, mp_context=ctx, initializer=_init_pool_worker, initargs=initargs
    ) as pool:
        futures = {pool.submit(_run_in_pool, task, deadline, settings(task)): task for task in todo}
        for done in cf.as_completed(futures):
            yield futures[done], done


def _miner_fingerprints(splits: dict[int, Any], miners: dict[int, Any]) -> dict[int, dict[str, str]]:
    """Per split, the codes its miner assigns to the validation rows: runs routed by a miner are comparable only
    when it assigns the same codes (a miner refitted on another CPU may not)."""
    prints = {}
    for s, miner in miners.items():
        codes = miner.assign(splits[s].valid).numpy().astype(np.int64)
        prints[s] = {"miner_codes_sha256": hashlib.sha256(codes.tobytes()).hexdigest()[:16]}
    return prints


def run_grid(config: GridConfig) -> GridResult:
    """Plan, train (or read back) and rank the grid; writes the files the module docstrings list.

    Raises:
        ConfigError: a bad plan or records store; :class:`StaleRunsError` for finished runs made with other
            settings (unless ``rerun_stale``).
    """
    import torch

    from mdctr.evaluation.leaderboard import read_run_store
    from mdctr.routing import budget_for_data

    t0 = time.time()
    deadline = t0 + config.deadline_s
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    plan = plan_grid(config)
    split_seeds = sorted({config.split_seed_of(seed) for seed in plan.seeds})
    splits = {s: prepare_split(config, s) for s in split_seeds}
    uses_miner = any(e.routing().needs_miner for e in plan.entries)
    miners = _fit_miners(config, splits) if uses_miner else {}
    # the budget is fitted on the first split (FLOPs do not depend on rows)
    budget = (
        None
        if config.no_cap
        else budget_for_data(splits[split_seeds[0]], config.budget, miners.get(split_seeds[0]))
    )
    fingerprints = _miner_fingerprints(splits, miners)
    base = grid_settings(config)
    configs = {e: resolved_config(e, config.train) for e in plan.entries}

    def settings(task: Task) -> dict[str, Any]:
        seed, entry = task
        own = base | configs[entry]
        return own | fingerprints[config.split_seed_of(seed)] if entry.routing().needs_miner else own

    try:
        store = read_run_store(config.records)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    records, todo = _read_back_all(config, plan, store, settings)
    resumed = len(records)
    (config.out / "runs").mkdir(parents=True, exist_ok=True)
    log.info(
        "%s: budget %s (%s FLOPs/sample), %d entries × %d seeds = %d runs (%d read back from %s) on %d workers",
        config.dataset, config.budget, budget, len(plan.entries), len(plan.seeds), len(plan.tasks), resumed,
        config.out, config.workers,
    )  # fmt: skip
    worker = _Worker(config, budget, uses_miner, splits, miners)
    skipped, failed = [], []
    for task, done in _execute(config, worker, todo, deadline, settings):
        seed, entry = task
        listed = [seed, entry.model, entry.overrides_json, entry.source]
        try:
            result = done.result()
        except Exception as e:  # listed, not hidden
            failed.append({"task": listed, "error": f"{type(e).__name__}: {e}"})
            log.error("run %s failed: %s", listed, e)
            continue
        if result is None:
            skipped.append(listed)
        else:
            records.append(result)
            log.info(
                "%s: valid AUC %.4f (%d/%d)",
                result["tag"],
                result["valid_auc"],
                len(records),
                len(plan.tasks),
            )
    if config.records is not None:
        write_text_atomic(config.records, store_lines(config.out, store, records))
    df = _write_leaderboard(config, splits, records, budget)
    write_json_atomic(config.out / "skipped.json", list(plan.skipped))
    result = GridResult(df, records, resumed, len(plan.tasks), skipped, failed, time.time() - t0)
    _write_grid_json(config, result, plan, budget)
    return result


def _read_back_all(
    config: GridConfig, plan: GridPlan, store: dict[str, dict], settings: Callable[[Task], dict]
) -> tuple[list[dict[str, Any]], list[Task]]:
    """The runs an earlier grid finished (from ``out``, else from the records store) and the runs to train."""
    records, todo, stale = [], [], []
    for task in plan.tasks:
        tag = run_tag(*task)
        earlier = None
        if config.resume:
            try:
                earlier = read_back(config.out, tag, settings(task))
                if earlier is None and tag in store:  # its predictions are not kept there
                    check_settings(store[tag]["settings"], settings(task), f"{config.records}: {tag}")
                    earlier = store[tag]["record"] | {"tag": tag}
            except ValueError as e:  # ran with other settings (e.g. a miner refitted on another CPU)
                stale.append(str(e))
        if earlier is None:
            store.pop(tag, None)  # trained again below, and its line replaced in the store
            todo.append(task)
        else:
            records.append(earlier)
    if stale and not config.rerun_stale:
        raise StaleRunsError(stale_message(stale))
    for why in stale:
        log.warning("training again: %s", why)
    return records, todo


def _write_leaderboard(
    config: GridConfig, splits: dict[int, Any], records: list[dict], budget: float | None
) -> Any:
    """The leaderboard of the finished runs (None when there are none), written to ``out``."""
    from mdctr.evaluation.leaderboard import RunRecord, build_leaderboard, write_leaderboard

    if not records:
        return None
    labels = {s: data.test.label.numpy() for s, data in splits.items()}
    runs = []
    for rec in records:
        where = probs_path(config.out, rec["tag"])
        # a run read from the records store alone has no predictions: the leaderboard then needs ≥ 2 seeds for
        # its tests
        probs = np.load(where).astype(np.float64) if where.is_file() else None
        fields = {k: v for k, v in rec.items() if k != "tag"}
        runs.append(RunRecord(**fields, labels=labels[config.split_seed_of(rec["seed"])], probs=probs))
    df = build_leaderboard(runs)
    # the schema's name (`ml-1m`, a table's `name:`), not the adapter's (`table`, which every table shares)
    name = next(iter(splits.values())).spec.schema.name
    kind = "Leaderboard at default sizes (no FLOP cap)" if config.no_cap else "FLOP-matched leaderboard"
    title = f"{kind}: {name}"
    df.attrs.update(budget=config.budget, budget_flops=budget, dataset=name, title=title)
    write_leaderboard(df, config.out, title=title)
    return df


def _write_grid_json(config: GridConfig, result: GridResult, plan: GridPlan, budget: float | None) -> None:
    import torch

    write_json_atomic(
        config.out / "grid.json",
        {
            "command": config.command,
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "device": device_name(config.train.device),
            "torch": torch.__version__,
            "wall_s": result.wall_s,
            "runs_finished": len(result.records),
            "runs_read_back": result.read_back,
            "runs_planned": result.planned,
            "skipped_by_deadline": result.skipped_by_deadline,
            "failed": result.failed,
            "unsupported": [[s["model"], s["domain_source"]] for s in plan.skipped],
            "budget_flops": budget,
        },
    )
