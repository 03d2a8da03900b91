"""Faults while training: non-finite loss, a data file that turns unreadable, repeated SIGKILL."""

import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from slotlab.cli import main
from slotlab.train import step
from slotlab.train.checkpoint import list_checkpoints, load_checkpoint
from tests.train.helpers import write_folder, write_preset
from tests.train.test_train import run_cli_subprocess, train_cmd, wait_for_checkpoint

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def setup(tmp_path):
    return write_folder(tmp_path / "data"), write_preset(tmp_path / "tiny.yaml")


@pytest.mark.parametrize("log_every, when", [("1", "at step 4"),
                                             ("3", "between steps 4 and 5")])
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(setup, tmp_path, monkeypatch,
                                                              capsys, log_every, when):
    """The loss is checked (one host sync) only where a step is logged, evaluated or
    checkpointed; a NaN in between is still caught before anything is saved after it."""
    data, preset = setup
    real = step.compute_loss
    calls = {"n": 0}

    def exploding(*args, **kwargs):
        calls["n"] += 1
        loss, out = real(*args, **kwargs)
        return (loss * float("nan") if calls["n"] == 5 else loss), out

    monkeypatch.setattr(step, "compute_loss", exploding)
    run = tmp_path / "run"
    args = train_cmd(data, run, preset)
    args[args.index("--log-every") + 1] = log_every
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"the loss became non-finite (nan) {when}" in err, err
    assert "last good checkpoint (step 4)" in err and "Traceback" not in err
    assert [s for s, _ in list_checkpoints(run)] == [2, 4]
    state = load_checkpoint(list_checkpoints(run)[-1][1])
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.parametrize("workers", ["0", "2"])
def test_data_file_turning_unreadable(setup, tmp_path, workers):
    data, preset = setup
    run = tmp_path / "run"
    args = train_cmd(data, run, preset, "--num-workers", workers)
    args[args.index("--steps") + 1] = "1000"
    args[args.index("--checkpoint-every") + 1] = "2"
    args[args.index("--eval-every") + 1] = "100000"
    args[args.index("--image-every") + 1] = "100000"
    proc = run_cli_subprocess(args, REPO)
    wait_for_checkpoint(run)
    victim = data / "images" / "0003.png"
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "0003.png" in lines[0] and "training stopped at step" in lines[0]
    kept = list_checkpoints(run)
    assert kept and f"checkpoint (step {kept[-1][0]})" in lines[0]
    load_checkpoint(kept[-1][1])


def test_repeated_sigkill_resume_is_bit_identical(setup, tmp_path):
    data, preset = setup
    steps = "240"  # long enough that every kill lands before the end, even on a fast machine

    def args_for(out):
        a = train_cmd(data, out, preset, "--deterministic")
        a[a.index("--steps") + 1] = steps
        a[a.index("--checkpoint-every") + 1] = "3"
        a[a.index("--eval-every") + 1] = "100000"
        a[a.index("--image-every") + 1] = "100000"
        return a

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(args_for(straight)) == 0
    rng = random.Random(0)
    kills = []  # newest checkpoint step after each kill
    for _ in range(3):
        previous = list_checkpoints(killed)[-1][0] if list_checkpoints(killed) else 0
        assert previous < int(steps), f"the kills came too late: {kills}"
        proc = run_cli_subprocess(args_for(killed), REPO)
        deadline = time.time() + 120
        while (list_checkpoints(killed) or [(0, None)])[-1][0] <= previous:  # a new one
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.2))  # then kill at a random point of the next steps
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        kills.append(list_checkpoints(killed)[-1][0] if list_checkpoints(killed) else 0)
    proc = run_cli_subprocess(args_for(killed), REPO)
    # a guard against a hang, not a speed check: beside two training runs on this 2-core machine
    # the rest of the 240 steps took more than 300 s
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    print(f"killed after checkpoints at steps {kills}")
    assert kills == sorted(kills) and kills[-1] < int(steps), kills
    a = load_checkpoint(list_checkpoints(straight)[-1][1])
    b = load_checkpoint(list_checkpoints(killed)[-1][1])
    assert a["step"] == b["step"] == int(steps)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in ("exp_avg", "exp_avg_sq"):
        for i in a["optimizer"]["state"]:
            assert torch.equal(a["optimizer"]["state"][i][key], b["optimizer"]["state"][i][key])


