"""The two official Slot Attention models and a builder by task name."""

from __future__ import annotations

from typing import Any

from torch import nn

from slotlab.models.object_discovery import ObjectDiscoveryOutput, SlotAttentionAutoEncoder
from slotlab.models.set_prediction import SetPredictionOutput, SlotAttentionSetPredictor

MODELS: dict[str, type[nn.Module]] = {
    "object_discovery": SlotAttentionAutoEncoder,
    "set_prediction": SlotAttentionSetPredictor,
}


def build_model(task: str, **config: Any) -> nn.Module:
    """Build the model of `task` ("object_discovery" or "set_prediction"); `config` overrides
    the official defaults (constructor arguments of the model class)."""
    task = task.replace("-", "_")
    if task not in MODELS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(MODELS)}")
    return MODELS[task](**config)


def model_task(model: nn.Module) -> str:
    """The task name of a model instance."""
    for task, cls in MODELS.items():
        if isinstance(model, cls):
            return task
    raise TypeError(f"{type(model).__name__} is not a slotlab model")


__all__ = [
    "MODELS",
    "ObjectDiscoveryOutput",
    "SetPredictionOutput",
    "SlotAttentionAutoEncoder",
    "SlotAttentionSetPredictor",
    "build_model",
    "model_task",
]
