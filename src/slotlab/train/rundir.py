"""The run directory: what a run writes besides its checkpoints, and opening one to train in.

A run directory holds `config.yaml` (the full resolved config), `checkpoints/step_N.pt`
(`slotlab.train.checkpoint`), `metrics.jsonl` (one JSON object per log line: training
loss/lr/throughput, and evaluations), one TensorBoard event file in `tensorboard/` (the same
scalars, and the slot pictures as images), slot pictures in `images/`, `untrained.json` (the
starting model's figures), and at the end `model/` (safetensors + config.json, loadable with
`slotlab.load_pretrained`) and, for a run that chooses its test-time K and T, `test_time.json`
(`slotlab.train.test_time`).

A resumed run continues both logs from the step it resumes at: what was logged after that step
(by a run stopped between checkpoints) is dropped, and the TensorBoard events logged up to it are
copied into the new event file, which replaces the old ones, so every curve is one line without
overlapping steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from slotlab.errors import CheckpointError, ConfigError
from slotlab.io import WriteError, atomic_write, os_error_in
from slotlab.schema import to_dict
from slotlab.train.checkpoint import list_checkpoints, newest_checkpoint, read_run_config
from slotlab.train.config import TrainConfig

Checkpoint = tuple[int, Path, dict[str, Any]]  # (step, path, contents)


def check_run_dir(run_dir: Path, cfg: TrainConfig) -> None:
    """Create the run directory or check an existing one: writable, a slotlab run (or empty),
    of the same task, and, where it has checkpoints, of the same model settings."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file, not a run directory; give a directory "
                          "path (a new one starts a run, an existing run is resumed)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as exc:
        raise ConfigError(f"run directory {run_dir} is not writable ({exc.strerror})") from None
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        if any(run_dir.iterdir()):
            raise ConfigError(f"{run_dir} is not empty and is not a slotlab run directory (it "
                              "has no config.yaml); give a new or empty directory as --out")
        return
    old = read_run_config(run_dir)
    if old.task != cfg.task:
        raise ConfigError(
            f"run directory {run_dir} holds {_an(old.task)} run; use another --out for "
            f"{cfg.task}"
        )
    before, now = to_dict(old.model), to_dict(cfg.model)
    changed = [k for k in now if before.get(k) != now[k]]
    if changed and list_checkpoints(run_dir):
        diffs = ", ".join(f"{k} {before.get(k)} -> {now[k]}" for k in changed)
        raise ConfigError(
            f"run directory {run_dir} holds checkpoints of a model with other settings "
            f"({diffs}); resume it with the same preset and model options, or use another --out"
        )


def _an(word: str) -> str:
    """"an object_discovery", "a set_prediction"."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def write_run_config(run_dir: Path, cfg: TrainConfig) -> None:
    """Write `config.yaml` (atomically)."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    atomic_write(run_dir / "config.yaml", lambda f: f.write(text.encode()), "run config")


def open_run(run_dir: Path, cfg: TrainConfig, is_main: bool = True,
             write_config: bool = True) -> Checkpoint | None:
    """Open a run directory to train in; returns its newest readable checkpoint (None for a new
    run). The main process checks the directory and writes `config.yaml` (unless
    `write_config` is False: the caller writes it with `write_run_config` once the data is
    known to load), only once the run is known to be resumable: a directory whose checkpoints
    all fail to load is refused in one `CheckpointError` and left as it is (training from step
    0 would overwrite the run)."""
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
    if is_main and write_config:
        write_run_config(run_dir, cfg)
    return newest


EVENT_FILES = "events.out.tfevents.*"


