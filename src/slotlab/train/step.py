"""What a training step updates, how it is built, and the step itself.

`build_state(cfg, device)` builds the model of a `TrainConfig` with its speed settings (memory
format, the padded last decoder layer, DistributedDataParallel under torchrun, torch.compile /
CUDA graphs), the Adam optimizer, the EMA copy of the weights and the slot-noise generator.
`train_step(state, batch, noise, lr)` is one optimisation step: forward pass under the run's
autocast, the task's loss, backward, gradient clipping, Adam, EMA. The training loop and the
throughput benchmark both run these two.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slotlab.data.preprocess import normalize_batch_image
from slotlab.errors import CheckpointError, ConfigError
from slotlab.models import build_model
from slotlab.models.savi import SAViOutput, savi_loss
from slotlab.train.checkpoint import load_weights
from slotlab.train.config import TrainConfig
from slotlab.train.ema import ema_decay_at, make_ema, update_ema
from slotlab.train.losses import hungarian_huber_loss, reconstruction_loss
from slotlab.train.runtime import (
    Distributed,
    resolve_bf16,
    resolve_channels_last,
    resolve_compile,
    reuse_freed_memory,
    rng_state,
    set_rng_state,
)

NEW_RUN_HINT = "; start a new run with --out"
# On the CPU a step runs in passes of at most this many examples: the activations of a large
# batch (set prediction's official 512) would need over 12 GB; the summed gradients are the same
CPU_MICRO_BATCH = 64
TRAINED_TASKS = ("object_discovery", "set_prediction", "video")  # the tasks with a loss here


@dataclass
class TrainState:
    """Everything a training step reads and updates, and what a checkpoint saves of it."""

    cfg: TrainConfig
    device: torch.device
    model: nn.Module  # the trained weights
    forward: nn.Module  # what the step calls: the model, or it wrapped (DDP) and/or compiled
    optimizer: torch.optim.Optimizer
    ema: nn.Module | None  # the average of the weights (cfg.ema_decay), evaluated and saved
    memory_format: torch.memory_format
    noise_generator: torch.Generator  # slot-initialisation noise of whole global batches
    part: tuple[int, int]  # this process's slice [lo, hi) of each global batch
    micro_batch: int  # examples per forward/backward pass of a step
    bf16: bool  # bf16 autocast (cfg.bf16, or the device's default)
    compiled: bool  # torch.compile (cfg.compile, or the device's default for the run)
    step: int = 0
    train_seconds: float = 0.0

    @property
    def shown(self) -> nn.Module:
        """The weights that are evaluated, drawn and saved: the EMA where there is one."""
        return self.model if self.ema is None else self.ema

    def draw_noise(self) -> torch.Tensor:
        """The next global batch's slot noise [B, K, D], this process's slice, on the device."""
        noise = torch.randn(self.cfg.batch_size, self.model.num_slots, self.model.slot_size,
                            generator=self.noise_generator)
        return noise[self.part[0] : self.part[1]].to(self.device, non_blocking=True)

    def prepare_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A loader batch on the device: an image in [-1, 1] and in the model's memory format;
        a video stays in [0, 1] (SAVi's preprocessing)."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if "image" in batch:
            batch["image"] = normalize_batch_image(batch["image"]).contiguous(
                memory_format=self.memory_format)
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint of this state: weights, optimizer, step, every RNG, config."""
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "step": self.step, "rng": rng_state(),
            "noise_generator": self.noise_generator.get_state(),
            "train_seconds": self.train_seconds, "config": self.cfg.to_dict(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }

    def load_state_dict(self, checkpoint: dict[str, Any], step: int, source: Path) -> None:
        """Continue from `checkpoint` (of `step`, read from `source`): weights, optimizer, RNGs.
        A checkpoint of another model layout is one `CheckpointError`."""
        missing = [k for k in ("optimizer", "rng", "noise_generator") if k not in checkpoint]
        if missing:
            raise CheckpointError(f"{source} is not a training checkpoint (it has no "
                                  f"{', '.join(missing)}){NEW_RUN_HINT}")
        load_weights(self.model, checkpoint["model"], source, NEW_RUN_HINT)
        if self.ema is not None:  # a run that had no EMA yet starts it from the current weights
            load_weights(self.ema, checkpoint.get("ema", checkpoint["model"]), source,
                         NEW_RUN_HINT)
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{source} was written by another model layout (optimizer: "
                                  f"{exc}){NEW_RUN_HINT}") from None
        set_rng_state(checkpoint["rng"])
        self.noise_generator.set_state(checkpoint["noise_generator"])
        self.step = step
        self.train_seconds = float(checkpoint.get("train_seconds", 0.0))


def check_options(cfg: TrainConfig, device: torch.device, dist_info: Distributed) -> None:
    """Refuse settings this process cannot run (before anything is written)."""
    if cfg.task not in TRAINED_TASKS:
        raise ConfigError(f"the training loop trains {' and '.join(TRAINED_TASKS)}, "
                          f"not {cfg.task}")
    dist_info.part(cfg.batch_size)  # the global batch splits evenly over the processes
    if cfg.cuda_graphs and device.type != "cuda":
        raise ConfigError("cuda_graphs needs a CUDA device")


