"""The training pipeline's parameters, each with its default, defined once (:class:`PipelineArguments`).

``pipelines/training.py`` compiles these defaults into the pipeline, :func:`mdctr.pipeline.run_local` and
:func:`mdctr.pipeline.submit` take one, and ``mdctr pipeline run`` builds one from its options.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mdctr.config import ConfigError
from mdctr.steps.plan_runs import DEFAULT_DOMAIN_SOURCES

#: the repository root: ``pipelines/`` and ``components/`` live beside ``src/``
PROJECT_ROOT = Path(__file__).resolve().parents[3]
#: the data a local run reads by default: a copy of ``DATASETS_DIR`` (the compiled default fetches the data
#: version committed with the code from the DVC remote)
LOCAL_DATA_REV = "local"
#: what a training entry does when a warm start cannot be carried over
WARM_START_FALLBACKS = ("error", "cold")


def _registered_models() -> tuple[str, ...]:
    from mdctr.models import model_names

    return tuple(model_names())


def _flop_budget_default() -> str:
    from mdctr.routing import FLOP_BUDGET_DEFAULT

    return FLOP_BUDGET_DEFAULT


def _max_epochs_default() -> int:
    # a cap: early stopping on validation AUC ends a run (the trainer's default, one definition)
    from mdctr.training import TrainConfig

    return TrainConfig().epochs


def _committed_data_md5() -> str:
    """The md5 of the data version committed with this code (``data.dvc``), '' without one."""
    from mdctr import versioning

    dvc_file = PROJECT_ROOT / versioning.DVC_FILE
    return versioning.data_version_md5(dvc_file) if dvc_file.is_file() else ""


def _committed_dvc_remote() -> str:
    from mdctr import versioning

    return versioning.default_remote_url(PROJECT_ROOT)


#: fields that are JSON objects in Python and JSON text as pipeline parameters
_JSON_FIELDS = ("dataset_options", "train_options", "miner_options")


@dataclass(frozen=True)
class PipelineArguments:
    """Every parameter of the training pipeline (``pipelines/training.py``) with the default compiled into it.

    The defaults are a cluster run's: the data version is the DVC md5 in ``data.dvc`` (read from the DVC remote
    without git), models are the registry's, domain sources :data:`DEFAULT_DOMAIN_SOURCES` (no controls), three
    seeds. :meth:`local` gives a run on this machine's. docs/pipeline.md ("Parameters") says what each one does.
    ``*_options`` are JSON objects; :meth:`kfp_arguments` gives the mapping the pipeline function takes. Values
    the pipeline would refuse only in a later task are refused here, with a :class:`ConfigError` naming them.
    """

    dataset: str = "ml-1m"
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    data_md5: str = field(default_factory=_committed_data_md5)
    dvc_remote: str = field(default_factory=_committed_dvc_remote)
    data_rev: str = ""
    data_repo: str = ""
    source: str = ""
    split: str = "random"
    split_seed: int = 0
    train_window: str = ""
    eval_period: str = ""
    models: Sequence[str] = field(default_factory=_registered_models)
    domain_sources: Sequence[str] = DEFAULT_DOMAIN_SOURCES
    seeds: Sequence[int] = (0, 1, 2)
    flop_budget: str = field(default_factory=_flop_budget_default)
    epochs: int = field(default_factory=_max_epochs_default)
    train_options: Mapping[str, Any] = field(default_factory=dict)
    train_backend: str = "task"
    train_nodes: int = 2
    miner_options: Mapping[str, Any] = field(default_factory=dict)
    warm_start: str = ""
    warm_start_fallback: str = "error"
    tracking_uri: str = ""
    promotion_tolerance: float = 0.002
    promote_controls: bool = False
    canary_percent: int = 0
    registered_model: str = ""
    serving_namespace: str = "mdctr"

    def __post_init__(self) -> None:
        normal = {
            "models": tuple(str(m) for m in self.models),
            "domain_sources": tuple(str(s) for s in self.domain_sources),
            "seeds": tuple(int(s) for s in self.seeds),
            **{name: dict(getattr(self, name)) for name in _JSON_FIELDS},
        }
        for name, value in normal.items():
            object.__setattr__(self, name, value)
        self._check_periods()

    @classmethod
    def local(cls, **values: Any) -> PipelineArguments:
        """The arguments of a run on this machine: the data a copy of ``DATASETS_DIR`` (``data_rev`` ``local``)
        instead of the committed data version on the DVC remote, and one seed; ``values`` override."""
        return cls(**{"data_rev": LOCAL_DATA_REV, "data_md5": "", "dvc_remote": "", "seeds": (0,), **values})

    def kfp_arguments(self) -> dict[str, Any]:
        """The pipeline function's keyword arguments: lists for the sequences, JSON text for the options."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("models", "domain_sources", "seeds"):
            out[name] = list(out[name])
        for name in _JSON_FIELDS:
            out[name] = json.dumps(out[name])
        return out

    def _check_periods(self) -> None:
        """Periods with a random split, an unparsable span or an unknown fallback fail here, before any task
        starts (a dataset without a time column fails in the prepare task, naming the dataset)."""
        if self.warm_start_fallback not in WARM_START_FALLBACKS:
            raise ConfigError(
                f"--warm-start-fallback must be error or cold; got {self.warm_start_fallback!r} "
                "(parameter warm_start_fallback)"
            )
        if (self.train_window or self.eval_period) and self.split != "time":
            given = "--train-window" if self.train_window else "--eval-period"
            raise ConfigError(
                f"{given} selects periods by time: it cannot be used with --split {self.split} "
                "(parameters train_window, eval_period, split)"
            )
        for option, text in (("--train-window", self.train_window), ("--eval-period", self.eval_period)):
            if text:
                from mdctr.data.encode import parse_span

                parse_span(text, option=option)
