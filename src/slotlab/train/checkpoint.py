"""Training checkpoints: atomic writes, safe loading, and loading a model from a run directory.

A training checkpoint (`RUN_DIR/checkpoints/step_00001000.pt`) holds only tensors and plain
Python values (model and optimizer state, step, RNG states, config), so it loads with
`torch.load(weights_only=True)`: a file crafted to run code when unpickled is refused.
Writes go to a temporary file that is fsynced and then renamed over the final name, so a process
killed while writing never leaves a half-written checkpoint in place of a good one, and a write
that fails (disk full) is one `CheckpointError` with the previous checkpoint kept.
"""

from __future__ import annotations

import pickle
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slotlab.errors import CheckpointError, ConfigError
from slotlab.io import atomic_write, write_hint

CHECKPOINT_DIR = "checkpoints"
MODEL_DIR = "model"
_STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in a run directory, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _STEP_FILE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write `state` atomically as the checkpoint of `step`; keep the newest `keep` ones. A
    failed write (disk full, ...) is one `CheckpointError`; the earlier checkpoints are kept."""
    path = checkpoint_path(run_dir, step)
    try:
        atomic_write(path, lambda f: torch.save(state, f))
    except OSError as exc:  # slotlab.io.WriteError
        hint = write_hint(exc.errno)
        raise CheckpointError(
            f"could not write checkpoint {path} ({exc.strerror or 'write failed'}); the "
            f"previous checkpoint is kept{'; ' + hint if hint else ''}"
        ) from None
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training checkpoint safely (`weights_only=True`); whatever is wrong with the file
    is one `CheckpointError` (torch's own warnings about the file are not shown). Its `reason`
    says what is wrong in a few words."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if _names_a_global(exc) or _pickle_builds_objects(path):
            raise _unreadable(
                path, "it holds Python objects other than tensors and plain values, which could "
                "run code when loaded; refused",
                f"{path} was refused: it contains Python objects other than tensors and plain "
                "values (it could run code when loaded), so it is not a slotlab checkpoint",
            ) from None
        raise _unreadable(path, _damage(path)) from None
    except (PermissionError, FileNotFoundError, IsADirectoryError) as exc:
        raise _unreadable(path, f"cannot be read: {exc.strerror or exc}") from None
    except Exception:  # corrupt bytes make torch.load raise many types (KeyError, ...)
        raise _unreadable(path, _damage(path)) from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise _unreadable(path, "not a slotlab training checkpoint (no model or step)")
    return state


def _damage(path: Path) -> str:
    """What is wrong with a file torch.load failed on, in a few words."""
    return "damaged or truncated" if _looks_like_torch_save(path) else \
        "not a file written by torch.save"


def _unreadable(path: Path, reason: str, message: str | None = None) -> CheckpointError:
    """A CheckpointError "PATH is not a readable checkpoint (REASON)" with `.reason` set."""
    error = CheckpointError(message or f"{path} is not a readable checkpoint ({reason})")
    error.reason = reason  # type: ignore[attr-defined]
    return error


def _names_a_global(exc: pickle.UnpicklingError) -> bool:
    """Whether torch's weights-only unpickler refused a Python object that the pickle names
    (a `module.name`), rather than failing on bytes that are no pickle at all."""
    return re.search(r"GLOBAL [A-Za-z_]\w*(\.[A-Za-z_]\w*)+", str(exc)) is not None


# Pickle opcodes that import a name or call one: what a checkpoint of tensors never needs
# outside torch's own zip format (which torch's weights-only unpickler checks itself).
_OBJECT_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX",
                   "BUILD", "EXT1", "EXT2", "EXT4"}


def _pickle_builds_objects(path: Path) -> bool:
    """Whether `path` is a complete pickle stream that imports or calls Python names (read with
    `pickletools`, which runs nothing). torch's legacy loader cannot read pickle protocols 4 and
    5, so it cannot say so itself; random bytes are not a complete pickle."""
    import io
    import pickletools

    try:
        data = path.read_bytes()
        with warnings.catch_warnings():  # e.g. string escapes of random bytes
            warnings.simplefilter("ignore")
            # the whole stream first, with its stack checked: random bytes fail here
            pickletools.dis(data, out=io.StringIO())
            return any(op.name in _OBJECT_OPCODES for op, _, _ in pickletools.genops(data))
    except Exception:  # not a pickle (an unknown opcode, cut short): damaged, not dangerous
        return False


def _looks_like_torch_save(path: Path) -> bool:
    """Whether a file starts like torch.save output: a zip archive, or a pickle stream."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return head == b"PK" or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def newest_checkpoint(run_dir: Path) -> tuple[int, Path, dict[str, Any]] | None:
    """(step, path, contents) of the newest readable checkpoint of a run; None where it has no
    checkpoint. Unreadable newer ones are skipped with a one-line warning each; when none can
    be read, one `CheckpointError` says so."""
    found = list_checkpoints(run_dir)
    skipped: list[tuple[Path, str]] = []
    for step, path in reversed(found):
        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            skipped.append((path, getattr(exc, "reason", str(exc))))
            continue
        for bad, reason in skipped:
            print(f"warning: skipping checkpoint {bad} ({reason}); using {path.name} (step "
                  f"{step}) instead", file=sys.stderr)
        return step, path, state
    if found:
        newest, reason = skipped[0]
        raise CheckpointError(f"no checkpoint in {Path(run_dir) / CHECKPOINT_DIR} can be read "
                              f"({len(found)} tried; the newest, {newest.name}: {reason})")
    return None


