"""The process a run trains in: its device, the torchrun process group, the RNGs and signals.

- `resolve_device` / `init_distributed`: the device ("auto": CUDA where available), and under
  torchrun (WORLD_SIZE > 1) this process's rank and device in the process group;
- `any_rank`: flags OR-ed over the ranks in one all-reduce (so every rank stops together);
- `cpu_has_native_bf16` / `warn_emulated_bf16`: bf16 autocast on a CPU that would emulate it;
- `resolve_bf16` / `resolve_compile` / `resolve_channels_last`: the defaults of bf16 autocast,
  torch.compile and the channels_last layout per device;
- `reuse_freed_memory`: on the CPU, memory a step frees stays in the process for the next step;
- `seed_everything`, `rng_state` / `set_rng_state`: every RNG a run uses, seeded at the start and
  checkpointed, so a resumed run continues the same random streams;
- `SigtermFlag`: SIGTERM and Ctrl-C (SIGINT) set a flag: the loop finishes its step, writes a
  checkpoint and stops; after SIGTERM the command exits with 0, after Ctrl-C it says
  "interrupted: checkpoint written at step N" and exits with 130 (`Interrupted`). A second
  Ctrl-C stops at once. `loader_worker_init` makes data-loader workers ignore both.
"""

from __future__ import annotations

import ctypes
import os
import platform
import random
import shutil
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

from slotlab.errors import ConfigError
from slotlab.nn.layers import cpu_has_amx


def resolve_device(name: str) -> torch.device:
    """The torch device of a `--device` value: "auto" (CUDA where available), "cpu", "cuda"..."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but CUDA is not available")
    return device


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

    def part(self, batch_size: int) -> tuple[int, int]:
        """This rank's slice [lo, hi) of a global batch of `batch_size`."""
        if batch_size % self.world_size:
            raise ConfigError(f"batch size {batch_size} is not divisible by the "
                              f"{self.world_size} processes")
        local = batch_size // self.world_size
        return self.rank * local, (self.rank + 1) * local

    def barrier(self) -> None:
        """Wait for every rank (nothing to wait for without torchrun)."""
        if self.enabled:
            torch.distributed.barrier()


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


def any_rank(flags: list[bool], dist_info: Distributed, device: torch.device) -> list[bool]:
    """Each flag OR-ed over the ranks, in one all-reduce (no communication without torchrun)."""
    if not dist_info.enabled:
        return flags
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    torch.distributed.all_reduce(t)
    return [bool(v > 0) for v in t.tolist()]


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


def resolve_bf16(bf16: bool | None, device: torch.device) -> bool:
    """bf16 autocast as asked, or by default (None): on for a CPU that computes bf16 natively,
    where training measured 0.93-1.2x float32's speed on the small object-discovery presets and
    1.5-3x on the official models and set prediction (benchmarks/README.md); off on a CPU that
    emulates it (10x slower) and on CUDA, where it has not been measured."""
    if bf16 is not None:
        return bf16
    return device.type == "cpu" and bool(cpu_has_native_bf16())


# A run compiles by default only when it is long enough to pay the compile time back: with AMX
# compiled training broke even after 76-1,354 steps (0.5-3.3 minutes) on the object-discovery
# presets and od-official, the first (uncached) compile counted (benchmarks/README.md).
COMPILE_MIN_STEPS = 3_000
COMPILE_MIN_MINUTES = 10.0


def resolve_compile(compile: bool | None, device: torch.device, steps: int,
                    max_minutes: float | None, bf16: bool) -> bool:
    """torch.compile as asked, or by default (None): on for a run in bf16 (autocast) on a CPU
    with AMX of at least COMPILE_MIN_STEPS steps (and COMPILE_MIN_MINUTES minutes where a time
    budget ends it first), where a C++ compiler is found. There the compiled step trained
    1.04-1.69x as fast as the uncompiled default on the CPU presets (quickstart, cpu-sprites,
    cpu-sprites-64, cpu-clevr, cpu-setpred, cpu-video-sprites) and both official image models
    (benchmarks/README.md). Off elsewhere: in float32 the compiled official
    models trained 0.65-0.95x as fast; on an AMD EPYC with AVX512-BF16 it trained
    `cpu-sprites-64` slower; CUDA has not been measured."""
    if compile is not None:
        return compile
    long_run = steps >= COMPILE_MIN_STEPS and (max_minutes is None
                                                or max_minutes >= COMPILE_MIN_MINUTES)
    return (device.type == "cpu" and bf16 and long_run and cpu_has_amx()
            and has_cpp_compiler())