class MetricsLog:
    """metrics.jsonl and TensorBoard (`tensorboard/`). On resume, what was logged past the
    resumed step is dropped and the TensorBoard events up to it are carried into the one new
    event file (the old files are then deleted), so each curve continues without overlap.

    A failed write (disk full, ...) is one `WriteError`; TensorBoard is left out, with one
    warning, where it cannot be written or imported.
    """

    def __init__(self, run_dir: Path, resume_step: int):
        self.path = run_dir / "metrics.jsonl"
        self.writer: Any = None
        if self.path.is_file():
            kept = [line for line in _read_lines(self.path) if _step_of(line) <= resume_step]
            text = "".join(line + "\n" for line in kept)
            atomic_write(self.path, lambda f: f.write(text.encode()), "metrics log")
        try:
            self.file = self.path.open("a")
        except OSError as exc:
            raise WriteError(self.path, exc, self.path.exists(), "metrics log") from None
        tb_dir = run_dir / "tensorboard"
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency, but keep training without it
            return
        old_files = sorted(tb_dir.glob(EVENT_FILES)) if tb_dir.is_dir() else []
        try:
            carried = _events_up_to(old_files, resume_step)
            self.writer = SummaryWriter(str(tb_dir))
            file_writer = self.writer._get_file_writer()
            for event in carried:
                file_writer.add_event(event, walltime=event.wall_time)
            self.writer.flush()
        except Exception as exc:  # TensorBoard is a convenience; metrics.jsonl is the record
            self._drop_tensorboard(exc)
            return
        for old in old_files:  # their events are copied: the old files would only repeat them
            try:
                old.unlink()
            except OSError:
                pass

    def log(self, record: dict[str, Any], prefix: str) -> None:
        """Append `record` (it has a "step") to metrics.jsonl; its finite numbers also go to
        TensorBoard as `prefix/key`."""
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as exc:
            raise WriteError(self.path, exc, True, "metrics log") from None
        if self.writer is not None:
            try:
                for key, value in record.items():
                    if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                        self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])
            except Exception as exc:
                self._drop_tensorboard(exc)

    def log_image(self, tag: str, image: Any, step: int) -> None:
        """Add a picture to TensorBoard as the image `tag` at `step`: a PIL image, or the path
        of an image file (nothing where that file was not written)."""
        if self.writer is None:
            return
        try:
            import numpy as np
            from PIL import Image

            if isinstance(image, str | os.PathLike):
                if not Path(image).is_file():
                    return
                with Image.open(image) as opened:
                    image = opened.convert("RGB")
            pixels = np.asarray(image.convert("RGB"))
            self.writer.add_image(tag, pixels, step, dataformats="HWC")
        except Exception as exc:
            self._drop_tensorboard(exc)

    def _drop_tensorboard(self, exc: BaseException) -> None:
        """Stop writing TensorBoard events after a failure, with one line saying why."""
        cause = os_error_in(exc)
        reason = (cause.strerror or str(cause)) if cause is not None else \
            (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"warning: TensorBoard events are no longer written ({reason}); metrics.jsonl "
              "has every value", file=sys.stderr)
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass

    def close(self) -> None:
        """Close both logs (best effort: an error on the way out is already being reported)."""
        try:
            self.file.close()
        except OSError:
            pass
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                pass
            self.writer = None


def _read_lines(path: Path) -> list[str]:
    """The complete JSON lines of metrics.jsonl (a line cut short by a killed process, or
    otherwise damaged, is dropped)."""
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            if isinstance(json.loads(line), dict):
                lines.append(line)
        except ValueError:
            continue
    return lines


def _step_of(line: str) -> int:
    step = json.loads(line).get("step", 0)
    return step if isinstance(step, int) else 0


def _events_up_to(files: list[Path], step: int) -> list[Any]:
    """The summary events of TensorBoard event `files` (read in order) at steps <= `step`, as
    TensorBoard shows them: a restart marker (SessionLog START at step s) drops earlier events
    at steps >= s, and of events with the same tags and step the last is kept."""
    if not files:
        return []
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    kept: dict[tuple[tuple[str, ...], int], Any] = {}
    start = event_pb2.SessionLog.START
    for path in files:
        for record in _quietly(RawEventFileLoader(str(path)).Load()):
            try:
                event = event_pb2.Event.FromString(record)
            except Exception:  # a damaged record: skip it
                continue
            if event.HasField("session_log") and event.session_log.status == start:
                kept = {k: e for k, e in kept.items() if k[1] < event.step}
            elif event.HasField("summary") and event.step <= step:
                key = (tuple(v.tag for v in event.summary.value), event.step)
                kept.pop(key, None)
                kept[key] = event
    return sorted(kept.values(), key=lambda e: e.step)


def _quietly(records: Iterator[bytes]) -> Iterator[bytes]:
    """Records of an event file, TensorBoard's own log messages about it kept off the console
    (a record cut short by a killed process ends the file)."""
    logger = logging.getLogger("tensorboard")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield from records
    except Exception:  # a damaged file: keep what was read
        return
    finally:
        logger.setLevel(level)
