"""The training loop shared by both tasks.

    slotlab train object-discovery --data procedural-sprites --preset cpu-sprites --out runs/a

What a run writes is described in `slotlab.train.rundir`. Running the same command on an
existing run directory continues from its newest checkpoint; `--steps N` extends a finished run
to N steps. The data order is a function of (seed, step) and the RNG states are checkpointed, so
a resumed CPU run follows the uninterrupted one exactly. SIGTERM finishes the current step,
writes a checkpoint and exits cleanly; a non-finite loss stops the run with a message and keeps
the last good checkpoint. A run directory whose checkpoints all fail to load is refused.

The parts: `runtime` (device, torchrun, RNGs, SIGTERM), `rundir` (the run directory and its
metrics log), `checkpoint` (checkpoint files), `batches` (the data order), `step` (the state a
step updates, its setup, and `train_step`), `evaluate` (metrics and slot pictures).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from slotlab.errors import ConfigError, SlotlabError
from slotlab.io import atomic_write
from slotlab.models.pretrained import save_pretrained
from slotlab.train.batches import build_train_dataset, next_batch, training_batches
from slotlab.train.checkpoint import MODEL_DIR, list_checkpoints, save_checkpoint
from slotlab.train.config import TrainConfig, learning_rate
from slotlab.train.evaluate import (
    build_eval_dataset,
    evaluate,
    headline,
    num_scored,
    save_pictures,
    untrained_figures,
    untrained_model,
)
from slotlab.train.rundir import MetricsLog, open_run, write_run_config
from slotlab.train.runtime import (
    Distributed,
    SigtermFlag,
    any_rank,
    cpu_has_native_bf16,
    init_distributed,
    resolve_device,
    seed_everything,
    warn_emulated_bf16,
)
from slotlab.train.step import (
    TrainState,
    build_state,
    check_options,
    compute_loss,
    train_step,
)
from slotlab.train.test_time import (
    TEST_TIME_FILE,
    apply_test_time,
    choose_test_time,
    eval_settings,
    held_out_images,
    write_choice,
)

__all__ = ["TrainingStopped", "build_eval_dataset", "compute_loss", "cpu_has_native_bf16",
           "resolve_device", "train"]


class TrainingStopped(SlotlabError):
    """Training stopped on purpose (e.g. a non-finite loss); the message says why."""


def train(cfg: TrainConfig, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a run; returns the last evaluation metrics.

    Under torchrun each of the W processes takes its slice of every global batch of
    `cfg.batch_size` (which must be divisible by W), and the slot-initialisation noise of the
    whole global batch is drawn from one seeded generator and sliced the same way, so a W-process
    run follows the single-process run with the same global batch (up to float round-off of the
    gradient all-reduce). Only rank 0 logs, evaluates, draws pictures and writes checkpoints.
    """
    run_dir = Path(run_dir)
    dist_info, device = init_distributed(cfg.device)
    check_options(cfg, device, dist_info)
    newest = open_run(run_dir, cfg, dist_info.is_main, write_config=False)
    seed_everything(cfg.seed, cfg.deterministic)
    dataset = build_train_dataset(cfg)  # bad data is refused before config.yaml is written
    if dist_info.is_main:
        write_run_config(run_dir, cfg)
    dist_info.barrier()
    state = build_state(cfg, device, dist_info)
    if dist_info.is_main:
        warn_emulated_bf16(state.bf16, device)
        if state.compiled and cfg.compile is None:
            print("note: torch.compile is on by default for this run (--no-compile to skip); its "
                  "first step takes tens of seconds longer", file=sys.stderr)
    if newest is not None:
        state.load_state_dict(newest[2], newest[0], newest[1])
        if dist_info.is_main:
            print(f"resuming {run_dir} from step {state.step}", file=sys.stderr)
    if state.step >= cfg.steps:
        if dist_info.is_main:
            print(f"{run_dir} is already at step {state.step} >= {cfg.steps}; nothing to train",
                  file=sys.stderr)
        return {}
    finished, bad, checked = False, torch.zeros((), dtype=torch.bool, device=device), state.step
    with (Report(state, run_dir, dataset, progress and dist_info.is_main,
                 dist_info.is_main) as report,
          SigtermFlag() as sigterm,
          training_batches(cfg, dataset, state.step, state.part, device.type == "cuda")
          as batches):
        state.model.train()
        while not finished:
            t_step = time.perf_counter()
            batch = state.prepare_batch(next_batch(batches, state.step, run_dir))
            lr = learning_rate(cfg, state.step)
            loss = train_step(state, batch, state.draw_noise(), lr)
            # no host sync per step: the finiteness of the loss is accumulated on the device and
            # read only where the step is logged, evaluated or checkpointed
            bad |= ~torch.isfinite(loss)
            report.count_step(batch["video"].shape[1] if "video" in batch else 1)
            state.train_seconds += time.perf_counter() - t_step  # data + step, not evaluation
            stopping, out_of_time = any_rank(
                [sigterm.received,
                 cfg.max_minutes is not None and state.train_seconds >= 60 * cfg.max_minutes],
                dist_info, device)
            finished = state.step >= cfg.steps or out_of_time
            due = Due.at(cfg, state.step, finished, stopping)
            if due:  # before anything is logged or saved: the checkpoints all predate a NaN
                check_finite(bad, loss, checked, state.step, run_dir, dist_info, device)
                checked = state.step
            report.after_step(due, loss, lr)
            if stopping:
                report.write(sigterm.stop_line(state.step))  # SIGTERM, or Ctrl-C
                break
    if finished and dist_info.is_main:
        save_pretrained(state.shown, run_dir / MODEL_DIR, step=state.step, data=cfg.data)
    dist_info.barrier()
    sigterm.exit_if_interrupted()  # Ctrl-C: exit status 130, after the checkpoint
    return report.last_eval


