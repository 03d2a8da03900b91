"""Training and inference throughput of the slotlab models, against the machine's matmul peak.

    python benchmarks/throughput.py                     # everything this machine can run
    python benchmarks/throughput.py --device cuda --json results.json
    python benchmarks/throughput.py --configs od-official --modes fp32 bf16 --steps 5
    python benchmarks/throughput.py --profile od-official bf16-cl-pad   # + top kernels
    python benchmarks/throughput.py --kernels od-official bf16-cl   # which convolution kernels
    python benchmarks/throughput.py --configs od-official sp-official --modes fp32 bf16 \
        --tf-python ../venv_tf/bin/python --tf-src ../official_src   # + the official TF code

For each model config and arithmetic mode it measures, in a fresh subprocess (clean peak memory,
no compile cache shared between rows):
- train images/s: the training step of `slotlab train` (`slotlab.train.step.train_step`: forward,
  loss, backward, Adam) on a model set up as training sets it up (`build_state`: memory format,
  padding, compile), synthetic inputs already on the device (the data pipeline is measured by
  `loader_throughput.py`);
- inference images/s: forward only, under `torch.inference_mode` (`slotlab.train.step.infer`);
- peak memory of the training step (CUDA: `max_memory_allocated`; CPU: the process's peak RSS);
- FLOPs per image of the training step and of the forward, counted by
  `torch.utils.flop_counter.FlopCounterMode` (matmuls and convolutions, 2 per multiply-add);
- achieved TFLOP/s and utilisation of the GEMM peak measured in the same run (the best of a
  large square matmul and a 1x1 convolution over 1024 channels, in float32, TF32 on CUDA, and
  bfloat16).

Configs: `od-official` (object discovery, 128x128, K=7, batch 64 on CUDA, 8 on the CPU),
`sp-official` (set prediction, batch 512 on CUDA, 32 on the CPU), `savi-official` (SAVi-S,
64x64, 6-frame clips, 24 slots, batch 64 on CUDA, 8 on the CPU) and the CPU presets
(`quickstart`, `cpu-sprites`, `cpu-clevr`, `cpu-setpred`, `cpu-video-sprites`) at their own
batch sizes. A video model's images/s and FLOPs per image count frames (clips x T).
Modes: `fp32`, `fp32-cl` (channels_last), `tf32` (CUDA), `bf16` (autocast; the attention and
the mask combination stay in float32), `bf16-cl` (+ channels_last), `bf16-cl-pad` (+ the
4-channel last decoder layer computed padded to 8 outputs), `bf16-cl-compile` (+ torch.compile of
the model; the Hungarian matching stays outside), `bf16-cl-pad-compile`, `bf16-cl-pad-graphs`
(compile mode "reduce-overhead": CUDA graphs).

`--kernels CONFIG MODE` times nothing: it runs one training step of CONFIG in MODE and lists
each convolution of the forward pass (its input shape, dtype and memory layout) with the backend
PyTorch dispatches it to (`Mkldnn`, `MkldnnTranspose`, `Slow2d`, `SlowTranspose2d`...; its
backward goes to the same one), and counts the other operators of the step (padding, copies,
ReLU): where the step leaves the fast kernels, per CPU kind, without the noise of a timing.

`--tf-python PATH --tf-src DIR` (CPU only) also measures the official TensorFlow code on
`od-official` and `sp-official` at the same batch sizes, steps and threads, after slotlab's rows
in the same run: `tf_official.py` runs under the Python of a TensorFlow venv with the official
`slot_attention` sources in DIR (benchmarks/README.md, "Beside the official TF code"). A last
table sets each slotlab row of those configs beside the TF row of the same arithmetic (fp32 with
fp32 and fp32-cl; TF's oneDNN bf16 math mode with the bf16 modes) with the ratios slotlab / TF.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from slotlab.train.config import TrainConfig
from slotlab.train.runtime import cpu_has_native_bf16

CONFIGS = ["od-official", "sp-official", "savi-official", "quickstart", "cpu-sprites", "cpu-clevr",
           "cpu-setpred", "cpu-video-sprites"]
MODES = ["fp32", "fp32-cl", "fp32-cl-compile", "tf32", "bf16", "bf16-cl", "bf16-cl-pad",
         "bf16-compile", "bf16-cl-compile", "bf16-cl-pad-compile", "bf16-cl-pad-graphs"]
TF_CONFIGS = ["od-official", "sp-official"]  # the configs that tf_official.py measures
TF_SCRIPT = Path(__file__).resolve().with_name("tf_official.py")


def train_config(name: str, mode: str, device: str, batch: int | None = None,
                 reuse_memory: bool | None = None) -> TrainConfig:
    """The training config of a benchmark config (its task, model and batch size on `device`, or
    `batch`; nothing else of a preset) run in arithmetic `mode` (`reuse_memory`: the run's
    option, default on for the CPU)."""
    from slotlab.train.config import load_preset, make_config

    data_options = {}
    if name == "od-official":
        task, model, batch_size = "object_discovery", {}, 64 if device == "cuda" else 8
    elif name == "savi-official":  # SAVi-S on MOVi: 64x64, 6-frame clips, 24 slots
        task, model, batch_size = "video", {}, 64 if device == "cuda" else 8
    elif name == "sp-official":
        task, model, batch_size = "set_prediction", {}, 512 if device == "cuda" else 32
    else:
        preset = load_preset(name)
        task, model, batch_size = preset["task"], preset.get("model"), int(preset["batch_size"])
        data_options = {k: v for k, v in (preset.get("data_options") or {}).items()
                        if k == "num_frames"}
    return make_config(task=task, model=model, batch_size=batch or batch_size, device=device,
                       data_options=data_options,
                       bf16=mode.startswith("bf16"), channels_last="-cl" in mode,
                       pad_last_layer=8 if "-pad" in mode else 0,
                       compile=mode.endswith("compile"), cuda_graphs=mode.endswith("graphs"),
                       reuse_memory=reuse_memory)


def matmul_peak(device: torch.device, dtype: torch.dtype, tf32: bool = False) -> float:
    """TFLOP/s of the machine's fastest large GEMM in `dtype`: the best of a square matmul
    (cuBLAS / the CPU BLAS) and a 1x1 convolution over 1024 channels (cuDNN / oneDNN). On AMD
    CPUs the BLAS behind `torch.matmul` may not use AVX-512 while oneDNN does, so a matmul
    alone can understate the peak that the model's convolutions reach."""
    import torch.nn.functional as F

    cuda = device.type == "cuda"
    n = 8192 if cuda else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    batch, side = (64, 64) if cuda else (16, 32)
    x = torch.randn(batch, 1024, side, side, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(1024, 1024, 1, 1, device=device, dtype=dtype)
    w = w.contiguous(memory_format=torch.channels_last)
    gemms = [(lambda: a @ b, 2 * n**3), (lambda: F.conv2d(x, w), 2 * batch * side**2 * 1024**2)]
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    best_rate = 0.0
    try:
        for fn, flops in gemms:
            reps = 20 if cuda else 3
            for _ in range(3):
                fn()  # warm-up
                sync(device)
                t = time.perf_counter()
                for _ in range(reps):
                    fn()
                sync(device)
                best_rate = max(best_rate, flops * reps / (time.perf_counter() - t) / 1e12)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    return best_rate


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def frames_of(cfg: TrainConfig) -> int:
    """Frames per clip of a video config (its data option, else SAVi's 6)."""
    return cfg.data_options.num_frames or 6


def synthetic_batch(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """A batch of random images in [-1, 1] (and set-prediction targets) shaped as `cfg`'s; a
    video config: clips in [0, 1] with first-frame boxes (one per slot but the background's)
    and a flow target."""
    h, w = cfg.model.resolution
    g = torch.Generator().manual_seed(0)
    if cfg.task == "video":
        b, t, m = cfg.batch_size, frames_of(cfg), cfg.model.num_slots - 1
        corner = torch.rand(b, t, m, 2, generator=g) * 0.7
        return {"video": torch.rand(b, t, 3, h, w, generator=g),
                "boxes": torch.cat([corner, corner + 0.3], dim=-1),
                "points": corner + 0.15, "flow_rgb": torch.rand(b, t, 3, h, w, generator=g)}
    out = {"image": torch.rand(cfg.batch_size, 3, h, w, generator=g) * 2 - 1}
    if cfg.task == "set_prediction":
        target = torch.rand(cfg.batch_size, 10, 19, generator=g)
        target[:, :, -1] = (torch.rand(cfg.batch_size, 10, generator=g) < 0.6).float()
        out["target"] = target
    return out


def prepared_state(cfg: TrainConfig, device: torch.device) -> tuple:
    """The model of `cfg` set up as training sets it up (seed 0), a synthetic batch prepared for
    it and the slot noise of a step: (state, batch, noise)."""
    from slotlab.train.step import build_state

    torch.manual_seed(0)
    state = build_state(cfg, device)
    return state, state.prepare_batch(synthetic_batch(cfg)), state.draw_noise()


def model_flops(model: torch.nn.Module, run: Callable[[], Any]) -> float:
    """FLOPs of `run()` through `model` as `FlopCounterMode` counts them (with oneDNN's fused
    convolutions, `conv_relu_onednn`, counted as convolutions), less the zero taps in front of a
    kernel: a TF-SAME transposed convolution's (`ConvTranspose2dSame.shift`: k = 5, s = 2 computes
    with a 6x6 kernel, 36/25 of the model's multiply-adds) and a strided `Conv2dSame`'s where it
    takes them instead of padding its input (`Conv2dSame.same_kernel`); utilisation is of the
    model's arithmetic, not of the multiplications by zero."""
    from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

    from slotlab.nn.layers import Conv2dSame, ConvTranspose2dSame, has_onednn_pointwise

    def fused(x_shape: list[int], w_shape: list[int], bias: Any, stride: list[int],
              padding: list[int], transposed: bool, out_shape: list[int] | None = None,
              **kwargs: Any) -> int:  # oneDNN's conv + bias + ReLU
        return conv_flop_count(x_shape, w_shape, out_shape, transposed=transposed)

    # the share of each module's counted multiply-adds that its kernel's nonzero taps make
    share: dict[str, float] = {}
    for name, module in model.named_modules():
        if isinstance(module, ConvTranspose2dSame) and module.shift:
            k = module.kernel_size[0]
            share[name] = k * k / (k + module.shift) ** 2

    def strided_shift(module: Conv2dSame, args: tuple, name: str) -> None:
        kernel = module.same_kernel(args[0])[0]
        if kernel is not module.weight:
            share[name] = module.weight[0, 0].numel() / kernel[0, 0].numel()

    hooks = [module.register_forward_pre_hook(
        lambda m, args, name=name: strided_shift(m, args, name))
        for name, module in model.named_modules() if isinstance(module, Conv2dSame)]
    mapping = {torch.ops.slotlab.conv_relu: fused} if has_onednn_pointwise() else {}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    try:
        with counter:
            run()
    finally:
        for hook in hooks:
            hook.remove()
    total, counts = counter.get_total_flops(), counter.get_flop_counts()
    root = type(model).__name__
    for name, fraction in share.items():
        counted = sum(counts.get(f"{root}.{name}", {}).values())  # forward and backward
        total -= counted * (1 - fraction)
    return total


def measure_one(config: str, mode: str, device_name: str, steps: int, warmup: int,
                profile: bool = False, batch: int | None = None,
                reuse_memory: bool | None = None) -> dict:
    """Build the model of `config`, run `mode`, return the row; with `profile`, also print the
    top kernels of `steps` training steps (torch.profiler, by self device time)."""
    from slotlab.train.step import infer, train_step, video_forward

    device = torch.device(device_name)
    cfg = train_config(config, mode, device.type, batch, reuse_memory)
    task, lr = cfg.task, 1e-4
    # a video counts its frames: images/s and FLOPs per image are per frame
    batch_size = cfg.batch_size * (frames_of(cfg) if task == "video" else 1)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
    state, data, noise = prepared_state(cfg, device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        train_step(state, data, noise, lr)
    sync(device)
    warmup_s = time.perf_counter() - t0
    t = time.perf_counter()
    for _ in range(steps):
        train_step(state, data, noise, lr)
    sync(device)
    train_ips = steps * batch_size / (time.perf_counter() - t)
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    # FLOPs of the plain model, counted after the training steps' peak memory is read (the
    # counted forward keeps the whole batch's activations for autograd, where the training step
    # runs in passes of `micro_batch`; compile would hide the ops from the counter): one training
    # step through the uncompiled model (Adam's updates are not matmuls or convolutions, so they
    # add nothing). The inference pass is counted with autograd on (and no backward): under no_grad
    # or inference_mode a view of a parameter (the learned initial slots expanded over the batch)
    # is a leaf that requires grad without a gradient edge, and the counter's module tracker
    # fails on it (torch 2.13: "Expected gradient function to be set"). Should the counter fail
    # on another model, the speeds are still measured and the FLOPs left out.
    try:
        train_flops = model_flops(state.model, lambda: train_step(
            dataclasses.replace(state, forward=state.model), data, noise, lr)) / batch_size
        infer_flops = model_flops(state.model, lambda: (
            video_forward(state.model, data, noise) if task == "video"
            else state.model(data["image"], noise=noise))) / batch_size
    except AssertionError as exc:
        print(f"note: no FLOP count for {config} ({exc})", file=sys.stderr)
        train_flops = infer_flops = math.nan

    for _ in range(max(1, warmup)):
        infer(state, data, noise)
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        infer(state, data, noise)
    sync(device)
    infer_ips = steps * batch_size / (time.perf_counter() - t)
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                               else [])
        with torch_profile(activities=activities) as prof:
            for _ in range(steps):
                train_step(state, data, noise, lr)
            sync(device)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"top kernels of {steps} training steps, {config} {mode}:", file=sys.stderr)
        print(prof.key_averages().table(sort_by=key, row_limit=20, max_name_column_width=60),
              file=sys.stderr)
    return {
        "config": config, "task": task, "mode": mode, "device": device.type,
        "batch_size": batch_size, "train_img_s": train_ips, "infer_img_s": infer_ips,
        "peak_mem_mib": peak_mib, "train_gflop_per_img": train_flops / 1e9,
        "infer_gflop_per_img": infer_flops / 1e9,
        "train_tflop_s": train_ips * train_flops / 1e12, "warmup_s": warmup_s,
    }


def conv_backend(args: tuple) -> str:
    """The backend PyTorch picks for `aten.convolution`'s arguments (its own private selector;
    enum values it does not name, such as MkldnnTranspose, by their number in ConvUtils.h)."""
    names = {9: "MkldnnTranspose"}
    try:
        backend = torch._C._select_conv_backend(*args[:9], None)
    except (AttributeError, RuntimeError, TypeError) as exc:
        return f"unknown ({type(exc).__name__})"
    name = backend.name
    return names.get(int(backend.value), f"enum {int(backend.value)}") if name == "???" else name


def kernel_report(config: str, mode: str, device_name: str, batch: int | None = None) -> str:
    """One training step of `config` in `mode` under a dispatch mode that sees every operator
    after autocast: a table of its convolutions (the backend each goes to) and the counts of the
    other operators."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    from slotlab.train.step import train_step

    def layout(t: torch.Tensor) -> str:
        if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(
                memory_format=torch.channels_last):
            return "channels_last"
        return "contiguous" if t.is_contiguous() else "strided"

    class Recorder(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.convs: Counter = Counter()
            self.ops: Counter = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            name = func.overloadpacket.__name__
            fused = name == "conv_relu"  # slotlab's: oneDNN's, bias and ReLU as post-ops
            if name == "convolution" or fused:
                x, w = args[0], args[1]
                transposed = args[5] if fused else args[6]
                self.convs[("forward", "transposed" if transposed else "conv",
                            "x".join(map(str, x.shape)), "x".join(map(str, w.shape)),
                            str(x.dtype).removeprefix("torch."), layout(x),
                            "Mkldnn + bias + ReLU" if fused else conv_backend(args))] += 1
            else:
                self.ops[name] += 1
            return func(*args, **(kwargs or {}))

    device = torch.device(device_name)
    cfg = train_config(config, mode, device.type, batch)
    state, data, noise = prepared_state(dataclasses.replace(cfg, compile=False), device)
    train_step(state, data, noise, 1e-4)  # warm-up outside the recorder
    recorder = Recorder()
    with recorder:
        train_step(state, data, noise, 1e-4)
    lines = [f"{config} {mode}, batch {cfg.batch_size}, one training step",
             "", "| pass | kind | input | weight | dtype | layout | backend | calls |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {' | '.join(key)} | {n} |" for key, n in recorder.convs.items()]
    lines += ["", "| operator | calls |", "|---|---|"]
    lines += [f"| {name} | {n} |" for name, n in recorder.ops.most_common()]
    return "\n".join(lines)


def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"


def format_table(rows: list[dict], peaks: dict[str, float]) -> str:
    head = ("| config | mode | batch | train img/s | infer img/s | peak MiB | train GFLOP/img "
            "| train TFLOP/s | % of peak | warm-up s |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | {r['mode']} | | failed: {r['error']} | | | | | | |")
            continue
        peak = peaks[r["mode"].split("-")[0]]  # the arithmetic: fp32, tf32 or bf16
        lines.append(
            f"| {r['config']} | {r['mode']} | {r['batch_size']} | {r['train_img_s']:.1f} "
            f"| {r['infer_img_s']:.1f} | {r['peak_mem_mib']:.0f} | {r['train_gflop_per_img']:.2f} "
            f"| {r['train_tflop_s']:.3f} | {100 * r['train_tflop_s'] / peak:.1f} "
            f"| {r['warmup_s']:.1f} |")
    return "\n".join(lines)


def run_row(cmd: list[str], config: str, mode: str) -> dict:
    """Run a benchmark child process: its row is the JSON object on the last line of its stdout,
    else an error row with the last line of its stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        try:
            return json.loads((proc.stdout.strip().splitlines() or ["?"])[-1])
        except json.JSONDecodeError:
            return {"config": config, "mode": mode, "error": "no JSON line in its output"}
    last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return {"config": config, "mode": mode, "error": last[:120]}


def tf_options_problem(tf_python: Path, tf_src: Path) -> str | None:
    """Why `--tf-python` / `--tf-src` cannot run the official TF code (one sentence), or None."""
    if not (tf_python.is_file() and os.access(tf_python, os.X_OK)):
        return f"--tf-python {tf_python}: no such executable (give the python of a TensorFlow venv)"
    if not (tf_src / "slot_attention" / "model.py").is_file():
        return (f"--tf-src {tf_src}: no slot_attention/model.py there (give the directory that "
                "holds the official slot_attention folder)")
    return None


def tf_mode(mode: str) -> str | None:
    """The arithmetic of tf_official.py to set beside slotlab mode `mode`: "fp32", "bf16" (TF's
    oneDNN bf16 math mode), or None (TF32 has no CPU counterpart)."""
    return next((m for m in ("fp32", "bf16") if mode.startswith(m)), None)


def tf_command(tf_python: Path, tf_src: Path, config: str, mode: str, batch: int, steps: int,
               warmup: int, threads: int) -> list[str]:
    """The command line that measures the official TF code on `config` in TF mode `mode`."""
    return [str(tf_python), str(TF_SCRIPT), "--official-src", str(tf_src), "--config", config,
            "--mode", mode, "--batch", str(batch), "--steps", str(steps), "--warmup", str(warmup),
            "--threads", str(threads)]


def measure_tf(tf_python: Path, tf_src: Path, configs: list[str], modes: list[str], steps: int,
               warmup: int, batch_size: int | None = None) -> list[dict]:
    """The official TF code's rows: each TF config among `configs` in each arithmetic of `modes`,
    at slotlab's CPU batch size (or `batch_size`) and with as many intra-op threads as torch
    uses, one subprocess each."""
    rows = []
    for config in [c for c in configs if c in TF_CONFIGS]:
        for mode in dict.fromkeys(m for m in map(tf_mode, modes) if m):
            batch = train_config(config, mode, "cpu", batch_size).batch_size
            cmd = tf_command(tf_python, tf_src, config, mode, batch, steps, warmup,
                             torch.get_num_threads())
            r = run_row(cmd, config, mode)
            rows.append(r)
            print(f"official TF {config} {mode}: " + (f"failed: {r['error']}" if "error" in r else
                  f"train {r['train_img_s']:.1f}, infer {r['infer_img_s']:.1f} img/s"), flush=True)
    return rows


def format_tf_table(rows: list[dict], tf_rows: list[dict]) -> str:
    """A line on the TF runs, then slotlab's rows of the TF configs beside the TF rows of the same
    config and arithmetic, with the ratios slotlab / TF of train and inference images/s."""
    tf = {(r["config"], r["mode"]): r for r in tf_rows}
    done = [r for r in tf_rows if "error" not in r]
    if done:
        r = done[0]
        about = (f"official TF code: TensorFlow {r['tf_version']}, oneDNN "
                 f"{'on' if r['onednn'] else 'off'}, {r['intra_op_threads']} intra-op / "
                 f"{r['inter_op_threads']} inter-op threads; TF bf16 = oneDNN bf16 math mode "
                 "(TF_SET_ONEDNN_FPMATH_MODE=BF16)")
    else:
        about = "official TF code: no row measured"
    lines = [about, "| config | batch | slotlab mode | TF mode | slotlab train img/s "
             "| TF train img/s | train slotlab/TF | slotlab infer img/s | TF infer img/s "
             "| infer slotlab/TF | TF peak MiB |", "|" + "---|" * 11]
    for r in rows:
        t = tf.get((r["config"], tf_mode(r["mode"])))
        if t is None:
            continue
        if "error" in r or "error" in t:
            failed = f"slotlab failed: {r['error']}" if "error" in r else f"TF failed: {t['error']}"
            lines.append(f"| {r['config']} | | {r['mode']} | {t['mode']} | {failed} "
                         "| | | | | | |")
            continue
        lines.append(
            f"| {r['config']} | {r['batch_size']} | {r['mode']} | {t['mode']} "
            f"| {r['train_img_s']:.1f} | {t['train_img_s']:.1f} "
            f"| {r['train_img_s'] / t['train_img_s']:.2f} | {r['infer_img_s']:.1f} "
            f"| {t['infer_img_s']:.1f} | {r['infer_img_s'] / t['infer_img_s']:.2f} "
            f"| {t['peak_mem_mib']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--configs", nargs="+", metavar="CONFIG",
                        help=f"{', '.join(CONFIGS)}, any other preset, or a preset YAML file")
    parser.add_argument("--modes", nargs="+", choices=MODES)
    parser.add_argument("--steps", type=int, help="timed steps per row (default 20 CUDA, 3 CPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 5 CUDA, 1 CPU)")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="every config at this batch size (e.g. sp-official at the official "
                        "512 on the CPU); the step runs in passes of the run's micro_batch")
    parser.add_argument("--no-reuse-memory", action="store_true",
                        help="train with the run option reuse_memory off (freed memory returned "
                        "to the system, as without it)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--one", nargs=2, metavar=("CONFIG", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--profile", nargs=2, metavar=("CONFIG", "MODE"),
                        help="one row, in this process, with the profiler's top kernels")
    parser.add_argument("--kernels", nargs=2, metavar=("CONFIG", "MODE"),
                        help="time nothing: the backend of each convolution of one training "
                        "step, and the counts of the other operators")
    parser.add_argument("--tf-python", type=Path, metavar="PATH",
                        help="also run the official TF code with this python (needs --tf-src)")
    parser.add_argument("--tf-src", type=Path, metavar="DIR",
                        help="the directory holding the official slot_attention folder")
    args = parser.parse_args()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device == "cuda"
    steps = args.steps or (20 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    if args.tf_python or args.tf_src:
        if not (args.tf_python and args.tf_src):
            parser.error("--tf-python and --tf-src go together")
        if cuda:
            parser.error("--tf-python measures the official TF code on the CPU: add --device cpu")
        problem = tf_options_problem(args.tf_python, args.tf_src)
        if problem:
            parser.error(problem)
        if args.configs and not set(args.configs) & set(TF_CONFIGS):
            parser.error(f"--tf-python compares {' and '.join(TF_CONFIGS)}: "
                         "name one of them in --configs")

    if args.one:  # child process: one row, as JSON on the last line of stdout
        print(json.dumps(measure_one(args.one[0], args.one[1], device, steps, warmup,
                                     batch=args.batch_size,
                                     reuse_memory=False if args.no_reuse_memory else None)))
        return
    if args.kernels:
        print(kernel_report(*args.kernels, device, batch=args.batch_size))
        return
    if args.profile:
        print(json.dumps(measure_one(*args.profile, device, steps, warmup, profile=True,
                                     batch=args.batch_size)))
        return

    for name in args.configs or []:
        if name not in CONFIGS:
            from slotlab.errors import ConfigError
            from slotlab.train.config import load_preset

            try:
                load_preset(name)
            except ConfigError as err:
                parser.error(str(err))
    configs = args.configs or (CONFIGS if cuda else
                               ["od-official", "quickstart", "cpu-sprites", "cpu-setpred",
                                "cpu-video-sprites"])
    if args.tf_python and not args.configs:
        configs = TF_CONFIGS
    cpu_bf16 = not cuda and bool(cpu_has_native_bf16())
    if args.modes:
        modes = args.modes
    elif cuda:
        modes = [m for m in MODES if m not in ("fp32-cl", "fp32-cl-compile", "bf16-compile")]
    else:
        modes = ["fp32", "fp32-cl"] + (["bf16", "bf16-cl"] if cpu_bf16 else [])
    dev = torch.device(device)
    peaks = {"fp32": matmul_peak(dev, torch.float32), "bf16": matmul_peak(dev, torch.bfloat16)}
    peaks["tf32"] = matmul_peak(dev, torch.float32, tf32=True) if cuda else peaks["fp32"]
    machine = describe_machine(dev)
    print(f"{machine}; matmul peak TFLOP/s: fp32 {peaks['fp32']:.3f}, tf32 {peaks['tf32']:.3f}, "
          f"bf16 {peaks['bf16']:.3f}"
          + ("" if cuda else f"; CPU bf16 support: {cpu_bf16}"),
          flush=True)
    rows = []
    for config in configs:
        for mode in modes:
            cmd = [sys.executable, __file__, "--device", device, "--steps", str(steps),
                   "--warmup", str(warmup), "--one", config, mode,
                   *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
                   *(["--no-reuse-memory"] if args.no_reuse_memory else [])]
            row = run_row(cmd, config, mode)
            rows.append(row)
            print(format_table([row], peaks).splitlines()[-1], flush=True)
    tf_rows = []
    if args.tf_python:
        tf_rows = measure_tf(args.tf_python, args.tf_src, configs, modes, steps, warmup,
                             args.batch_size)
    print()
    print(f"{machine}; {steps} timed steps after {warmup} warm-up per row")
    print(format_table(rows, peaks))
    if args.tf_python:
        print()
        print(format_tf_table(rows, tf_rows))
    for row in rows:  # the paper's CLEVR6 schedule: 500k steps at batch 64 = 32M images
        if row["config"] == "od-official" and "train_img_s" in row:
            hours = 500_000 * 64 / row["train_img_s"] / 3600
            print(f"od-official {row['mode']}: the paper's 500k x 64 CLEVR6 schedule would take "
                  f"{hours:,.0f} h at {row['train_img_s']:.3g} img/s")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "peaks_tflop_s": peaks,
                                         "rows": rows, "tf_rows": tf_rows}, indent=1))


if __name__ == "__main__":
    main()
