"""Training loop: schedule, run directory, resume (exact), SIGTERM/SIGKILL, clear errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from slotlab.cli import main
from slotlab.data.folder import ImageFolderDataset
from slotlab.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from slotlab.train.config import TrainConfig, learning_rate, list_presets, load_preset
from tests.train.helpers import TINY_ARGS, TINY_MODEL, write_folder, write_preset


def train_cmd(data, out, preset, *extra):
    return ["train", "object-discovery", "--data", f"folder:{data}", "--out", str(out),
            "--preset", str(preset), *TINY_ARGS, *extra]


@pytest.fixture
def setup(tmp_path):
    data = write_folder(tmp_path / "data")
    preset = write_preset(tmp_path / "tiny.yaml")
    return data, preset


def test_official_schedule():
    cfg = TrainConfig()  # official object discovery: 4e-4, warm-up 10k, 0.5 per 100k
    assert learning_rate(cfg, 0) == 0.0
    assert learning_rate(cfg, 5000) == pytest.approx(4e-4 * 0.5 * 0.5 ** 0.05)
    assert learning_rate(cfg, 10_000) == pytest.approx(4e-4 * 0.5 ** 0.1)
    assert learning_rate(cfg, 500_000) == pytest.approx(1.25e-5)


def test_presets_load():
    assert {"clevr6", "clevr10", "cpu-sprites"} <= set(list_presets())
    assert load_preset("clevr6")["batch_size"] == 64
    assert load_preset("clevr10")["batch_size"] == 512


def test_run_directory_contents(setup, tmp_path, capsys):
    data, preset = setup
    run = tmp_path / "run"
    assert main(train_cmd(data, run, preset)) == 0
    for name in ("config.yaml", "metrics.jsonl", "model/model.safetensors", "model/config.json"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").iterdir())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert any("fg_ari" in r for r in records)
    assert [s for s, _ in list_checkpoints(run)] == [2, 4, 6]
    state = load_checkpoint(list_checkpoints(run)[-1][1])
    assert state["step"] == 6 and "rng" in state and "optimizer" in state
    # eval on folder data with masks reports ARI and FG-ARI
    capsys.readouterr()
    assert main(["eval", str(run), "--num", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"ari", "fg_ari", "mbo", "miou", "mse"} <= set(result)
    held_out = ImageFolderDataset(data, "val")  # the folder's held-out tenth, not training images
    assert result["split"] == "val" and result["num_images"] == len(held_out) < 8
    assert set(result["untrained"]) >= {"fg_ari", "mbo", "mse"}
    assert json.loads((run / "eval.json").read_text())["fg_ari"] == result["fg_ari"]


def final_params(run):
    return load_checkpoint(list_checkpoints(run)[-1][1])["model"]


def test_resume_is_exact(setup, tmp_path):
    data, preset = setup
    straight, resumed = tmp_path / "a", tmp_path / "b"
    assert main(train_cmd(data, straight, preset)) == 0
    # stop after step 2 (steps=2), then continue the same directory to 6
    args = train_cmd(data, resumed, preset)
    args[args.index("--steps") + 1] = "2"
    assert main(args) == 0
    assert main(train_cmd(data, resumed, preset)) == 0
    a, b = final_params(straight), final_params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(x)["step"] for x in (resumed / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(x)]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_interrupted_write_never_replaces_good_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 2, {"model": {}, "step": 2}, keep=3)

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    from slotlab.errors import CheckpointError

    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(tmp_path, 4, {"model": {}, "step": 4}, keep=3)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.suffix == ".tmp"]


def test_malicious_checkpoint_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "checkpoints" / "step_00000002.pt"
    path.parent.mkdir()
    with path.open("wb") as f:
        pickle.dump({"model": Evil(), "step": 2}, f)
    from slotlab.errors import CheckpointError

    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def expect_error(argv, capsys, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ")
    assert fragment in err, err


def test_clear_errors(setup, tmp_path, capsys):
    data, preset = setup
    expect_error(["train", "object-discovery", "--data", "nonsense:x", "--out",
                  str(tmp_path / "r1"), "--preset", str(preset), *TINY_ARGS], capsys, "nonsense")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # running as root: permissions are not enforced
        locked = Path("/proc/slotlab-run")
    expect_error(train_cmd(data, locked / "run", preset), capsys, "not writable")
    run = tmp_path / "run"
    assert main(train_cmd(data, run, preset)) == 0
    sp_preset = write_preset(tmp_path / "sp.yaml", task="set_prediction",
                             model={"resolution": [32, 32], "num_slots": 4})
    expect_error(["train", "set-prediction", "--data", f"folder:{data}", "--out", str(run),
                  "--preset", str(sp_preset), *TINY_ARGS], capsys, "holds an object_discovery run")
    expect_error(train_cmd(data, tmp_path / "r2", preset, "--batch-size", "64"), capsys,
                 "larger than the training set")
    # resuming with another model would fail deep inside load_state_dict: one sentence instead
    expect_error(train_cmd(data, run, preset, "--num-slots", "5", "--steps", "8"), capsys,
                 "num_slots 4 -> 5")
    if not torch.cuda.is_available():
        expect_error(train_cmd(data, tmp_path / "r3", preset, "--cuda-graphs"), capsys,
                     "cuda_graphs needs a CUDA device")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: object_discovery\nmodel:\n  num_slots: 4\n decoder: [1\n")
    expect_error(train_cmd(data, tmp_path / "r4", bad), capsys, "is not valid YAML")


def run_cli_subprocess(args, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "slotlab.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for_checkpoint(run, minimum=1, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(list_checkpoints(run)) >= minimum:
            return
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_resumes(setup, tmp_path, sig):
    data, preset = setup
    run = tmp_path / "run"
    args = train_cmd(data, run, preset)
    args[args.index("--num-workers") + 1] = "2"  # the signal also reaches the loader workers
    args[args.index("--steps") + 1] = "400"
    args[args.index("--checkpoint-every") + 1] = "5"
    args[args.index("--eval-every") + 1] = "1000"
    args[args.index("--image-every") + 1] = "1000"
    proc = run_cli_subprocess(args, Path(__file__).resolve().parents[2])
    wait_for_checkpoint(run)
    os.killpg(proc.pid, sig)  # to the whole process group, as schedulers do
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, err
        assert "received SIGTERM" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    steps = [s for s, _ in list_checkpoints(run)]
    assert steps, "the checkpoint written before the kill is lost"
    for _, path in list_checkpoints(run):
        load_checkpoint(path)  # every complete checkpoint is readable
    args[args.index("--steps") + 1] = str(steps[-1] + 3)
    proc = run_cli_subprocess(args, Path(__file__).resolve().parents[2])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"resuming {run} from step {steps[-1]}" in err
    assert list_checkpoints(run)[-1][0] == steps[-1] + 3


def test_time_budget_finishes_the_run(setup, tmp_path):
    data, preset = setup
    run = tmp_path / "run"
    args = train_cmd(data, run, preset, "--max-minutes", "0.0001")
    args[args.index("--steps") + 1] = "100000"
    assert main(args) == 0
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    last_step = max(r["step"] for r in records)
    assert last_step < 100000 and (run / "model" / "config.json").is_file()
    assert records[-1]["train_minutes"] >= 0.0001 and "images_seen" in records[-1]
    assert list_checkpoints(run)[-1][0] == last_step


def test_channels_last_training_follows_plain_training(setup, tmp_path):
    """`--channels-last` changes only the memory layout: the run follows the plain one up to
    float round-off (compared, as in the DDP test, against how far the parameters moved)."""
    import yaml

    data, preset = setup
    plain, fast = tmp_path / "plain", tmp_path / "fast"
    assert main(train_cmd(data, plain, preset, "--no-channels-last", "--no-bf16")) == 0
    assert main(train_cmd(data, fast, preset, "--channels-last", "--no-bf16")) == 0
    assert yaml.safe_load((fast / "config.yaml").read_text())["channels_last"] is True
    assert yaml.safe_load((plain / "config.yaml").read_text())["channels_last"] is False
    a, b = final_params(plain), final_params(fast)
    first = load_checkpoint(list_checkpoints(plain)[0][1])["model"]
    diff = torch.cat([(a[k] - b[k]).flatten() for k in a])
    moved = torch.cat([(a[k] - first[k]).flatten() for k in a])
    assert moved.norm() > 1e-4
    assert diff.norm() <= 1e-2 * moved.norm(), (diff.norm(), moved.norm())


def test_small_cached_val_split_is_enough_for_evaluation(tmp_path):
    """`num` sizes the training set; evaluation needs only eval_num items of the val split."""
    import yaml

    cache = tmp_path / "cache"
    common = ["data", "cache", "procedural-sprites", "--out", str(cache), "--resolution", "32",
              "--workers", "0"]
    assert main([*common, "--num", "16"]) == 0
    assert main([*common, "--num", "8", "--split", "val"]) == 0
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({"task": "object_discovery", "model": TINY_MODEL,
                                      "data_options": {"resolution": [32, 32], "num": 16}}))
    run = tmp_path / "run"
    assert main(["train", "object-discovery", "--data", f"cache:{cache}", "--out", str(run),
                 "--preset", str(preset), *TINY_ARGS]) == 0
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
             if '"split"' in line]
    assert evals and all(r["split"] == "val" and r["num_images"] == 8 for r in evals)
    # `slotlab eval RUN` too: the run's num (16) is not asked of the 8-item val split
    assert main(["eval", str(run), "--json"]) == 0
    assert json.loads((run / "eval.json").read_text())["num_images"] == 8


@pytest.mark.parametrize("native", [False, True, None])
def test_bf16_on_a_cpu_without_it_warns(setup, tmp_path, capsys, monkeypatch, native):
    """--bf16 on a CPU that would emulate it says so (it measured 10x slower than float32);
    on one with native bf16, or where it cannot be told, nothing is said."""
    from slotlab.train import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    data, preset = setup
    assert main(train_cmd(data, tmp_path / "run", preset, "--bf16", "--device", "cpu")) == 0
    warned = "without native bf16" in capsys.readouterr().err
    assert warned == (native is False)


@pytest.mark.parametrize("native", [False, True, None])
def test_bf16_by_default_where_the_cpu_computes_it(setup, tmp_path, capsys, monkeypatch, native):
    """Without --bf16 / --no-bf16 a run takes bf16 autocast on a CPU with native bf16, float32
    on one that would emulate it or cannot be told; --no-bf16 is always float32."""
    from slotlab.train import loop, runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    chosen = []
    build = loop.build_state
    monkeypatch.setattr(loop, "build_state",
                        lambda *a, **k: chosen.append(build(*a, **k)) or chosen[-1])
    data, preset = setup
    assert main(train_cmd(data, tmp_path / "run", preset, "--device", "cpu")) == 0
    assert chosen[-1].bf16 is (native is True)
    assert main(train_cmd(data, tmp_path / "fp32", preset, "--device", "cpu", "--no-bf16")) == 0
    assert chosen[-1].bf16 is False
    assert runtime.resolve_bf16(None, torch.device("cuda")) is False
    assert runtime.resolve_bf16(True, torch.device("cuda")) is True


def test_cpu_has_native_bf16_reads_the_cpu(monkeypatch):
    from slotlab.train import runtime

    monkeypatch.setattr(runtime.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert runtime.cpu_has_native_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert runtime.cpu_has_native_bf16() is True


@pytest.mark.parametrize("amx", [False, True])
def test_channels_last_by_default_where_it_measured_faster(monkeypatch, amx):
    """Without --channels-last / --no-channels-last: on CUDA, for set prediction, and for
    object discovery on a CPU with AMX; not for video; an explicit choice always wins."""
    from slotlab.train import runtime

    cpu, od = torch.device("cpu"), "object_discovery"
    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: amx)
    assert runtime.resolve_channels_last(None, od, cpu) is amx
    assert runtime.resolve_channels_last(None, "set_prediction", cpu) is True
    assert runtime.resolve_channels_last(None, "video", cpu) is False
    assert runtime.resolve_channels_last(None, od, torch.device("cuda")) is True
    assert runtime.resolve_channels_last(False, "set_prediction", cpu) is False
    assert runtime.resolve_channels_last(True, "video", cpu) is True


@pytest.mark.parametrize("amx", [False, True])
def test_compile_by_default_only_for_long_runs_with_amx(monkeypatch, amx):
    """Without --compile / --no-compile: compiled in bf16 on a CPU with AMX and a C++ compiler in
    runs of 3,000 steps or more (and 10 minutes or more of a time budget); otherwise not (float32,
    CUDA). An explicit choice always wins. `build_state` compiles what it resolves."""
    from slotlab.train import runtime
    from slotlab.train.config import make_config
    from slotlab.train.step import build_state

    cpu, od = torch.device("cpu"), "object_discovery"
    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)  # bf16 by default
    monkeypatch.setattr(runtime.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert runtime.resolve_compile(None, cpu, 30_000, None, True) is amx
    assert runtime.resolve_compile(None, cpu, 10**9, 60.0, True) is amx
    assert runtime.resolve_compile(None, cpu, 10**9, 5.0, True) is False  # too short to pay back
    assert runtime.resolve_compile(None, cpu, 1_000, None, True) is False
    assert runtime.resolve_compile(None, cpu, 3_000, None, True) is amx  # from the threshold on
    assert runtime.resolve_compile(None, torch.device("cuda"), 30_000, None, True) is False
    assert runtime.resolve_compile(False, cpu, 30_000, None, True) is False
    assert runtime.resolve_compile(True, cpu, 10, None, True) is True
    assert runtime.resolve_compile(None, cpu, 30_000, None, False) is False  # float32
    assert runtime.resolve_compile(True, cpu, 30_000, None, False) is True
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)  # no C++ compiler
    assert runtime.resolve_compile(None, cpu, 30_000, None, True) is False
    monkeypatch.setattr(runtime.shutil, "which", lambda name: f"/usr/bin/{name}")

    for steps, compiled in [(30_000, amx), (100, False)]:
        cfg = make_config(task=od, model=TINY_MODEL, steps=steps, device="cpu")
        state = build_state(cfg, cpu)
        assert (state.forward is not state.model) is compiled and state.compiled is compiled
