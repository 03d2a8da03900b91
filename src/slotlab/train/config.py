"""Training configuration: a dataclass, named presets (`configs/*.yaml`) and the LR schedule."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slotlab.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class TrainConfig:
    """Everything a training run depends on; written to RUN_DIR/config.yaml.

    Defaults are the official object-discovery settings; `model` holds constructor arguments of
    the model class that differ from the official defaults, `data_options` keyword arguments of
    `build_dataset`.
    """

    task: str = "object_discovery"
    data: str = "procedural"
    preset: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    steps: int = 500_000
    learning_rate: float = 4e-4
    warmup_steps: int = 10_000
    decay_rate: float = 0.5
    decay_steps: int = 100_000
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    compile: bool = False
    cuda_graphs: bool = False  # CUDA only: torch.compile(mode="reduce-overhead")
    pad_last_layer: int | None = None  # None: 8 on CUDA (object discovery), off on the CPU
    channels_last: bool | None = None  # None: on for CUDA, and for set prediction on the CPU
    num_workers: int | None = None
    grad_clip: float | None = None
    ema_decay: float | None = None  # evaluate and save an EMA of the weights (train/ema.py)
    mixture_sigma: float | None = None  # object discovery: Gaussian-mixture loss, not MSE
    mask_entropy: float | None = None  # object discovery: + this weight x the masks' entropy
    set_loss: str = "huber"  # set prediction: "huber" (official) or "bce" (hungarian_bce_loss)
    log_every: int = 100
    eval_every: int = 5_000
    eval_num: int = 256
    eval_split: str = "val"
    image_every: int = 5_000
    checkpoint_every: int = 1_000
    keep_checkpoints: int = 3
    deterministic: bool = False
    max_minutes: float | None = None  # stop (and finish the run) after this much training time

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The settings of preset `name` (a file in configs/, or a path to a YAML file)."""
    path = Path(name)
    if not path.is_file():
        path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"preset file {path} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"preset file {path} does not hold a mapping")
    return values


def make_config(preset: str | None = None, **overrides: Any) -> TrainConfig:
    """Preset values, then `overrides` (None values are ignored), checked against the fields."""
    values: dict[str, Any] = {}
    if preset:
        values.update(load_preset(preset))
        values["preset"] = preset
    values.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(values)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
    cfg = TrainConfig(**values)
    cfg.task = cfg.task.replace("-", "_")
    if cfg.task not in ("object_discovery", "set_prediction"):
        raise ConfigError(f"unknown task {cfg.task!r}")
    for name in ("batch_size", "steps", "log_every", "checkpoint_every", "keep_checkpoints"):
        if int(getattr(cfg, name)) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.ema_decay is not None and not 0 < cfg.ema_decay < 1:
        raise ConfigError(f"ema_decay must be between 0 and 1 (e.g. 0.999), got {cfg.ema_decay}")
    if cfg.mixture_sigma is not None:
        if cfg.task != "object_discovery":
            raise ConfigError("mixture_sigma is a reconstruction loss: object discovery only")
        if not cfg.mixture_sigma > 0:
            raise ConfigError(f"mixture_sigma must be > 0 (e.g. 0.2), got {cfg.mixture_sigma}")
    if cfg.mask_entropy is not None:
        if cfg.task != "object_discovery":
            raise ConfigError("mask_entropy is a penalty on the masks: object discovery only")
        if not cfg.mask_entropy >= 0:
            raise ConfigError(f"mask_entropy must be >= 0 (e.g. 0.005), got {cfg.mask_entropy}")
    if cfg.set_loss not in ("huber", "bce"):
        raise ConfigError(f"set_loss must be 'huber' (official) or 'bce', got {cfg.set_loss!r}")
    if cfg.set_loss != "huber" and cfg.task != "set_prediction":
        raise ConfigError("set_loss is the set-prediction loss: set prediction only")
    return cfg


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Official schedule at `step` (0-based, before the update): linear warm-up times
    decay_rate ** (step / decay_steps); the decay also applies during warm-up; 0 at step 0."""
    warmup = step / cfg.warmup_steps if step < cfg.warmup_steps else 1.0
    return cfg.learning_rate * warmup * cfg.decay_rate ** (step / cfg.decay_steps)
