"""Training and inference speed of the official TensorFlow 2 Slot Attention code on the CPU.

Run it with the Python of a TensorFlow venv, not slotlab's (see "Beside the official TF code" in
benchmarks/README.md); `throughput.py --tf-python PATH --tf-src DIR` runs it beside slotlab's rows:

    ../venv_tf/bin/python benchmarks/tf_official.py --official-src ../official_src \\
        --config od-official --batch 8 --steps 3 --warmup 1 --mode fp32

`--official-src DIR` is a checkout of google-research/google-research holding at least its
`slot_attention` folder (DIR/slot_attention/model.py). The official modules `slot_attention.model`
and `slot_attention.utils` are imported from there at run time; nothing of them is in slotlab.
`utils` imports scipy, so the venv needs scipy beside TensorFlow.

Configs, as `throughput.py`'s of the same names: `od-official` (`SlotAttentionAutoEncoder`,
object discovery, 128x128, K = 7, 3 iterations) and `sp-official` (`SlotAttentionClassifier`, set
prediction, 128x128, K = 10, 3 iterations, targets [B, 10, 19]). Each is built by the official
`build_model` (whose keras Input has the batch size fixed), fed synthetic inputs already in memory
(images uniform in [-1, 1]; set-prediction targets uniform in [0, 1] with the last column, the
object flag, 1 with probability 0.6).

What is measured, printed as one JSON line on stdout:
- train images/s: the training step of the official `train.py` files: under a `GradientTape`, the
  model on the images (`training=True`) and the loss (`utils.l2_loss` of the image and the
  combined reconstruction for object discovery, `utils.hungarian_huber_loss` of the predictions
  and the targets for set prediction), then `tape.gradient` over the trainable weights and
  `apply_gradients` of `tf.keras.optimizers.Adam(4e-4, epsilon=1e-8)`. As in the official code,
  the object-discovery step runs under `tf.function` and the set-prediction step eagerly (its
  Hungarian matching runs scipy on the cost values). The learning rate stays 4e-4: the official
  warm-up and decay are set between steps in Python, outside the step;
- inference images/s: the model alone (`training=False`) under `tf.function`;
- peak memory: the process's peak RSS after the training steps (MiB);
- the TensorFlow version, whether its oneDNN optimisations are on, the floating-point math mode,
  the CPU and the thread settings.

`--mode bf16` sets the environment variable TF_SET_ONEDNN_FPMATH_MODE=BF16 before TensorFlow is
imported (TensorFlow 2.13 and later, oneDNN optimisations on, which is the default on Linux x86).
TensorFlow then sets oneDNN's default floating-point math mode to bf16, which allows oneDNN's
convolutions and matmuls to compute on the float32 tensors in bfloat16 where it has kernels for
that; weights, activations and every other op stay float32. Whether a kernel does so depends on
the CPU and the oneDNN inside TensorFlow: `ONEDNN_VERBOSE=1` prints each primitive with its kernel
and `attr-fpmath:bf16`. With TensorFlow 2.15.1 (oneDNN 3.2.1) on an AMD EPYC with AVX512-BF16 and
no AMX, the attribute is set but the convolutions and matmuls run float32 kernels (`avx512_core`),
so bf16 mode runs at the float32 speed there. Keras' `mixed_bfloat16` policy, the other bf16 route
of TensorFlow, does not run the official model unchanged (its slot initialisation multiplies a
bfloat16 weight by float32 noise). `--mode fp32` removes the variable: strict float32.

`--threads N` sets TensorFlow's intra-op threads to N and its inter-op threads to 1 (one op at a
time, each on N threads, as PyTorch runs a model); 0 keeps TensorFlow's defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CONFIGS = {  # name: (official model_type, num_slots, num_iterations)
    "od-official": ("object_discovery", 7, 3),
    "sp-official": ("set_prediction", 10, 3),
}
RESOLUTION = (128, 128)
LEARNING_RATE = 4e-4
FPMATH_VARIABLE = "TF_SET_ONEDNN_FPMATH_MODE"


def official_src_problem(src: Path) -> str | None:
    """Why `src` cannot be the official sources (a sentence), or None when it holds
    slot_attention/model.py and slot_attention/utils.py."""
    for name in ("model.py", "utils.py"):
        if not (src / "slot_attention" / name).is_file():
            return (f"{src} has no slot_attention/{name}: give the directory that holds the "
                    "official slot_attention folder (a google-research/google-research checkout)")
    return None


def synthetic_batch(config: str, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 inputs shaped as the official data: images [B, 128, 128, 3] uniform in
    [-1, 1]; for set prediction also targets [B, 10, 19] uniform in [0, 1] whose last column (the
    object flag) is 1 with probability 0.6, else 0."""
    rng = np.random.default_rng(seed)
    out = {"image": (rng.random((batch, *RESOLUTION, 3)) * 2 - 1).astype(np.float32)}
    if CONFIGS[config][0] == "set_prediction":
        target = rng.random((batch, 10, 19)).astype(np.float32)
        target[:, :, -1] = rng.random((batch, 10)) < 0.6
        out["target"] = target
    return out