@dataclass(frozen=True)
class Due:
    """What is due after a step: a log line, a checkpoint, an evaluation, slot pictures."""

    log: bool
    checkpoint: bool
    evaluate: bool
    pictures: bool
    choose_test_time: bool

    @classmethod
    def at(cls, cfg: TrainConfig, step: int, finished: bool, stopping: bool) -> Due:
        """At `step` of a run: each on its period, everything at the end (and there the
        test-time choice, where the run makes one), a checkpoint on SIGTERM."""
        return cls(step % cfg.log_every == 0 or finished,
                   step % cfg.checkpoint_every == 0 or finished or stopping,
                   step % cfg.eval_every == 0 or finished,
                   step % cfg.image_every == 0 or finished,
                   finished and cfg.chooses_test_time)

    def __bool__(self) -> bool:
        return self.log or self.checkpoint or self.evaluate or self.pictures


def check_finite(bad: torch.Tensor, loss: torch.Tensor, checked: int, step: int, run_dir: Path,
                 dist_info: Distributed, device: torch.device) -> None:
    """Stop the run (on every rank) when a loss since step `checked` was not finite; resets
    the flag `bad`. One host sync."""
    nonfinite = any_rank([bool(bad.item())], dist_info, device)[0]
    bad.zero_()
    if nonfinite:
        kept = list_checkpoints(run_dir)
        when = f"at step {step - 1}" if step - checked == 1 else \
            f"between steps {checked} and {step - 1}"
        last = (f"the last good checkpoint (step {kept[-1][0]}) is kept in {run_dir}" if kept
                else f"no checkpoint was written yet in {run_dir}")
        raise TrainingStopped(f"the loss became non-finite ({loss.item()}) {when}; training "
                              f"stopped, {last}")


