"""torchrun with 2 CPU processes (gloo) equals the single-process run (same global batch)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slotlab.models import build_model
from slotlab.train.checkpoint import list_checkpoints, load_checkpoint
from tests.train.helpers import TINY_ARGS, TINY_MODEL, write_folder, write_preset

REPO = Path(__file__).resolve().parents[2]


def run(cmd):
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_torchrun_two_processes_equal_single_process(tmp_path):
    data = write_folder(tmp_path / "data")
    preset = write_preset(tmp_path / "tiny.yaml")
    args = ["train", "object-discovery", "--data", f"folder:{data}", "--preset", str(preset),
            *TINY_ARGS, "--no-bf16"]  # compared in float32, whatever the CPU's default
    args[args.index("--steps") + 1] = "4"
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run([sys.executable, "-m", "slotlab.cli", *args, "--out", str(single)])
    torchrun = shutil.which("torchrun") or None
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    run([*launcher, "--standalone", "--nproc_per_node", "2", "-m", "slotlab.cli", *args,
         "--out", str(ddp)])
    a = load_checkpoint(list_checkpoints(single)[-1][1])
    b = load_checkpoint(list_checkpoints(ddp)[-1][1])
    assert a["step"] == b["step"] == 4
    # Same data slices and slot noise; the gradient all-reduce sums in another order, and Adam
    # turns round-off in near-zero gradients into O(lr) steps, so compare against how far the
    # parameters moved: a wrong data split or noise would differ by the movement itself.
    torch.manual_seed(0)  # the training run builds its model right after seeding with 0
    init = build_model("object_discovery", **TINY_MODEL).state_dict()
    diff = torch.cat([(b["model"][k] - a["model"][k]).flatten() for k in a["model"]])
    moved = torch.cat([(a["model"][k] - init[k]).flatten() for k in a["model"]])
    print(f"max |ddp - single| {diff.abs().max():.2e}, ||diff|| / ||moved|| "
          f"{diff.norm() / moved.norm():.2e}")
    assert moved.norm() > 1e-3
    assert diff.abs().max() <= 2e-5
    assert diff.norm() <= 1e-2 * moved.norm()
