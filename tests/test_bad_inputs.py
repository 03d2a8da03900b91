"""Every mistake a user can make with the commands, as a table: each is one `error:` line that
says what is wrong (checked with a regex), exit status 2, no traceback and no Python warning on
stderr, and no existing file changed (every file of the run, model and data directories is
hashed before and after). Most cases run the CLI in a subprocess, as a user would; the usage
errors that argparse reports run in-process.

A full disk is a file-size limit (RLIMIT_FSIZE) set in the child, with SIGXFSZ ignored, so that
writes fail with EFBIG. Ctrl-C during training is tested on its own: it writes a checkpoint and
exits with 130.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from slotlab.cli import main
from slotlab.train.checkpoint import list_checkpoints, load_checkpoint
from tests.train.helpers import TINY_ARGS, write_folder, write_preset

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_TF = REPO.parent / "shared" / "reference" / "official_tf" / "object_discovery"
HAS_PROC = Path("/proc/self").is_dir()


@dataclass
class Case:
    """One bad input: the command line (with {placeholders}), the regex its error line matches,
    what is prepared first, and what may change."""

    id: str
    argv: list[str]
    message: str
    prepare: tuple[str, ...] = ()  # steps of `prepare_case`
    rc: int = 2
    fsize: int | None = None  # bytes: the child's file-size limit (a "full disk")
    may_change: tuple[str, ...] = ()  # globs (relative to the world) whose files may change
    absent: tuple[str, ...] = ()  # paths that must not exist afterwards
    in_process: bool = False  # argparse usage errors: main() in this process
    one_line: bool = True  # stderr is the error line alone (refused before any work)
    not_in_message: str | None = None
    marks: tuple = ()
    needs: tuple[str, ...] = ()  # "proc", "official_tf"


def train(out: str, *extra: str) -> list[str]:
    return ["train", "object-discovery", "--data", "folder:{data}", "--out", out,
            "--preset", "{preset}", *TINY_ARGS, *extra]


RUN_LOGS = ("case/metrics.jsonl", "case/config.yaml", "case/tensorboard/*", "case/images/*",
            "case/untrained.json")

CASES = [
    # ---- the top-level command ------------------------------------------------------------
    Case("no-command", [], r"the following arguments are required: COMMAND", in_process=True),
    Case("unknown-command", ["trian"], r"invalid choice: 'trian'", in_process=True),
    Case("unknown-option", [*train("{tmp}/new"), "--bogus"], r"unrecognized arguments: --bogus",
         in_process=True),
    # ---- convert-tf / convert-savi: --out is checked before the checkpoint is read --------
    Case("convert-out-in-proc", ["convert-tf", "{tmp}/ckpt", "--task", "object-discovery",
                                 "--out", "/proc/slotlab-x"],
         r"cannot write --out /proc/slotlab-x: /proc is not writable", needs=("proc",)),
    Case("convert-out-is-file", ["convert-tf", "{tmp}/ckpt", "--task", "object-discovery",
                                 "--out", "{file}"], r"--out \S+ is a file; give a directory"),
    Case("convert-into-model-dir", ["convert-tf", "{tmp}/ckpt", "--task", "object-discovery",
                                    "--out", "{model}"],
         r"--out \S+model already holds a model; pass --overwrite to replace it"),
    Case("convert-into-run-dir", ["convert-tf", "{tmp}/ckpt", "--task", "object-discovery",
                                  "--out", "{run}", "--overwrite"],
         r"--out \S+ is a training run directory"),
    Case("convert-into-other-dir", ["convert-tf", "{tmp}/ckpt", "--task", "object-discovery",
                                    "--out", "{data}"],
         r"--out \S+ is not empty \(2 entries, no model\); give a new or empty directory"),
    Case("convert-missing-checkpoint", ["convert-tf", "{tmp}/ckpt-1", "--task",
                                        "object-discovery", "--out", "{tmp}/new"],
         r"ckpt-1.index does not exist: not a TF checkpoint prefix", absent=("{tmp}/new",)),
    Case("convert-num-slots-0", ["convert-tf", "{tmp}/ckpt", "--task", "object-discovery",
                                 "--out", "{tmp}/new", "--num-slots", "0"],
         r"argument --num-slots: expected a positive integer, got '0'", in_process=True),
    Case("convert-bad-task", ["convert-tf", "{tmp}/ckpt", "--task", "objects", "--out",
                              "{tmp}/new"], r"argument --task: invalid choice: 'objects'",
         in_process=True),
    Case("convert-savi-into-model-dir", ["convert-savi", "{tmp}/ckpt", "--out", "{model}"],
         r"--out \S+model already holds a model; pass --overwrite"),
    Case("convert-savi-num-slots-0", ["convert-savi", "{tmp}/ckpt", "--out", "{tmp}/new",
                                      "--num-slots", "0"],
         r"--num-slots must be a positive integer, got 0"),
    Case("convert-disk-full", ["convert-tf", str(OFFICIAL_TF), "--task", "object-discovery",
                               "--out", "{model}", "--overwrite"],
         r"could not write model directory \S+model \(File too large\); the previous version "
         r"is unchanged", fsize=100_000, needs=("official_tf",)),
    # ---- data generate / show / cache -------------------------------------------------------
    Case("generate-existing-split", ["data", "generate", "--out", "{gen}", "--num", "2",
                                     "--resolution", "32", "--workers", "1"],
         r"--out \S+ already holds split 'train' \(images/train, masks/train, "
         r"scenes/CLEVR_train_scenes.json\); pass --overwrite to replace it"),
    Case("generate-into-other-dir", ["data", "generate", "--out", "{run}", "--num", "2",
                                     "--resolution", "32", "--workers", "1"],
         r"--out \S+ is not empty and is not a generated dataset \(it holds checkpoints, "
         r"config.yaml"),
    Case("generate-out-is-file", ["data", "generate", "--out", "{file}", "--num", "1"],
         r"cannot write the dataset: --out \S+ is a file"),
    Case("generate-out-in-proc", ["data", "generate", "--out", "/proc/slotlab-x", "--num", "1"],
         r"cannot write /proc/slotlab-x: /proc is not writable", needs=("proc",)),
    Case("generate-num-0", ["data", "generate", "--out", "{tmp}/new", "--num", "0"],
         r"argument --num: expected a positive integer, got '0'", in_process=True),
    Case("generate-bad-resolution", ["data", "generate", "--out", "{tmp}/new", "--resolution",
                                     "big"], r"argument --resolution: ", in_process=True),
    Case("generate-negative-seed", ["data", "generate", "--out", "{tmp}/new", "--seed", "-1"],
         r"argument --seed: expected an integer >= 0, got '-1'", in_process=True),
    Case("generate-split-path", ["data", "generate", "--out", "{tmp}/new", "--split", "../x"],
         r"argument --split: split name '../x' cannot be a directory name", in_process=True),
    Case("generate-min-above-max", ["data", "generate", "--out", "{tmp}/new", "--min-objects",
                                    "5", "--max-objects", "2"],
         r"--min-objects 5 is larger than --max-objects 2", absent=("{tmp}/new",)),
    Case("generate-disk-full", ["data", "generate", "--out", "{tmp}/new", "--num", "2",
                                "--resolution", "32", "--workers", "1"],
         r"could not write the dataset under \S+new \(File too large\); split 'train' is "
         r"incomplete: a limit on file sizes", fsize=300),
    Case("show-missing-dir", ["data", "show", "{tmp}/nothing", "--out", "{tmp}/sheet.png"],
         r"dataset directory \S+nothing does not exist"),
    Case("show-out-is-dir", ["data", "show", "{gen}", "--out", "{run}"],
         r"--out \S+ is a directory; give the PNG file to write"),
    Case("cache-existing", ["data", "cache", "folder:{data}", "--out", "{cache}", "--num", "4",
                            "--workers", "0"],
         r"cache \S+/train already exists; pass --overwrite to replace it"),
    Case("cache-out-is-file", ["data", "cache", "folder:{data}", "--out", "{file}"],
         r"cannot write the cache: --out \S+ is a file"),
    Case("cache-disk-full", ["data", "cache", "folder:{data}", "--out", "{tmp}/new", "--num",
                             "4", "--workers", "0", "--resolution", "32"],
         r"writing the cache \S+new/train failed \(File too large\)", fsize=300),
    # ---- train ------------------------------------------------------------------------------
    Case("train-num-slots-0", train("{tmp}/new", "--num-slots", "0"),
         r"num_slots must be >= 1, got 0", absent=("{tmp}/new",)),
    Case("train-lr-negative", train("{tmp}/new", "--lr", "-1"),
         r"learning_rate must be > 0, got -1", absent=("{tmp}/new",)),
    Case("train-steps-0", train("{tmp}/new", "--steps", "0"), r"steps must be >= 1, got 0",
         absent=("{tmp}/new",)),
    Case("train-corrupt-config", train("{case}"),
         r"run config \S+config.yaml is not valid YAML", prepare=("run", "corrupt-config")),
    Case("train-empty-config", train("{case}"), r"run config \S+config.yaml is empty",
         prepare=("run", "empty-config")),
    Case("train-checkpoints-unreadable", train("{case}", "--steps", "8"),
         r"run directory \S+ cannot be resumed: no checkpoint in \S+ can be read \(3 tried; "
         r"the newest, step_00000006.pt: .*another --out",
         prepare=("run", "garbage-checkpoints"), not_in_message="could run code"),
    Case("train-other-task", ["train", "set-prediction", "--out", "{run}", "--no-progress"],
         r"run directory \S+ holds an object_discovery run; use another --out"),
    Case("train-video-on-images", ["train", "video", "--data", "procedural-sprites", "--out",
                                   "{tmp}/new", "--steps", "1", "--no-progress"],
         r"procedural-sprites data holds images, not videos: a video model needs video data"),
    Case("train-images-on-video", ["train", "object-discovery", "--data",
                                   "procedural-video-sprites", "--out", "{tmp}/new", "--steps",
                                   "1", "--no-progress"],
         r"procedural-video-sprites data holds videos: it serves the video task, not "
         r"object_discovery"),
    Case("train-out-is-file", train("{file}"), r"--out \S+ is a file, not a run directory"),
    Case("train-out-in-proc", train("/proc/slotlab-run"),
         r"run directory /proc/slotlab-run is not writable", needs=("proc",)),
    Case("train-corrupt-preset", ["train", "object-discovery", "--out", "{tmp}/new", "--preset",
                                  "{tmp}/bad.yaml"],
         r"preset file \S+bad.yaml is not valid YAML", prepare=("bad-preset",),
         absent=("{tmp}/new",)),
    Case("train-preset-key-twice", ["train", "object-discovery", "--out", "{tmp}/new",
                                    "--preset", "{tmp}/twice.yaml"],
         r"preset file \S+twice.yaml is not valid YAML \(key 'num_slots' is given twice, "
         r"line 4\)", prepare=("preset-key-twice",), absent=("{tmp}/new",)),
    Case("train-unknown-preset", ["train", "object-discovery", "--out", "{tmp}/new",
                                  "--preset", "no-such-preset"],
         r"unknown preset 'no-such-preset'; available: ", absent=("{tmp}/new",)),
    Case("train-disk-full", train("{case}", "--steps", "10"),
         r"could not write checkpoint \S+step_00000008.pt \(File too large\); the previous "
         r"checkpoint is kept", prepare=("run",), fsize=300_000, may_change=RUN_LOGS,
         one_line=False),
    Case("train-missing-data-keeps-config", [*train("{case}"), "--data", "folder:{tmp}/none"],
         r"dataset path \S+none .*does not exist", prepare=("run",)),
    # ---- eval ---------------------------------------------------------------------------------
    Case("eval-corrupt-config", ["eval", "{case}"],
         r"run config \S+config.yaml is not valid YAML", prepare=("run", "corrupt-config")),
    Case("eval-empty-config", ["eval", "{case}"], r"run config \S+config.yaml is empty",
         prepare=("run", "empty-config")),
    Case("eval-missing-path", ["eval", "{tmp}/nothing"], r"\S+nothing does not exist"),
    Case("eval-checkpoints-unreadable", ["eval", "{case}"],
         r"no checkpoint in \S+ can be read \(3 tried",
         prepare=("run", "garbage-checkpoints", "no-model"), not_in_message="could run code"),
    Case("eval-num-0-keeps-eval-json", ["eval", "{case}", "--num", "0"],
         r"--num must be >= 1, got 0", prepare=("run", "eval-json")),
    Case("eval-batch-size-0", ["eval", "{case}", "--batch-size", "0"],
         r"--batch-size must be >= 1, got 0", prepare=("run", "eval-json")),
    Case("eval-disk-full-keeps-eval-json", ["eval", "{case}", "--num", "2"],
         r"could not write \S+eval.json \(File too large\)", prepare=("run", "eval-json"),
         fsize=50),
    # ---- visualize ----------------------------------------------------------------------------
    Case("visualize-corrupt-config", ["visualize", "{case}", "--out", "{tmp}/v.png"],
         r"run config \S+config.yaml is not valid YAML", prepare=("run", "corrupt-config"),
         absent=("{tmp}/v.png",)),
    Case("visualize-num-0", ["visualize", "{run}", "--out", "{tmp}/v.png", "--num", "0"],
         r"argument --num: expected a positive integer, got '0'", in_process=True),
    Case("visualize-out-is-dir", ["visualize", "{run}", "--out", "{tmp}"],
         r"argument --out: \S+ is a directory; give the file to write in it"),
    Case("visualize-out-in-proc", ["visualize", "{run}", "--out", "/proc/slotlab/v.png"],
         r"argument --out: cannot write /proc/slotlab/v.png: /proc is not writable",
         needs=("proc",)),
    Case("visualize-missing-path", ["visualize", "{tmp}/nothing", "--out", "{tmp}/v.png"],
         r"\S+nothing does not exist \(expected a run directory or a model directory\)"),
]


# ------------------------------------------------------------------------------------------
# The world the cases run against: made once per module
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    data = write_folder(root / "data")
    preset = write_preset(root / "tiny.yaml")
    run = root / "run"
    args = ["train", "object-discovery", "--data", f"folder:{data}", "--out", str(run),
            "--preset", str(preset), *TINY_ARGS]
    assert main(args) == 0
    assert [s for s, _ in list_checkpoints(run)] == [2, 4, 6]
    shutil.copytree(run / "model", root / "model")
    assert main(["data", "generate", "--out", str(root / "gen"), "--num", "2",
                 "--resolution", "32", "--workers", "1"]) == 0
    assert main(["data", "cache", f"folder:{data}", "--out", str(root / "cache"), "--num", "4",
                 "--workers", "0", "--resolution", "32"]) == 0
    (root / "file").write_text("not a directory\n")
    return root


def prepare_case(world: Path, tmp: Path, steps: tuple[str, ...]) -> Path:
    """Make the case's own copy of what it damages: `case` (a copy of the run)."""
    case = world / "case"
    if case.exists():
        shutil.rmtree(case)
    for step in steps:
        if step == "run":
            shutil.copytree(world / "run", case)
        elif step == "corrupt-config":
            (case / "config.yaml").write_text("task: [object_discovery\nmodel: {: :\n")
        elif step == "empty-config":
            (case / "config.yaml").write_text("")
        elif step == "garbage-checkpoints":
            for i, (_, path) in enumerate(list_checkpoints(case)):
                # a pickle-protocol-4 start makes torch warn; random bytes are no pickle at all
                head = b"\x80\x04" if i % 2 else b""
                path.write_bytes(head + os.urandom(4096))
        elif step == "no-model":
            shutil.rmtree(case / "model")
        elif step == "eval-json":
            (case / "eval.json").write_text('{"fg_ari": 0.9}\n')
        elif step == "bad-preset":
            (tmp / "bad.yaml").write_text("model: [1, 2\n")
        elif step == "preset-key-twice":
            (tmp / "twice.yaml").write_text("model:\n  num_slots: 4\n  slot_size: 8\n"
                                            "  num_slots: 5\n")
        else:
            raise ValueError(step)
    return case