def latest_checkpoint(run_dir: Path) -> tuple[int, dict[str, Any]] | None:
    """(step, contents) of the newest readable checkpoint of a run, as `newest_checkpoint`."""
    newest = newest_checkpoint(run_dir)
    return None if newest is None else (newest[0], newest[2])


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: Path,
                 hint: str = "") -> None:
    """`model.load_state_dict(weights)`, or one `CheckpointError` when the weights do not fit
    the model: other parameter names (another model layout) or other shapes. `hint` ends the
    message (what to do instead)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        parts = [f"{len(names)} {what} weights, e.g. {names[0]}" for what, names in
                 (("missing", missing), ("unknown", unexpected)) if names]
        raise CheckpointError(f"{source} was written by another model layout "
                              f"({'; '.join(parts)}){hint}")
    for key, value in weights.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{source} holds a model of other sizes ({key} has shape {tuple(value.shape)}, "
                f"this model's {tuple(expected[key].shape)}){hint}")
    model.load_state_dict(weights)


def read_run_config(run_dir: str | Path) -> Any:
    """The `TrainConfig` of a run directory's config.yaml; a file that cannot be read, is not
    YAML, is empty or is not a slotlab run config is one `ConfigError`."""
    from slotlab.train.config import config_from_dict, read_yaml

    path = Path(run_dir) / "config.yaml"
    values = read_yaml(path, "run config")
    if not values:
        raise ConfigError(f"run config {path} is empty, so {Path(run_dir)} cannot be used as a "
                          "run directory (restore the file, or use another directory)")
    try:
        return config_from_dict(values)
    except (ConfigError, TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"run config {path} is not a slotlab run config ({first})") from None


def load_model(path: str | Path, device: str | torch.device = "cpu",
               checkpoint: str | None = None) -> tuple[nn.Module, dict]:
    """A model in eval mode from a RUN_DIR (newest checkpoint, else RUN_DIR/model) or a MODEL_DIR;
    with `checkpoint` (a step, or a checkpoint file's path) that checkpoint of a RUN_DIR. A run
    trained with `ema_decay` gives its averaged weights, the ones it evaluated and saved.

    Returns (model, info) with info["task"], info["data"] (training data spec or None),
    info["step"] (or None) and info["config"] (the run's TrainConfig as a dict, or None).
    """
    from slotlab.models.pretrained import load_pretrained

    path = Path(path)
    if checkpoint is not None and not (path / "config.yaml").is_file():
        raise ConfigError(f"{path} is not a run directory (no config.yaml): --checkpoint needs one")
    if not path.exists():
        raise CheckpointError(f"{path} does not exist (expected a run directory or a model "
                              "directory)")
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        model = load_pretrained(path, map_location=str(device))
        return model, {"task": _task_of(model), "data": None, "step": None, "config": None}
    config_file = path / "config.yaml"
    if not config_file.is_file():
        raise CheckpointError(
            f"{path} is neither a run directory (no config.yaml) nor a model directory "
            "(no config.json + model.safetensors)"
        )
    cfg = read_run_config(path)
    info = {"task": cfg.task, "data": cfg.data, "step": None, "config": cfg.to_dict()}
    if checkpoint is not None:
        file = _checkpoint_file(path, checkpoint)
        state = load_checkpoint(file)
        step = state.get("step")
        return run_model(path, cfg, state, step, file).to(device).eval(), {**info, "step": step}
    try:
        newest = newest_checkpoint(path)
    except CheckpointError:  # none readable: the final model, where the run has one
        if not (path / MODEL_DIR / "config.json").is_file():
            raise
        newest = None
    if newest is None:
        if (path / MODEL_DIR / "config.json").is_file():
            return load_pretrained(path / MODEL_DIR, map_location=str(device)), info
        raise CheckpointError(f"{path} has no checkpoint yet")
    step, checkpoint, state = newest
    return run_model(path, cfg, state, step, checkpoint).to(device).eval(), {**info, "step": step}


def _checkpoint_file(run_dir: Path, checkpoint: str) -> Path:
    """The file of a run's checkpoint given as a step or a path; one error line if it is not
    there."""
    if not checkpoint.isdigit():
        path = Path(checkpoint)
        if not path.is_file():
            raise ConfigError(f"checkpoint {path} does not exist")
        return path
    path = checkpoint_path(run_dir, int(checkpoint))
    if not path.is_file():
        steps = [str(step) for step, _ in list_checkpoints(run_dir)]
        raise ConfigError(f"{run_dir} has no checkpoint of step {checkpoint}; it has "
                          f"steps {', '.join(steps) or 'none'}")
    return path


def run_model(run_dir: Path, cfg: Any, state: dict, step: int | None, path: Path) -> nn.Module:
    """The model of a run's checkpoint `state` (of `step`, read from `path`): its averaged
    weights where it has them, and the test-time settings chosen for that step, if any
    (`slotlab.train.test_time`)."""
    from slotlab.models import build_model
    from slotlab.train.test_time import apply_test_time, recorded_choice

    model = build_model(cfg.task, cfg.model)
    load_weights(model, state.get("ema", state["model"]), path,
                 "; this version of slotlab cannot load it")
    choice = recorded_choice(run_dir, step)
    if choice:
        apply_test_time(model, **choice)
    return model


def _task_of(model: nn.Module) -> str:
    from slotlab.models import model_task

    return model_task(model)