def test_full_disk_while_checkpointing_stops_and_keeps_last_checkpoint(setup, tmp_path,
                                                                       monkeypatch, capsys):
    """The disk fills up when the second checkpoint is written: one clear sentence, exit 2, the
    first checkpoint intact and loadable, no temporary file left behind; rerunning resumes."""
    data, preset = setup
    real_save, calls = torch.save, {"n": 0}

    def filling_disk(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", filling_disk)
    run = tmp_path / "run"
    assert main(train_cmd(data, run, preset)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "No space left on device" in err and "previous checkpoint is kept" in err, err
    assert [s for s, _ in list_checkpoints(run)] == [2]
    assert not list((run / "checkpoints").glob("*.tmp"))
    assert load_checkpoint(list_checkpoints(run)[-1][1])["step"] == 2
    monkeypatch.setattr(torch, "save", real_save)  # space freed: the same command resumes
    assert main(train_cmd(data, run, preset)) == 0
    assert "resuming" in capsys.readouterr().err
    assert [s for s, _ in list_checkpoints(run)][-1] == 6


def test_corrupt_newest_checkpoint_is_skipped_on_resume(setup, tmp_path, capsys):
    """A newest checkpoint damaged after it was written (e.g. by a failing disk): resuming warns
    in one line and continues from the newest readable one."""
    data, preset = setup
    run = tmp_path / "run"
    args = train_cmd(data, run, preset)
    args[args.index("--steps") + 1] = "4"
    assert main(args) == 0
    newest = list_checkpoints(run)[-1][1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    capsys.readouterr()
    assert main(train_cmd(data, run, preset)) == 0
    err = capsys.readouterr().err
    assert "warning: skipping" in err and newest.name in err and "Traceback" not in err, err
    assert f"resuming {run} from step 2" in err
    assert list_checkpoints(run)[-1][0] == 6
    assert load_checkpoint(list_checkpoints(run)[-1][1])["step"] == 6


def test_run_whose_checkpoints_are_all_unreadable_is_refused(setup, tmp_path):
    """Every checkpoint of a run turned to garbage: training refuses in one line (naming the run
    and the way out) instead of starting over at step 0 in it, and leaves the directory as it
    is; nothing that torch warns about the files reaches the console."""
    data, preset = setup
    run = tmp_path / "run"
    args = train_cmd(data, run, preset)
    args[args.index("--steps") + 1] = "4"
    assert main(args) == 0
    (_, older), (_, newest) = list_checkpoints(run)
    older.write_bytes(b"\x80\x04" + os.urandom(4096))  # starts like a pickle: torch warns on it
    newest.write_bytes(os.urandom(4096))
    before = {p: p.read_bytes() for p in (run / "metrics.jsonl", run / "config.yaml", older,
                                          newest)}
    proc = run_cli_subprocess(train_cmd(data, run, preset), REPO)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert f"run directory {run} cannot be resumed" in lines[0]
    assert "no checkpoint in" in lines[0] and "(2 tried" in lines[0], lines[0]
    assert "another --out" in lines[0]
    assert "Warning" not in err and "warning" not in err
    assert {p: p.read_bytes() for p in before} == before


def test_loading_a_checkpoint_shows_no_torch_warnings(tmp_path):
    """torch.load's own warnings about a file (e.g. its pickle protocol) are not passed on: the
    one CheckpointError says what is wrong."""
    import warnings

    from slotlab.errors import CheckpointError

    path = tmp_path / "step_00000002.pt"
    path.write_bytes(b"\x80\x04" + os.urandom(256))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match=str(path)):
            load_checkpoint(path)
    assert not caught, [str(w.message) for w in caught]


def test_checkpoint_of_another_model_layout_is_refused(setup, tmp_path, capsys):
    """A run checkpoint written when the slot initialisation's weights lived in Slot Attention
    (`slot_attention.slots_mu`, ...; now `slot_init.slots_mu`, ...) is refused in one line, by
    training and by `slotlab eval`."""
    data, preset = setup
    run = tmp_path / "run"
    args = train_cmd(data, run, preset)
    args[args.index("--steps") + 1] = "2"
    assert main(args) == 0
    _, path = list_checkpoints(run)[-1]
    state = load_checkpoint(path)
    assert "slot_init.slots_mu" in state["model"]
    state["model"] = {k.replace("slot_init.", "slot_attention."): v
                      for k, v in state["model"].items()}
    torch.save(state, path)
    capsys.readouterr()
    assert main(train_cmd(data, run, preset)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert f"{path} was written by another model layout" in err
    assert "slot_init.slots_mu" in err and "start a new run with --out" in err
    assert [s for s, _ in list_checkpoints(run)] == [2]
    assert main(["eval", str(run), "--num", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "was written by another model layout" in err, err
