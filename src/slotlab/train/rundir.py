"""The run directory: what a run writes besides its checkpoints, and opening one to train in.

A run directory holds `config.yaml` (the full resolved config), `checkpoints/step_N.pt`
(`slotlab.train.checkpoint`), `metrics.jsonl` (one JSON object per log line: training
loss/lr/throughput, and evaluations), TensorBoard event files in `tensorboard/`, slot pictures in
`images/`, and at the end `model/` (safetensors + config.json, loadable with
`slotlab.load_pretrained`).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import yaml

from slotlab.errors import CheckpointError, ConfigError
from slotlab.io import atomic_write
from slotlab.schema import to_dict
from slotlab.train.checkpoint import list_checkpoints, newest_checkpoint
from slotlab.train.config import TrainConfig, config_from_dict

Checkpoint = tuple[int, Path, dict[str, Any]]  # (step, path, contents)


def check_run_dir(run_dir: Path, cfg: TrainConfig) -> None:
    """Create the run directory or check an existing one: writable, a slotlab run (or empty),
    of the same task, and, where it has checkpoints, of the same model settings."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as exc:
        raise ConfigError(f"run directory {run_dir} is not writable ({exc.strerror})") from None
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        if any(run_dir.iterdir()):
            raise ConfigError(f"{run_dir} is not empty and is not a slotlab run directory")
        return
    try:
        old = config_from_dict(yaml.safe_load(config_file.read_text()))
    except (ConfigError, yaml.YAMLError, TypeError) as exc:
        raise ConfigError(f"{config_file} is not a slotlab run config ({exc})") from None
    if old.task != cfg.task:
        raise ConfigError(
            f"run directory {run_dir} holds a {old.task} run; use another --out for {cfg.task}"
        )
    before, now = to_dict(old.model), to_dict(cfg.model)
    changed = [k for k in now if before.get(k) != now[k]]
    if changed and list_checkpoints(run_dir):
        diffs = ", ".join(f"{k} {before.get(k)} -> {now[k]}" for k in changed)
        raise ConfigError(
            f"run directory {run_dir} holds checkpoints of a model with other settings "
            f"({diffs}); resume it with the same preset and model options, or use another --out"
        )


def write_run_config(run_dir: Path, cfg: TrainConfig) -> None:
    """Write `config.yaml` (atomically)."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    atomic_write(run_dir / "config.yaml", lambda f: f.write(text.encode()))


def open_run(run_dir: Path, cfg: TrainConfig, is_main: bool = True) -> Checkpoint | None:
    """Open a run directory to train in; returns its newest readable checkpoint (None for a new
    run). The main process checks the directory and writes `config.yaml`, only once the run is
    known to be resumable: a directory whose checkpoints all fail to load is refused in one
    `CheckpointError` and left as it is (training from step 0 would overwrite the run)."""
    if is_main:
        check_run_dir(run_dir, cfg)
    try:
        newest = newest_checkpoint(run_dir)
    except CheckpointError as exc:
        raise CheckpointError(
            f"run directory {run_dir} cannot be resumed: {exc}; to keep it as it is, start a "
            f"new run with another --out (or move {run_dir / 'checkpoints'} away to start this "
            "run over)"
        ) from None
    if is_main:
        write_run_config(run_dir, cfg)
    return newest


class MetricsLog:
    """metrics.jsonl (+ TensorBoard). On resume, lines past the resumed step are dropped."""

    def __init__(self, run_dir: Path, resume_step: int):
        self.path = run_dir / "metrics.jsonl"
        if self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.file = self.path.open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1)
        except ImportError:  # tensorboard is a dependency, but keep training without it
            self.writer = None

    def log(self, record: dict[str, Any], prefix: str) -> None:
        """Append `record` (it has a "step") to metrics.jsonl; its finite numbers also go to
        TensorBoard as `prefix/key`."""
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                    self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()
