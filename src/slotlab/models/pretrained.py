"""Shared model files: `model.safetensors` + `config.json` (no pickle, safe to load)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from slotlab.errors import CheckpointError, ConfigError
from slotlab.io import atomic_write_files
from slotlab.models import build_model, model_task
from slotlab.schema import to_dict

FORMAT = "slotlab-model"
VERSION = 2
# Version 1 kept the initial slots and the locality width inside Slot Attention.
VERSION_1_KEYS = {
    "slot_attention.slots_mu": "slot_init.slots_mu",
    "slot_attention.slots_log_sigma": "slot_init.slots_log_sigma",
    "slot_attention.slots_queries": "slot_init.slots_queries",
    "slot_attention.locality_log_width": "slot_attention.attention_bias.log_width",
}


def save_pretrained(model: nn.Module, out_dir: str | Path, **extra: Any) -> Path:
    """Write `model.safetensors` and `config.json` (task, constructor config, `extra` info).

    Both files are written completely before either replaces a file of an existing `out_dir`
    (a new `out_dir` appears whole), so a failed write (disk full: one `slotlab.io.WriteError`)
    leaves the previous model as it was."""
    out = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = safetensors_bytes(state)
    config = {"format": FORMAT, "version": VERSION, "task": model_task(model),
              "config": to_dict(model.config), **extra}
    text = (json.dumps(config, indent=2) + "\n").encode()
    atomic_write_files(out, {"model.safetensors": lambda f: f.write(weights),
                             "config.json": lambda f: f.write(text)}, "model directory")
    return out


def load_pretrained(model_dir: str | Path, map_location: str = "cpu") -> nn.Module:
    """Load a model written by `save_pretrained` / `slotlab convert-tf` (eval mode)."""
    model_dir = Path(model_dir)
    config_path, weights_path = model_dir / "config.json", model_dir / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist: not a slotlab model directory")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} is not a slotlab model config")
    try:
        model = build_model(config["task"], config["config"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{config_path} has an invalid model config ({exc})") from None
    try:
        state = load_file(str(weights_path), device=map_location)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights_path} is not a valid safetensors file ({exc})") from None
    if config.get("version") == 1:
        state = {VERSION_1_KEYS.get(k, k): v for k, v in state.items()}
    elif config.get("version") != VERSION:
        raise CheckpointError(f"{config_path} is slotlab model format version "
                              f"{config.get('version')!r}; this slotlab reads versions 1-{VERSION}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{weights_path} does not match {config_path} ({first})") from None
    return model.eval()