def build_state(cfg: TrainConfig, device: torch.device,
                dist_info: Distributed | None = None) -> TrainState:
    """The model of `cfg` on `device` with its speed settings, optimizer, EMA and noise
    generator, at step 0 (the model's initial weights come from torch's global RNG)."""
    dist_info = dist_info or Distributed()
    check_options(cfg, device, dist_info)
    reuse_freed_memory(cfg.reuse_memory, device)
    model = build_model(cfg.task, cfg.model).to(device)
    bf16 = resolve_bf16(cfg.bf16, device)
    compiled = resolve_compile(cfg.compile, device, cfg.steps, cfg.max_minutes, bf16)
    channels_last = resolve_channels_last(cfg.channels_last, cfg.task, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    pad = cfg.pad_last_layer
    if pad is None:  # where it is meant to help: GPU kernels for 4 output channels are slow
        pad = 8 if device.type == "cuda" else 0
    if pad and hasattr(model, "pad_last_layer"):
        model.pad_last_layer(pad)
    ema = make_ema(model) if cfg.ema_decay else None
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, eps=1e-8)
    forward = model
    if dist_info.enabled:
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if compiled and cfg.compile is None:
        # Compiling by default must not cost the run: where the backend cannot build (a broken
        # C++ toolchain, say), torch.compile warns and the step runs uncompiled.
        torch._dynamo.config.suppress_errors = True
    if compiled or cfg.cuda_graphs:  # CUDA graphs come through compile's reduce-overhead
        forward = torch.compile(forward, mode="reduce-overhead" if cfg.cuda_graphs else None)
    part = dist_info.part(cfg.batch_size)
    micro_batch = cfg.micro_batch or (part[1] - part[0] if device.type == "cuda" else
                                      CPU_MICRO_BATCH)
    return TrainState(cfg, device, model, forward, optimizer, ema, memory_format,
                      torch.Generator().manual_seed(cfg.seed + 1), part, micro_batch,
                      bf16, compiled)


def video_forward(model: nn.Module, batch: dict[str, torch.Tensor],
                  noise: torch.Tensor | None) -> SAViOutput:
    """SAVi on a batch: conditioned on the first frame's boxes or points where the model's
    initializer takes them; a Gaussian initializer starts from the step's slot `noise`."""
    config = unwrap(model).config
    kind = config.initializer
    return model(batch["video"], boxes=batch["boxes"] if kind == "boxes" else None,
                 points=batch["points"] if kind == "points" else None,
                 slots=noise if kind == "gaussian" else None)


def video_target(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """What a SAVi model reconstructs: the flow as RGB [B, T, 3, H, W] or the frames."""
    return batch["flow_rgb"] if unwrap(model).config.target == "flow" else batch["video"]


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel and torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def compute_loss(model: nn.Module, batch: dict[str, torch.Tensor], task: str,
                 noise: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
    """Forward pass and the official loss of `task` (object discovery: the MSE of the
    reconstruction; set prediction: the Hungarian-matched Huber loss; video: SAVi's sum of
    squared errors per video, mean over the batch); returns (loss, output)."""
    if task == "video":
        out = video_forward(model, batch, noise)
        return savi_loss(out, video_target(model, batch)), out
    out = model(batch["image"], noise=noise)
    if task == "object_discovery":
        return reconstruction_loss(batch["image"], out.recon_combined.float()), out
    if task == "set_prediction":
        return hungarian_huber_loss(out.predictions.float(), batch["target"]), out
    raise ConfigError(f"no training loss for task {task}")


def autocast(state: TrainState) -> contextlib.AbstractContextManager:
    """The run's autocast: bf16 where `state.bf16`, else a no-op."""
    return torch.autocast(state.device.type, dtype=torch.bfloat16, enabled=state.bf16)


def train_step(state: TrainState, batch: dict[str, torch.Tensor], noise: torch.Tensor,
               lr: float) -> torch.Tensor:
    """One optimisation step at learning rate `lr` on a prepared batch (`prepare_batch`) with
    its slot noise; advances `state.step`. Returns the loss, detached and not read back (reading
    it waits for the device)."""
    cfg = state.cfg
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    if cfg.cuda_graphs:  # a new training step: earlier graph outputs may be reused
        torch.compiler.cudagraph_mark_step_begin()
    state.optimizer.zero_grad(set_to_none=True)
    loss = accumulate_gradients(state, batch, noise)
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    state.optimizer.step()
    state.step += 1
    if state.ema is not None:
        update_ema(state.ema, state.model, ema_decay_at(cfg.ema_decay, state.step))
    return loss.detach()


def accumulate_gradients(state: TrainState, batch: dict[str, torch.Tensor],
                         noise: torch.Tensor) -> torch.Tensor:
    """The gradients of the batch's loss, in passes of at most `state.micro_batch` examples:
    each pass's loss (a mean over its examples, as every task's loss is) weighted by its share
    of the batch, so the summed gradients are those of the whole batch. Returns the batch's
    loss; under DistributedDataParallel the gradients are all-reduced once, after the last."""
    n = noise.shape[0]
    starts = range(0, n, state.micro_batch)
    total = torch.zeros((), device=noise.device)
    for i, lo in enumerate(starts):
        hi = min(lo + state.micro_batch, n)
        part = {k: v[lo:hi] for k, v in batch.items()} if hi - lo < n else batch
        sync = i == len(starts) - 1 or not hasattr(state.forward, "no_sync")
        with contextlib.nullcontext() if sync else state.forward.no_sync():
            with autocast(state):
                loss, _ = compute_loss(state.forward, part, state.cfg.task, noise[lo:hi])
            (loss * ((hi - lo) / n)).backward()
        total = total + loss.detach().float() * ((hi - lo) / n)
    return total


def infer(state: TrainState, batch: dict[str, torch.Tensor], noise: torch.Tensor) -> Any:
    """The forward pass alone on a prepared batch, as training runs it (compiled, autocast),
    under inference mode."""
    if state.cfg.cuda_graphs:
        torch.compiler.cudagraph_mark_step_begin()
    with torch.inference_mode(), autocast(state):
        if state.cfg.task == "video":
            return video_forward(state.forward, batch, noise)
        return state.forward(batch["image"], noise=noise)
