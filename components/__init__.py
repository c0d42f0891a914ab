"""KFP components: one lightweight component per pipeline step, each a thin adapter over ``mdctr.steps``.

Every component runs in the project image (``mdctr.image_ref()``, immutable per commit), installs nothing at
start, imports its step inside its body (the body is what KFP ships to the container), passes artifact paths and
logs metadata.

The Kubeflow UI shows a description beside every pipeline parameter and component input. KFP compiles them
from the ``Args:`` section of each function's docstring; :func:`described` writes that section from
:data:`DESCRIPTIONS`, so an input that several components share (``tracking_uri``, ``dataset``, …) is
described once. KFP ships only the function body to the container (decorators are dropped), so the decorator
costs nothing at run time.
"""

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: one description per input or output name; a component passes its own text for a name it uses differently
DESCRIPTIONS: dict[str, str] = {
    # the data
    "dataset": "Registered dataset adapter: ml-1m, epinions, ali-ccp, kuairand, synthetic or table.",
    "dataset_options": (
        'JSON object of the adapter\'s options, e.g. {"rows": 3000, "seed": 3} for synthetic; {} for none. '
        "A table's files come from source or a data version, never from options naming paths."
    ),
    "source": (
        "Local directory with the dataset's raw files, e.g. your table's data file and schema.yaml (local runs "
        "only: a pod cannot see it); wins over data_md5 and data_rev. Empty: not used."
    ),
    "data_md5": "DVC md5 of the data version to fetch (default: the one in data.dvc when the pipeline was compiled).",
    "dvc_remote": "DVC remote URL holding the data versions, e.g. s3://mdctr-data/dvcstore.",
    "data_rev": "Git revision of data.dvc to fetch instead of data_md5 (needs data_repo); empty: use data_md5.",
    "data_repo": "Git URL of the repository holding data.dvc, for data_rev; empty: not used.",
    "split": "How rows are split into train/valid/test 80/10/10: random (seeded) or time.",
    "split_seed": "Seed of the random split and of the domain miner.",
    "train_window": (
        "Time split only: train on this span right before the eval period, e.g. 30d, 36h or 50% of the time "
        "range; empty: every older row."
    ),
    "eval_period": (
        "Time split only: the newest span of time, e.g. 7d or 10%, halved by rows into validation (early "
        "stopping and the promotion gate) and test; empty: the newest 20% of rows."
    ),
    "warm_start": (
        "Start every entry from a trained model's weights: champion (the dataset's registered champion) or a "
        "bundle directory; vocabularies merged, width, dense scalers and the miner's codebook kept. Empty: "
        "train from scratch."
    ),
    "warm_start_fallback": (
        "What a warm start that cannot be carried (another model, width, config) does: error (fail the run) or "
        "cold (train that entry from scratch)."
    ),
    "canary_percent": (
        "When the gate passes and a champion exists: start the new version as the canary with this percent of "
        "traffic (1-99; `mdctr models promote --finish` completes it, `rollback` removes it); 0: make it "
        "champion at once."
    ),
    # what is trained
    "models": 'Registry keys of the models to train, e.g. ["dnn", "hamur", "adaptive2"].',
    "domain_sources": (
        "Routing sources to train each multi-domain model with: handcrafted, mined, none, and the controls "
        "random and binned; a model gets only the sources it accepts."
    ),
    "seeds": "Training seeds; every (model, source) entry is trained once per seed.",
    "flop_budget": (
        "Per-sample forward FLOP budget every model's width is fitted to: model:<key> (that model's default "
        "cost, e.g. model:dnn) or a number."
    ),
    "epochs": "Maximum epochs per training run (early stopping on validation AUC may end it sooner).",
    "train_options": (
        'JSON object of trainer settings (TrainConfig fields), e.g. {"batch_size": 4096, "lr": 0.001, '
        '"weight_decay": 1e-05, "patience": 2}; {} keeps the defaults.'
    ),
    "miner_options": (
        'JSON object of VQ-VAE miner settings (MinerConfig fields), e.g. {"num_codes": 4, "epochs": 3, '
        '"beta": 0.25}; {} keeps the defaults.'
    ),
    "train_backend": (
        "Where each train_model entry trains: task (in the task's own pod) or trainjob (a Kubeflow Trainer "
        "TrainJob, torch-distributed runtime, train_nodes pods; needs the RBAC in docs/deploy.md)."
    ),
    "train_nodes": "Pods (nodes) of each TrainJob when train_backend is trainjob; DDP over all of them.",
    "model_name": "Registry key of the model to train.",
    "domain_source": "Routing source of this entry (handcrafted, mined, none, random or binned).",
    "seed": "Seed of this training run.",
    # tracking and promotion
    "tracking_uri": (
        "MLflow tracking server every task logs to, e.g. http://mlflow.mlflow.svc:5000 (required on a cluster)."
    ),
    "parent_run_id": "MLflow run id of this pipeline run's parent run (from start_run).",
    "kfp_run_id": "The KFP run id, recorded on the MLflow parent run.",
    "promotion_tolerance": (
        "Largest per-domain validation AUC drop the gate accepts when the challenger beats the champion overall."
    ),
    "tolerance": "Largest per-domain validation AUC drop the gate accepts when the challenger beats the champion.",
    "registered_model": (
        "MLflow registered model the winner is registered under; empty: the dataset's own, mdctr-<dataset>."
    ),
    "serving_namespace": "Kubernetes namespace of the KServe InferenceService manifest.",
    # artifacts
    "raw": "The fetched raw dataset files.",
    "prepared": "Prepared train/valid/test parquet splits and the feature spec.",
    "domains": "The fitted domain miner, the codes of every row and the domain report.",
    "run": "Carries the MLflow parent run id in its metadata.",
    "results": "Training results: metrics, per-domain metrics, history and predictions.",
    "bundles": "Serving bundles of every trained entry.",
    "bundle": "Serving bundle: weights, feature spec and (when routed by mined domains) the miner.",
    "winner": "Serving bundle of the winning entry (highest mean validation AUC; not a control unless allowed).",
    "promote_controls": (
        "Let an entry routed by a control source (random, binned) win and be registered and promoted; false: "
        "controls are baselines, shown on the leaderboard only."
    ),
    "registration": "The registered version, its model URI and the gate decision with its reason.",
    "metrics": "Scalar metrics shown in the KFP UI.",
    "status": "Final status of the pipeline's tasks (filled in by KFP).",
}


def described(**own: str) -> Callable[[F], F]:
    """Append an ``Args:`` section describing every parameter of the decorated function.

    ``own`` overrides :data:`DESCRIPTIONS` for this function; a parameter described nowhere is an error at
    import time, so a new input cannot reach the Kubeflow UI undocumented.
    """

    def wrap(func: F) -> F:
        import inspect

        names = list(inspect.signature(func).parameters)
        missing = [n for n in names if n not in own and n not in DESCRIPTIONS]
        if missing:
            raise KeyError(
                f"{func.__name__}: no description for {missing}; add them to components.DESCRIPTIONS"
            )
        # a summary line first: a docstring that starts with "Args:" is read as having no Args section
        doc = inspect.cleandoc(func.__doc__ or func.__name__.replace("_", " ").capitalize() + ".")
        args = "\n".join(f"    {n}: {own.get(n) or DESCRIPTIONS[n]}" for n in names)
        func.__doc__ = f"{doc}\n\nArgs:\n{args}\n"
        return func

    return wrap