def describe_cpu() -> tuple[str, str]:
    """The CPU's model name with its core count, and its bf16 instructions from /proc/cpuinfo:
    "amx_bf16", "avx512_bf16" or "none"."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first processor's
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    bf16 = next((isa for isa in ("amx_bf16", "avx512_bf16") if isa in flags), "none")
    return f"{model}, {os.cpu_count()} cores", bf16


def set_math_mode(mode: str) -> None:
    """Set or clear TF_SET_ONEDNN_FPMATH_MODE for `mode`; it must run before TensorFlow is
    imported (TensorFlow reads the variable once)."""
    if mode == "bf16":
        os.environ[FPMATH_VARIABLE] = "BF16"
    else:
        os.environ.pop(FPMATH_VARIABLE, None)


def measure(config: str, batch: int, steps: int, warmup: int, mode: str, threads: int,
            official_src: Path) -> dict[str, Any]:
    """Build the official model of `config`, time `steps` training steps and `steps` forward
    passes after `warmup` untimed ones, and return the row (see the module's docstring)."""
    set_math_mode(mode)
    try:
        import tensorflow as tf
    except ImportError as exc:
        sys.exit(f"tf_official.py: error: TensorFlow is not importable by {sys.executable} "
                 f"({exc})")
    tf.config.set_visible_devices([], "GPU")
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    sys.path.insert(0, str(official_src))
    try:
        import slot_attention.model as model_utils
        import slot_attention.utils as utils
    except ImportError as exc:
        sys.exit(f"tf_official.py: error: the official modules do not import from "
                 f"{official_src} ({exc})")
    if not Path(model_utils.__file__).resolve().is_relative_to(official_src.resolve()):
        sys.exit(f"tf_official.py: error: slot_attention was imported from "
                 f"{model_utils.__file__}, not from {official_src}")
    try:
        from tensorflow.python.util import _pywrap_util_port
        onednn = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "") != "0"
    cpu, cpu_bf16 = describe_cpu()
    if mode == "bf16" and not onednn:
        print("note: oneDNN is off (TF_ENABLE_ONEDNN_OPTS=0): bf16 math mode does nothing",
              file=sys.stderr)

    task, num_slots, num_iterations = CONFIGS[config]
    tf.random.set_seed(0)
    model = model_utils.build_model(RESOLUTION, batch, num_slots, num_iterations,
                                    model_type=task)
    optimizer = tf.keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-08)
    data = {k: tf.constant(v) for k, v in synthetic_batch(config, batch).items()}

    def loss_of(preds: Any) -> Any:
        if task == "object_discovery":
            return utils.l2_loss(data["image"], preds[0])  # preds[0]: the combined reconstruction
        return utils.hungarian_huber_loss(preds, data["target"])

    def train_step() -> Any:
        with tf.GradientTape() as tape:
            loss = loss_of(model(data["image"], training=True))
        gradients = tape.gradient(loss, model.trainable_weights)
        optimizer.apply_gradients(zip(gradients, model.trainable_weights))
        return loss

    graph_step = task == "object_discovery"  # as the official train.py files
    step = tf.function(train_step) if graph_step else train_step
    forward = tf.function(lambda: model(data["image"], training=False))

    t0 = time.perf_counter()
    for _ in range(warmup):
        step().numpy()
    warmup_s = time.perf_counter() - t0
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.numpy()
    train_ips = steps * batch / (time.perf_counter() - t)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    for _ in range(max(1, warmup)):
        tf.nest.map_structure(lambda x: x.numpy(), forward())
    t = time.perf_counter()
    for _ in range(steps):
        out = forward()
    tf.nest.map_structure(lambda x: x.numpy(), out)
    infer_ips = steps * batch / (time.perf_counter() - t)
    return {
        "config": config, "task": task, "mode": mode, "device": "cpu", "batch_size": batch,
        "train_img_s": train_ips, "infer_img_s": infer_ips, "peak_mem_mib": peak_mib,
        "warmup_s": warmup_s, "train_step": "tf.function" if graph_step else "eager",
        "tf_version": tf.__version__, "onednn": onednn,
        "fpmath": os.environ.get(FPMATH_VARIABLE, "strict"), "cpu": cpu, "cpu_bf16": cpu_bf16,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-src", type=Path, required=True, metavar="DIR",
                        help="the directory holding the official slot_attention folder")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="od-official")
    parser.add_argument("--batch", type=int, default=8, help="images per step (default 8)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (default 3)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed steps first (default 1; the first traces tf.function)")
    parser.add_argument("--mode", choices=["fp32", "bf16"], default="fp32",
                        help=f"bf16: {FPMATH_VARIABLE}=BF16, oneDNN's bf16 math mode")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads (inter-op 1); 0: TensorFlow's defaults")
    args = parser.parse_args(argv)
    problem = official_src_problem(args.official_src)
    if problem:
        parser.error(problem)
    if args.batch < 1 or args.steps < 1 or args.warmup < 0 or args.threads < 0:
        parser.error("--batch and --steps must be at least 1, --warmup and --threads at least 0")
    row = measure(args.config, args.batch, args.steps, args.warmup, args.mode, args.threads,
                  args.official_src)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
