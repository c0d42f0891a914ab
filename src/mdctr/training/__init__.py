"""Training: one fast trainer (:func:`fit`), prediction, metrics, and :func:`train_model` (route, fit the
width to the budget, train, evaluate on test) over the routing layer :mod:`mdctr.routing`."""

from mdctr.training.calibration import Calibration, fit_calibration
from mdctr.training.config import TrainConfig
from mdctr.training.metrics import evaluate_predictions
from mdctr.training.run import TrainedModel, train_model
from mdctr.training.trainer import FitResult, TrainingError, fit, latest_checkpoint, predict, predict_logits

__all__ = [
    "Calibration",
    "FitResult",
    "TrainConfig",
    "TrainedModel",
    "TrainingError",
    "evaluate_predictions",
    "fit",
    "fit_calibration",
    "latest_checkpoint",
    "predict",
    "predict_logits",
    "train_model",
]