def fill(argv: list[str], world: Path, tmp: Path) -> list[str]:
    names = {"data": world / "data", "preset": world / "tiny.yaml", "run": world / "run",
             "model": world / "model", "gen": world / "gen", "cache": world / "cache",
             "file": world / "file", "case": world / "case", "tmp": tmp}
    return [a.format(**{k: str(v) for k, v in names.items()}) for a in argv]


def hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under `roots` (keyed by path)."""
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def limit_file_size(size: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return preexec


def run_cli(argv: list[str], fsize: int | None = None, timeout: float = 300):
    """(exit status, stderr) of `python -m slotlab.cli ARGV` in a child process."""
    proc = subprocess.run(
        [sys.executable, "-m", "slotlab.cli", *argv], cwd=REPO, capture_output=True, text=True,
        timeout=timeout, preexec_fn=None if fsize is None else limit_file_size(fsize),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return proc.returncode, proc.stderr


def run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        rc = exc.code
    return rc, capsys.readouterr().err


def params():
    for case in CASES:
        marks = list(case.marks)
        if "proc" in case.needs and not HAS_PROC:
            marks.append(pytest.mark.skip(reason="no /proc"))
        if "official_tf" in case.needs and not (OFFICIAL_TF / "checkpoint").is_file():
            marks.append(pytest.mark.skip(reason=f"no official TF checkpoint in {OFFICIAL_TF}"))
        if case.fsize is not None and os.name != "posix":
            marks.append(pytest.mark.skip(reason="needs RLIMIT_FSIZE"))
        yield pytest.param(case, id=case.id, marks=marks)


def test_table_has_the_cases_of_the_issue():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", params())
def test_bad_input(case: Case, world: Path, tmp_path: Path, capsys):
    prepare_case(world, tmp_path, case.prepare)
    argv = fill(case.argv, world, tmp_path)
    before = hashes(world, tmp_path)
    if case.in_process:
        rc, err = run_in_process(argv, capsys)
    else:
        rc, err = run_cli(argv, case.fsize)
    after = hashes(world, tmp_path)

    assert "Traceback" not in err, err
    assert "Warning" not in err, err  # UserWarning, DeprecationWarning...: nothing from Python
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err
    assert re.search(case.message, errors[0]), f"{case.message!r} not in {errors[0]!r}"
    if case.not_in_message:
        assert case.not_in_message not in errors[0], errors[0]
    if case.one_line:
        assert len(err.strip().splitlines()) == 1, err
    assert rc == case.rc, err

    allowed = [str(world / pattern) for pattern in case.may_change]
    changed = sorted(path for path in set(before) | set(after)
                     if before.get(path) != after.get(path)
                     and path in before  # new files of the case are checked by `absent`
                     and not any(Path(path).match(p) for p in allowed))
    assert not changed, f"changed: {changed}"
    for path in fill(list(case.absent), world, tmp_path):
        assert not Path(path).exists(), f"{path} was created"
    # nothing half-written is left behind: no temporary files, no partial directories
    for root in (world, tmp_path):
        assert not list(root.rglob(".*.tmp")) and not list(root.rglob(".*.partial-*"))


# ------------------------------------------------------------------------------------------
# Ctrl-C, and the pieces the table relies on
# ------------------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_ctrl_c_during_training_writes_a_checkpoint_and_exits_130(world, tmp_path):
    """Ctrl-C reaches the whole process group (the trainer and its loader workers), as from a
    terminal: the step is finished, a checkpoint written, one line says so, status 130."""
    run = tmp_path / "run"
    argv = fill(train(str(run)), world, tmp_path)
    for flag, value in (("--steps", "100000"), ("--checkpoint-every", "100000"),
                        ("--eval-every", "100000"), ("--image-every", "100000"),
                        ("--num-workers", "2")):
        argv[argv.index(flag) + 1] = value
    argv.append("--no-compile")  # a long run compiles by default with AMX: not what is tested
    # As a terminal's foreground job: Ctrl-C not ignored, even where the suite itself runs as a
    # background job of a non-interactive shell (which starts it with SIGINT ignored, inherited).
    proc = subprocess.Popen([sys.executable, "-m", "slotlab.cli", *argv], cwd=REPO,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 200
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.time() < deadline, "training did not start"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=200)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Warning" not in err, err
    last = err.strip().splitlines()[-1]
    match = re.fullmatch(r"interrupted: checkpoint written at step (\d+)", last)
    assert match, err
    step = int(match.group(1))
    assert [s for s, _ in list_checkpoints(run)] == [step]
    assert load_checkpoint(list_checkpoints(run)[-1][1])["step"] == step
    assert not (run / "model").exists()  # not finished: no final model


def test_random_bytes_are_damaged_not_dangerous(tmp_path):
    """Bytes that are no pickle are called damaged; only a pickle naming Python objects is
    refused as one that could run code."""
    import pickle

    from slotlab.errors import CheckpointError

    path = tmp_path / "step_00000002.pt"
    for head in (b"", b"\x80\x04", b"\x80\x02", b"PK"):
        for seed in range(8):
            path.write_bytes(head + random.Random(seed).randbytes(2048))
            with pytest.raises(CheckpointError) as caught:
                load_checkpoint(path)
            assert "could run code" not in str(caught.value), str(caught.value)
            assert "list index" not in str(caught.value) and "pop from" not in str(caught.value)
    path.write_bytes(pickle.dumps({"model": {}, "step": 2, "x": os.system}))
    with pytest.raises(CheckpointError, match="refused: .*could run code"):
        load_checkpoint(path)


def test_atomic_writes_keep_the_old_files_on_a_full_disk(tmp_path):
    """atomic_write (torch.save included) and a model directory's two files: a failed write
    is one WriteError, and the old files are as they were."""
    code = f"""
import resource, signal, sys, torch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
from slotlab.io import WriteError, atomic_write
from slotlab.models import build_model
from slotlab.models.pretrained import save_pretrained
root = {str(tmp_path)!r}
errors = []
try:
    atomic_write(root + "/ck.pt", lambda f: torch.save({{"w": torch.zeros(100_000)}}, f))
except WriteError as exc:
    errors.append(str(exc))
model = build_model("object_discovery", resolution=(32, 32), num_slots=3)
try:
    save_pretrained(model, root + "/model")
except WriteError as exc:
    errors.append(str(exc))
print("\\n".join(errors))
"""
    (tmp_path / "ck.pt").write_bytes(b"old checkpoint")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("old config")
    (tmp_path / "model" / "model.safetensors").write_bytes(b"old weights")
    before = hashes(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2, proc.stdout
    assert re.search(r"could not write \S+ck.pt \(File too large\); the previous version is "
                     r"unchanged", lines[0])
    assert re.search(r"could not write model directory \S+model \(File too large\)", lines[1])
    assert hashes(tmp_path) == before
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "ck.pt", "config.json", "model", "model.safetensors"]
