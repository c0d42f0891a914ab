"""Training: one fast trainer (:func:`fit`), prediction, metrics, and domain-source routing."""

from mdctr.training.config import TrainConfig
from mdctr.training.domains import DomainSourceError, apply_domain_source, check_domain_source
from mdctr.training.metrics import evaluate_predictions
from mdctr.training.run import TrainedModel, model_inputs, train_model
from mdctr.training.trainer import FitResult, TrainingError, fit, latest_checkpoint, predict

__all__ = [
    "DomainSourceError",
    "FitResult",
    "TrainConfig",
    "TrainedModel",
    "TrainingError",
    "apply_domain_source",
    "check_domain_source",
    "evaluate_predictions",
    "fit",
    "latest_checkpoint",
    "model_inputs",
    "predict",
    "train_model",
]
