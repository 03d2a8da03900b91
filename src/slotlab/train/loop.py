"""The training loop shared by both tasks.

    slotlab train object-discovery --data procedural-sprites --preset cpu-sprites --out runs/a

A run directory holds `config.yaml` (the full resolved config), `checkpoints/step_N.pt`,
`metrics.jsonl` (one JSON object per log line: training loss/lr/throughput, and evaluations),
TensorBoard event files in `tensorboard/`, slot pictures in `images/`, and at the end `model/`
(safetensors + config.json, loadable with `slotlab.load_pretrained`).

Running the same command on an existing run directory continues from its newest checkpoint;
`--steps N` extends a finished run to N steps. The data order is a function of (seed, step) and
the RNG states are checkpointed, so a resumed CPU run follows the uninterrupted one exactly.
SIGTERM finishes the current step, writes a checkpoint and exits cleanly; a non-finite loss
stops the run with a message and keeps the last good checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from slotlab.data import build_dataset
from slotlab.data.build import default_num_workers
from slotlab.data.preprocess import normalize_batch_image
from slotlab.errors import ConfigError, DataError, SlotlabError
from slotlab.models import build_model
from slotlab.models.object_discovery import config_cell_pixels
from slotlab.models.pretrained import save_pretrained
from slotlab.train.checkpoint import (
    MODEL_DIR,
    atomic_write,
    latest_checkpoint,
    list_checkpoints,
    save_checkpoint,
)
from slotlab.train.config import TrainConfig, config_from_dict, learning_rate
from slotlab.train.ema import ema_decay_at, make_ema, update_ema
from slotlab.train.evaluate import evaluate
from slotlab.train.losses import (
    hungarian_bce_loss,
    hungarian_huber_loss,
    mask_entropy,
    mixture_nll,
    reconstruction_loss,
)


class TrainingStopped(SlotlabError):
    """Training stopped on purpose (e.g. a non-finite loss); the message says why."""


class StepBatchSampler(Sampler[list[int]]):
    """Batches of indices for steps `start_step, start_step + 1, ...` (endless).

    Epoch e uses the permutation `randperm(n)` of a generator seeded with (seed, e); step s is
    batch s % batches_per_epoch of epoch s // batches_per_epoch (the last partial batch of an
    epoch is dropped, as the official `drop_remainder=True`). Resuming needs only the step.
    `part=(lo, hi)` yields only the slice [lo:hi] of each global batch (one DDP rank's share).
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0,
                 part: tuple[int, int] | None = None):
        self.n, self.batch_size, self.seed, self.start_step = n, batch_size, seed, start_step
        self.batches_per_epoch = n // batch_size
        self.part = part or (0, batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        epoch, perm = -1, None
        while True:
            e, b = divmod(step, self.batches_per_epoch)
            if e != epoch:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
                epoch, perm = e, torch.randperm(self.n, generator=g)
            batch = perm[b * self.batch_size : (b + 1) * self.batch_size]
            yield batch[self.part[0] : self.part[1]].tolist()
            step += 1

    def __len__(self) -> int:  # endless; DataLoader only needs it for len(loader)
        return sys.maxsize


def _worker_init(worker_id: int) -> None:
    """Loader workers ignore SIGTERM (schedulers signal the whole process group): the main
    process finishes its step, writes a checkpoint and shuts the workers down itself."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)


def worker_error_message(exc: Exception) -> str:
    """The original one-sentence message of an error re-raised from a DataLoader worker (torch
    wraps it in "Caught DataError in DataLoader worker process 0. Original Traceback ...")."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but CUDA is not available")
    return device


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU computes bf16 natively (x86: AVX512-BF16 or AMX; Arm: the BF16
    extension); None where it cannot be told. Without it, bf16 autocast is emulated, and on a
    2-core AVX2 CPU it measured 10x slower than float32 (benchmarks/README.md)."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        try:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        except AttributeError:  # an older torch: read the flags
            pass
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = set(text.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def warn_emulated_bf16(bf16: bool, device: torch.device) -> None:
    """Say so when bf16 autocast was asked for on a CPU that would emulate it."""
    if bf16 and device.type == "cpu" and cpu_has_native_bf16() is False:
        print("warning: --bf16 on a CPU without native bf16 (no AVX512-BF16 or AMX): autocast "
              "emulates it, which measured 10x slower than float32 on a 2-core AVX2 CPU; "
              "leave --bf16 off here", file=sys.stderr)


def prepare_run_dir(run_dir: Path, cfg: TrainConfig) -> None:
    """Create/check the run directory; refuse one that holds a run of the other task."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as exc:
        raise ConfigError(f"run directory {run_dir} is not writable ({exc.strerror})") from None
    config_file = run_dir / "config.yaml"
    if config_file.is_file():
        try:
            old = config_from_dict(yaml.safe_load(config_file.read_text()))
        except (ConfigError, yaml.YAMLError, TypeError) as exc:
            raise ConfigError(f"{config_file} is not a slotlab run config ({exc})") from None
        if old.task != cfg.task:
            raise ConfigError(
                f"run directory {run_dir} holds a {old.task} run; use another --out for "
                f"{cfg.task}"
            )
        changed = sorted(k for k in set(old.model) | set(cfg.model)
                         if old.model.get(k) != cfg.model.get(k))
        if changed and list_checkpoints(run_dir):
            diffs = ", ".join(f"{k} {old.model.get(k, 'default')} -> "
                              f"{cfg.model.get(k, 'default')}" for k in changed)
            raise ConfigError(
                f"run directory {run_dir} holds checkpoints of a model with other settings "
                f"({diffs}); resume it with the same preset and model options, or use another "
                "--out"
            )
    elif any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir} is not empty and is not a slotlab run directory")
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    atomic_write(config_file, lambda f: f.write(text.encode()))


def rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain values (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def compute_loss(model: nn.Module, batch: dict[str, torch.Tensor], task: str,
                 noise: torch.Tensor | None = None, mixture_sigma: float | None = None,
                 mask_entropy_weight: float | None = None, set_loss: str = "huber"):
    """Forward pass and the official loss of `task` (object discovery with `mixture_sigma`: the
    Gaussian-mixture likelihood instead; with `mask_entropy_weight`, plus that weight times the
    masks' mean entropy; set prediction with `set_loss="bce"`: `hungarian_bce_loss`); returns
    (loss, output)."""
    out = model(batch["image"], noise=noise)
    if task == "object_discovery":
        if mixture_sigma:
            loss = mixture_nll(batch["image"], out.recons, out.mask_logits, mixture_sigma)
        else:
            loss = reconstruction_loss(batch["image"], out.recon_combined.float())
        if mask_entropy_weight:
            loss = loss + mask_entropy_weight * mask_entropy(out.mask_logits)
        return loss, out
    if set_loss == "bce":
        return hungarian_bce_loss(out.logits.float(), batch["target"]), out
    return hungarian_huber_loss(out.predictions.float(), batch["target"]), out


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


def build_eval_dataset(cfg: TrainConfig, train_set: Dataset) -> tuple[Dataset, str]:
    """The held-out split (the training split, with a note, where the data has none). A `num`
    data option sizes the training set; evaluation reads only the first `eval_num` items, so
    only those are asked of the held-out split (a cache's val split can be that small)."""
    options = dict(cfg.data_options)
    if "num" in options:
        options["num"] = min(int(options["num"]), cfg.eval_num)
    try:
        return build_dataset(cfg.data, cfg.eval_split, cfg.task, **options), cfg.eval_split
    except DataError as exc:
        print(f"note: evaluating on the training split ({exc})", file=sys.stderr)
        return train_set, "train"


@torch.no_grad()
def save_pictures(model: nn.Module, dataset: Dataset, cfg: TrainConfig, path: Path,
                  device: torch.device, num: int = 8) -> None:
    """Slot pictures of the first `num` evaluation images (fixed noise) -> PNG."""
    from torch.utils.data import default_collate

    from slotlab.train.evaluate import slot_noise

    try:
        from slotlab.train.visualize import object_discovery_figure, set_prediction_figure
    except ImportError:  # pictures are optional while visualisation is not installed
        return

    batch = default_collate([dataset[i] for i in range(min(num, len(dataset)))])
    image = normalize_batch_image(batch["image"].to(device))
    noise = slot_noise(model, image.shape[0], torch.Generator().manual_seed(cfg.seed)).to(device)
    was_training = model.training
    model.eval()
    out = model(image, noise=noise, return_all_attention=True)
    model.train(was_training)
    if cfg.task == "object_discovery":
        figure = object_discovery_figure(image.cpu(), _to_cpu(out), num=num,
                                         cell_pixels=config_cell_pixels(model.config))
    else:
        target = batch.get("target")
        figure = set_prediction_figure(image.cpu(), out.predictions.cpu(), target, num=num)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.save(path)


def _to_cpu(out: Any) -> Any:
    import dataclasses

    values = {}
    for f in dataclasses.fields(out):
        v = getattr(out, f.name)
        values[f.name] = [t.cpu() for t in v] if isinstance(v, list) else (
            v.cpu() if isinstance(v, torch.Tensor) else v)
    return type(out)(**values)


@dataclass
class Distributed:
    """Process-group facts: world size, this process's rank, and its device."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on
    CPU. Returns the group facts and this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), resolve_device(device_name)
    dist_info = Distributed(world, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist_info, device


def _any_rank(flags: list[bool], dist_info: Distributed, device: torch.device) -> list[bool]:
    """Each flag OR-ed over the ranks, in one all-reduce (no communication without torchrun)."""
    if not dist_info.enabled:
        return flags
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    torch.distributed.all_reduce(t)
    return [bool(v > 0) for v in t.tolist()]


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
    if cfg.batch_size % dist_info.world_size:
        raise ConfigError(f"batch size {cfg.batch_size} is not divisible by the "
                          f"{dist_info.world_size} processes")
    local_batch = cfg.batch_size // dist_info.world_size
    if cfg.cuda_graphs and device.type != "cuda":
        raise ConfigError("cuda_graphs needs a CUDA device")
    if dist_info.is_main:
        prepare_run_dir(run_dir, cfg)
        warn_emulated_bf16(cfg.bf16, device)
    if dist_info.enabled:
        torch.distributed.barrier()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)

    data_options = dict(cfg.data_options)
    if cfg.data.startswith("cache:"):  # uint8 batches, normalised on the device
        data_options.setdefault("as_uint8", True)
    dataset = build_dataset(cfg.data, "train", cfg.task, **data_options)
    if cfg.batch_size > len(dataset):
        raise ConfigError(
            f"batch size {cfg.batch_size} is larger than the training set of {cfg.data!r} "
            f"({len(dataset)} examples)"
        )
    try:
        model = build_model(cfg.task, **cfg.model).to(device)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid model settings {cfg.model}: {exc}") from None
    channels_last = cfg.channels_last
    if channels_last is None:  # where it measured faster (benchmarks/README.md)
        channels_last = device.type == "cuda" or cfg.task == "set_prediction"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    pad = cfg.pad_last_layer
    if pad is None:  # where it is meant to help: GPU kernels for 4 output channels are slow
        pad = 8 if device.type == "cuda" else 0
    if pad and hasattr(model, "pad_last_layer"):
        model.pad_last_layer(pad)
    ema = make_ema(model) if cfg.ema_decay else None  # the weights evaluated and saved
    shown = model if ema is None else ema
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, eps=1e-8)
    noise_generator = torch.Generator().manual_seed(cfg.seed + 1)
    num_slots, slot_size = model.slot_attention.num_slots, model.slot_attention.slot_size

    step, train_seconds = 0, 0.0
    latest = latest_checkpoint(run_dir)
    if latest is not None:
        step, state = latest
        model.load_state_dict(state["model"])
        if ema is not None:  # a run that had no EMA yet starts it from the current weights
            ema.load_state_dict(state.get("ema", state["model"]))
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        noise_generator.set_state(state["noise_generator"])
        train_seconds = float(state.get("train_seconds", 0.0))
        if dist_info.is_main:
            print(f"resuming {run_dir} from step {step}", file=sys.stderr)
    if step >= cfg.steps:
        if dist_info.is_main:
            print(f"{run_dir} is already at step {step} >= {cfg.steps}; nothing to train",
                  file=sys.stderr)
        return {}
    eval_set, eval_split = build_eval_dataset(cfg, dataset) if dist_info.is_main else (None, "")
    forward = model
    if dist_info.enabled:
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile or cfg.cuda_graphs:  # CUDA graphs come through compile's reduce-overhead
        forward = torch.compile(forward, mode="reduce-overhead" if cfg.cuda_graphs else None)

    workers = cfg.num_workers
    if workers is None:  # memory-mapped caches are fastest read in the main process
        workers = 0 if cfg.data.startswith("cache:") else default_num_workers(len(dataset))
    lo, hi = dist_info.rank * local_batch, (dist_info.rank + 1) * local_batch
    loader = DataLoader(
        dataset,
        batch_sampler=StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, step, (lo, hi)),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        # its own generator: creating the iterator must not consume the global RNG (exact resume)
        generator=torch.Generator().manual_seed(cfg.seed * 7919 + step),
        worker_init_fn=_worker_init,
    )
    log = MetricsLog(run_dir, step) if dist_info.is_main else None
    stop = {"signal": None}

    def on_sigterm(signum, frame):  # finish the step, checkpoint, exit 0
        stop["signal"] = signum

    previous_handler = signal.signal(signal.SIGTERM, on_sigterm)

    def checkpoint() -> None:
        if dist_info.is_main:
            save_checkpoint(run_dir, step, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "rng": rng_state(), "noise_generator": noise_generator.get_state(),
                "train_seconds": train_seconds,
                "config": cfg.to_dict(),
                **({"ema": ema.state_dict()} if ema is not None else {}),
            }, keep=cfg.keep_checkpoints)

    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=step, disable=not (progress and dist_info.is_main),
               dynamic_ncols=True, desc=f"train {cfg.task}")
    last: dict[str, Any] = {}
    t_log, images_since = time.perf_counter(), 0
    finished = False
    batches = None
    bad = torch.zeros((), dtype=torch.bool, device=device)  # a non-finite loss since the check
    checked = step  # the step of the last finiteness check
    try:
        model.train()
        batches = iter(loader)
        while True:
            t_step = time.perf_counter()
            try:
                batch = next(batches)
            except SlotlabError as exc:  # e.g. a data file that became unreadable
                kept = list_checkpoints(run_dir)
                raise type(exc)(
                    f"{worker_error_message(exc)}; training stopped at step {step}, the last "
                    f"checkpoint (step {kept[-1][0] if kept else 'none'}) is kept in {run_dir}"
                ) from None
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            batch["image"] = normalize_batch_image(batch["image"]).contiguous(
                memory_format=memory_format)
            noise = torch.randn(cfg.batch_size, num_slots, slot_size, generator=noise_generator)
            noise = noise[lo:hi].to(device, non_blocking=True)
            lr = learning_rate(cfg, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if cfg.cuda_graphs:  # a new training step: earlier graph outputs may be reused
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss, _ = compute_loss(forward, batch, cfg.task, noise, cfg.mixture_sigma,
                                       cfg.mask_entropy, cfg.set_loss)
            # no host sync per step: the finiteness of the loss is accumulated on the device
            # and read only where the step is logged, evaluated or checkpointed (below)
            bad |= ~torch.isfinite(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if ema is not None:
                update_ema(ema, model, ema_decay_at(cfg.ema_decay, step + 1))
            step += 1
            images_since += cfg.batch_size
            bar.update(1)
            train_seconds += time.perf_counter() - t_step  # data + step, not evaluation
            stopping, out_of_time = _any_rank(
                [stop["signal"] is not None,
                 cfg.max_minutes is not None and train_seconds >= 60 * cfg.max_minutes],
                dist_info, device)
            finished = step >= cfg.steps or out_of_time
            log_now = step % cfg.log_every == 0 or finished
            checkpoint_now = step % cfg.checkpoint_every == 0 or finished or stopping
            eval_now = step % cfg.eval_every == 0 or finished
            image_now = step % cfg.image_every == 0 or finished
            if log_now or checkpoint_now or eval_now or image_now:
                # before anything is logged or saved: a non-finite loss since the last check
                # stops the run; the checkpoints on disk all predate it
                nonfinite = _any_rank([bool(bad.item())], dist_info, device)[0]
                bad.zero_()
                if nonfinite:
                    kept = list_checkpoints(run_dir)
                    when = (f"at step {step - 1}" if step - checked == 1
                            else f"between steps {checked} and {step - 1}")
                    raise TrainingStopped(
                        f"the loss became non-finite ({loss.item()}) {when}; training stopped, "
                        f"the last good checkpoint (step {kept[-1][0] if kept else 'none'}) is "
                        f"kept in {run_dir}"
                    )
                checked = step
            minutes = round(train_seconds / 60, 4)

            if dist_info.is_main:
                if log_now:
                    now = time.perf_counter()
                    ips = images_since / max(now - t_log, 1e-9)
                    t_log, images_since = now, 0
                    record = {"step": step, "loss": loss.item(), "lr": lr, "images_per_s": ips,
                              "train_minutes": minutes}
                    log.log(record, "train")
                    bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{lr:.2e}",
                                    img_s=f"{ips:.1f}")
                if checkpoint_now:
                    checkpoint()
                if eval_now:
                    last = evaluate(shown, eval_set, cfg.task, num=cfg.eval_num,
                                    batch_size=min(cfg.batch_size, 64), seed=cfg.seed,
                                    device=device)
                    log.log({"step": step, "split": eval_split, "train_minutes": minutes,
                             "images_seen": step * cfg.batch_size, **last}, "eval")
                    bar.write(f"step {step} eval ({eval_split}): " + ", ".join(
                        f"{k} {v:.4f}" for k, v in last.items() if isinstance(v, float)))
                if image_now:
                    save_pictures(shown, eval_set, cfg,
                                  run_dir / "images" / f"step_{step:08d}.png", device)
            if stopping:
                if dist_info.is_main:
                    bar.write(f"received SIGTERM: checkpoint written at step {step}, exiting",
                              file=sys.stderr)
                break
            if finished:
                break
    finally:
        # shut the loader workers down now, not at interpreter exit (where it can hang when the
        # error came from a worker): the traceback keeps this frame, and so the iterator, alive
        if batches is not None and hasattr(batches, "_shutdown_workers"):
            batches._shutdown_workers()
        batches = None
        bar.close()
        if log is not None:
            log.close()
        signal.signal(signal.SIGTERM, previous_handler)
    if finished and dist_info.is_main:
        save_pretrained(shown, run_dir / MODEL_DIR, step=step, data=cfg.data)
    if dist_info.enabled:
        torch.distributed.barrier()
    return last
