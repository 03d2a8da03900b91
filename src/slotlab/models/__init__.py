"""The two official Slot Attention models and SAVi (video), their typed configs and a builder by
task name."""

from __future__ import annotations

from typing import Any

from torch import nn

from slotlab.errors import ConfigError
from slotlab.models.config import (
    RETIRED_OPTIONS,
    ModelConfig,
    ObjectDiscoveryConfig,
    SAViConfig,
    SetPredictionConfig,
)
from slotlab.models.object_discovery import ObjectDiscoveryOutput, SlotAttentionAutoEncoder
from slotlab.models.savi import SAVi, SAViOutput
from slotlab.models.set_prediction import SetPredictionOutput, SlotAttentionSetPredictor
from slotlab.schema import from_dict
from slotlab.tasks import normalize_task

MODELS: dict[str, type[nn.Module]] = {
    "object_discovery": SlotAttentionAutoEncoder,
    "set_prediction": SlotAttentionSetPredictor,
    "video": SAVi,
}
CONFIGS: dict[str, type] = {
    "object_discovery": ObjectDiscoveryConfig,
    "set_prediction": SetPredictionConfig,
    "video": SAViConfig,
}


def model_config(task: str, values: ModelConfig | dict[str, Any] | None = None) -> ModelConfig:
    """The typed config of `task`'s model from a config or a mapping of its fields (validated:
    an unknown or mistyped key is one `ConfigError` line)."""
    task = normalize_task(task)
    cls = CONFIGS[task]
    if isinstance(values, cls):
        return values
    if values is not None and not isinstance(values, dict):
        raise TypeError(f"the {task} model needs a {cls.__name__}, got {type(values).__name__}")
    values = dict(values or {})
    for key, value in RETIRED_OPTIONS.get(task, {}).items():
        if key in values and values.pop(key) != value:
            raise ConfigError(f"model option {key} was removed from slotlab: only {key}: "
                              f"{value!r} (today's model) still loads")
    return from_dict(cls, values, where="model")


def build_model(task: str, config: ModelConfig | dict[str, Any] | None = None,
                **overrides: Any) -> nn.Module:
    """The model of `task` ("object_discovery", "set_prediction" or "video") from its config (a
    dataclass or a mapping) and keyword `overrides` of its fields; defaults are the official
    models."""
    task = normalize_task(task)
    values = model_config(task, config)
    return MODELS[task](values, **overrides)


def model_task(model: nn.Module) -> str:
    """The task name of a model instance."""
    for task, cls in MODELS.items():
        if isinstance(model, cls):
            return task
    raise TypeError(f"{type(model).__name__} is not a slotlab model")


__all__ = [
    "CONFIGS",
    "MODELS",
    "ModelConfig",
    "ObjectDiscoveryConfig",
    "ObjectDiscoveryOutput",
    "SAVi",
    "SAViConfig",
    "SAViOutput",
    "SetPredictionConfig",
    "SetPredictionOutput",
    "SlotAttentionAutoEncoder",
    "SlotAttentionSetPredictor",
    "build_model",
    "model_config",
    "model_task",
]