class Report:
    """What the main process writes while training: the progress bar, metrics.jsonl (and
    TensorBoard), checkpoints, evaluations and slot pictures. Other processes write nothing."""

    def __init__(self, state: TrainState, run_dir: Path, train_set: Dataset, progress: bool,
                 is_main: bool):
        from tqdm import tqdm

        self.state, self.run_dir, self.is_main, self.last_eval = state, run_dir, is_main, {}
        cfg = state.cfg
        self.eval_set, self.eval_split = (build_eval_dataset(cfg, train_set) if is_main
                                          else (None, ""))
        self.test_time_images = (self.held_out_for_choice() if is_main and cfg.chooses_test_time
                                 else None)
        self.log = MetricsLog(run_dir, state.step) if is_main else None
        self.bar = tqdm(total=cfg.steps, initial=state.step, disable=not progress,
                        dynamic_ncols=True, desc=f"train {cfg.task}")
        self.t_log, self.images_since = time.perf_counter(), 0

    def __enter__(self) -> Report:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
        if self.log is not None:
            self.log.close()

    def evaluate(self, model: torch.nn.Module) -> dict[str, Any]:
        cfg = self.state.cfg
        return evaluate(model, self.eval_set, cfg.task, num=cfg.eval_num,
                        batch_size=min(cfg.batch_size, 64), seed=cfg.seed,
                        device=self.state.device)

    def untrained_figures(self) -> dict[str, Any]:
        """The figures of the model the run started from on the same images (computed once,
        kept in RUN_DIR/untrained.json for resumed runs)."""
        path, cfg = self.run_dir / "untrained.json", self.state.cfg
        scored = f"{cfg.eval_data or cfg.data} {self.eval_split} {cfg.eval_num}"
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
                if saved.get("data") == scored:
                    return saved["metrics"]
            except (ValueError, KeyError, AttributeError):
                pass  # recomputed below
        with torch.random.fork_rng(devices=[]):  # a resumed run, which reads the file, and
            model = untrained_model(cfg.task, cfg.model, cfg.seed)  # this one draw the same
            figures = untrained_figures(self.evaluate(model.to(self.state.device)))
        text = json.dumps({"data": scored, "metrics": figures}, indent=1)
        atomic_write(path, lambda f: f.write(text.encode()))
        return figures

    def held_out_for_choice(self) -> range | None:
        """The images the test-time choice scores; None, with a note, where the evaluation data
        cannot give them (the run then evaluates with the model's own K and T)."""
        cfg = self.state.cfg
        try:
            return held_out_images(self.eval_set, cfg.eval_num, cfg.test_time_num)
        except ConfigError as exc:
            k, t = eval_settings(cfg.model)
            print(f"note: no test-time choice: {exc}; evaluation runs K = {k}, T = {t}",
                  file=sys.stderr)
            return None

    def choose_test_time(self) -> None:
        """Choose the final model's eval-mode K and T (`slotlab.train.test_time`), record the
        choice in RUN_DIR/test_time.json and apply it to the model that is saved."""
        state, cfg = self.state, self.state.cfg
        choice = choose_test_time(state.shown, self.eval_set, cfg.task, cfg.test_time_slots,
                                  cfg.test_time_iterations, self.test_time_images,
                                  seed=cfg.seed, batch_size=min(cfg.batch_size, 64),
                                  device=state.device)
        write_choice(self.run_dir, {"step": state.step, "data": cfg.eval_data or cfg.data,
                                    "split": self.eval_split, **choice})
        apply_test_time(state.shown, **choice["chosen"])
        best = next(r for r in choice["grid"]
                    if {k: r[k] for k in choice["chosen"]} == choice["chosen"])
        first, stop = choice["images"]
        self.bar.write(f"test time: K = {best['num_slots']}, T = {best['num_iterations']} "
                       f"(FG-ARI {best['fg_ari']:.4f} on images {first}-{stop - 1} of "
                       f"{cfg.eval_data or cfg.data} {self.eval_split}; every pair in "
                       f"{self.run_dir / TEST_TIME_FILE})")

    def count_step(self, frames: int = 1) -> None:
        """One step of `cfg.batch_size` examples of `frames` images each (videos: T)."""
        self.images_since += self.state.cfg.batch_size * frames
        self.bar.update(1)

    def write(self, line: str) -> None:
        if self.is_main:
            self.bar.write(line, file=sys.stderr)

    def after_step(self, due: Due, loss: torch.Tensor, lr: float) -> None:
        """Write what is `due` after the step just taken (its `loss` and `lr`)."""
        if not self.is_main:
            return
        state, cfg, step = self.state, self.state.cfg, self.state.step
        minutes = round(state.train_seconds / 60, 4)
        if due.log:
            now = time.perf_counter()
            ips = self.images_since / max(now - self.t_log, 1e-9)
            self.t_log, self.images_since = now, 0
            record = {"step": step, "loss": loss.item(), "lr": lr, "images_per_s": ips,
                      "train_minutes": minutes}
            self.log.log(record, "train")
            self.bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{lr:.2e}", img_s=f"{ips:.1f}")
        if due.checkpoint:
            save_checkpoint(self.run_dir, step, state.state_dict(), keep=cfg.keep_checkpoints)
        if due.choose_test_time and self.test_time_images:  # before the last evaluation
            self.choose_test_time()
        if due.evaluate:
            self.last_eval = {**self.evaluate(state.shown),
                              "untrained": self.untrained_figures()}
            self.log.log({"step": step, "data": cfg.eval_data or cfg.data,
                          "split": self.eval_split,
                          "train_minutes": minutes, "images_seen": step * cfg.batch_size,
                          **self.last_eval}, "eval")
            self.bar.write(f"step {step} eval ({cfg.eval_data or cfg.data} {self.eval_split}, "
                           f"{num_scored(self.last_eval)}): "
                           + headline(cfg.task, self.last_eval))
        if due.pictures:
            picture = self.run_dir / "images" / f"step_{step:08d}.png"
            save_pictures(state.shown, self.eval_set, cfg.task, cfg.seed, picture, state.device)
            self.log.log_image("slots", picture, step)