def resolve_channels_last(channels_last: bool | None, task: str, device: torch.device) -> bool:
    """The channels_last layout as asked, or by default (None): on CUDA, for set prediction on
    the CPU (1.4-2x the contiguous layout's training speed), and for object discovery on a CPU
    with AMX (uncompiled 1.02-1.15x on every object-discovery preset and the official model;
    compiled about as fast or faster, 0.97-1.09x; benchmarks/README.md)."""
    if channels_last is not None:
        return channels_last
    if device.type == "cuda" or task == "set_prediction":
        return True
    return device.type == "cpu" and task == "object_discovery" and cpu_has_amx()


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_INT_MAX = 2**31 - 1


def reuse_freed_memory(reuse: bool | None, device: torch.device) -> bool:
    """Keep the memory a step frees in the process for the next step (as asked, or by default,
    None: on the CPU under glibc). glibc serves each allocation over 32 MiB, every large
    activation and gradient, with fresh pages from the system and returns them when it is freed,
    so every step faults all of its large tensors' pages in again, a pass over memory the model
    never asked for. With `mallopt` they come from the heap and freed memory stays there (no
    mmap, no trimming under 2 GiB of free memory at its top): on a 2-core Xeon the official
    models trained 1.24-1.34x and inferred 1.11-1.62x as fast (float32 and bf16, channels_last),
    for a resident peak 12-26% higher (process-wide and not undone; benchmarks/README.md).
    Returns whether it is on."""
    if reuse is False or device.type != "cpu" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))


def has_cpp_compiler() -> bool:
    """Whether a C++ compiler is on PATH (torch.compile builds its CPU kernels with one)."""
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def warn_emulated_bf16(bf16: bool, device: torch.device) -> None:
    """Say so when bf16 autocast was asked for on a CPU that would emulate it."""
    if bf16 and device.type == "cpu" and cpu_has_native_bf16() is False:
        print("warning: --bf16 on a CPU without native bf16 (no AVX512-BF16 or AMX): autocast "
              "emulates it, which measured 10x slower than float32 on a 2-core AVX2 CPU; "
              "leave --bf16 off here", file=sys.stderr)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python's, NumPy's and torch's global RNGs; optionally ask torch for deterministic
    kernels only."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)


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
    """Restore the RNG states saved by `rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C after writing its checkpoint (the stop line was printed);
    the command exits with status 130, as after any Ctrl-C."""


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SigtermFlag:
    """While entered, SIGTERM and SIGINT (Ctrl-C) only set `received` (the previous handlers are
    restored on exit): the loop finishes its step, writes a checkpoint and stops. A second
    Ctrl-C raises KeyboardInterrupt at once. A signal ignored when entering (e.g. SIGINT in a
    background job) stays ignored; outside the main thread nothing is installed."""

    def __init__(self) -> None:
        self.received = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def interrupted(self) -> bool:
        """Whether the stop was asked for with Ctrl-C (SIGINT)."""
        return self.signum == signal.SIGINT

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.interrupted:
            raise KeyboardInterrupt  # Ctrl-C twice: stop now, without a checkpoint
        self.received = True
        self.signum = self.signum or signum
        if signum == signal.SIGINT and sys.stderr.isatty():
            sys.stderr.write("\nCtrl-C: stopping after this step and writing a checkpoint "
                             "(Ctrl-C again to stop without one)\n")

    def stop_line(self, step: int) -> str:
        """The line the loop prints when it stops for a signal at `step` (its checkpoint
        written)."""
        if self.interrupted:
            return f"interrupted: checkpoint written at step {step}"
        if self.received:
            return f"received SIGTERM: checkpoint written at step {step}, exiting"
        return f"another process was signalled to stop: checkpoint written at step {step}"

    def exit_if_interrupted(self) -> None:
        """Raise `Interrupted` (exit status 130) when the run was stopped with Ctrl-C."""
        if self.interrupted:
            raise Interrupted()

    def __enter__(self) -> SigtermFlag:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                previous = signal.getsignal(signum)
                if previous is signal.SIG_IGN:
                    continue
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}


def loader_worker_init(worker_id: int) -> None:
    """Loader workers ignore SIGTERM and SIGINT (schedulers signal the whole process group, and
    Ctrl-C reaches every process of the terminal's job): the main process finishes its step,
    writes a checkpoint and shuts the workers down itself."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
