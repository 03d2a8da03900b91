"""benchmarks/tf_official.py and `throughput.py --tf-python/--tf-src`: the commands, the reading of
the child's JSON line, the table of ratios and the one-line errors, all without TensorFlow. One test
runs the official TF code itself, only where SLOTLAB_TF_PYTHON (a TensorFlow venv's python) and
SLOTLAB_TF_SRC (the directory holding the official slot_attention folder) are set."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TF_OFFICIAL = ROOT / "benchmarks" / "tf_official.py"


def fake_python(path: Path, body: str) -> Path:
    """An executable that stands in for a TF venv's python: it ignores its arguments."""
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def official_src(root: Path) -> Path:
    (root / "slot_attention").mkdir(parents=True)
    for name in ("model.py", "utils.py"):
        (root / "slot_attention" / name).write_text("")
    return root


def test_tf_command_and_modes(tp):
    cmd = tp.tf_command(Path("/venv/bin/python"), Path("/src"), "sp-official", "bf16", 32, 3, 1, 2)
    assert cmd == ["/venv/bin/python", str(ROOT / "benchmarks" / "tf_official.py"),
                   "--official-src", "/src", "--config", "sp-official", "--mode", "bf16",
                   "--batch", "32", "--steps", "3", "--warmup", "1", "--threads", "2"]
    assert [tp.tf_mode(m) for m in ["fp32", "fp32-cl", "tf32", "bf16-cl-pad-compile"]] == [
        "fp32", "fp32", None, "bf16"]


def test_measure_tf_runs_each_config_once_per_arithmetic(tp, tmp_path, monkeypatch, capsys):
    calls = []

    def run_row(cmd, config, mode):
        calls.append(cmd)
        return {"config": config, "mode": mode, "train_img_s": 2.0, "infer_img_s": 8.0}

    monkeypatch.setattr(tp, "run_row", run_row)
    monkeypatch.setattr(tp.torch, "get_num_threads", lambda: 2)
    rows = tp.measure_tf(Path("py"), Path("src"), ["quickstart", "od-official", "sp-official"],
                         ["fp32", "fp32-cl", "bf16", "bf16-cl"], 3, 1)
    assert [(r["config"], r["mode"]) for r in rows] == [
        ("od-official", "fp32"), ("od-official", "bf16"),
        ("sp-official", "fp32"), ("sp-official", "bf16")]
    batches = [cmd[cmd.index("--batch") + 1] for cmd in calls]
    assert batches == ["8", "8", "32", "32"]  # slotlab's CPU batch sizes
    assert all(cmd[cmd.index("--threads") + 1] == "2" for cmd in calls)
    assert "official TF od-official fp32: train 2.0, infer 8.0 img/s" in capsys.readouterr().out


def test_run_row_reads_the_last_json_line(tp, tmp_path):
    row = {"config": "od-official", "mode": "fp32", "train_img_s": 1.5}
    python = fake_python(tmp_path / "python",
                         f"echo 'a log line'\necho '{json.dumps(row)}'\n")
    cmd = tp.tf_command(python, tmp_path, "od-official", "fp32", 8, 1, 1, 1)
    assert tp.run_row(cmd, "od-official", "fp32") == row


def test_run_row_failures_are_one_line(tp, tmp_path):
    python = fake_python(tmp_path / "broken", "echo 'Traceback (most recent call last):' >&2\n"
                         "echo \"ModuleNotFoundError: No module named 'scipy'\" >&2\nexit 1\n")
    assert tp.run_row([str(python)], "sp-official", "bf16") == {
        "config": "sp-official", "mode": "bf16",
        "error": "ModuleNotFoundError: No module named 'scipy'"}
    python = fake_python(tmp_path / "quiet", "echo 'no row here'\n")
    assert tp.run_row([str(python)], "sp-official", "fp32")["error"] == (
        "no JSON line in its output")


def test_tf_table_sets_rows_side_by_side_with_ratios(tp):
    def row(config, mode, batch, train, infer):
        return {"config": config, "mode": mode, "batch_size": batch, "train_img_s": train,
                "infer_img_s": infer}

    rows = [row("od-official", "fp32", 8, 1.6, 5.8), row("od-official", "fp32-cl", 8, 1.7, 6.1),
            row("od-official", "bf16", 8, 2.5, 6.7), row("quickstart", "fp32", 32, 200.0, 600.0),
            row("sp-official", "fp32", 32, 34.6, 98.3),
            {"config": "sp-official", "mode": "bf16", "error": "out of memory"}]
    about = {"tf_version": "2.15.1", "onednn": True, "intra_op_threads": 2,
             "inter_op_threads": 1, "peak_mem_mib": 1500.4}
    tf_rows = [row("od-official", "fp32", 8, 0.8, 2.9) | about,
               row("od-official", "bf16", 8, 1.0, 3.35) | about,
               {"config": "sp-official", "mode": "fp32", "error": "ImportError: scipy"},
               row("sp-official", "bf16", 32, 20.0, 50.0) | about]
    lines = tp.format_tf_table(rows, tf_rows).splitlines()
    assert lines[0] == ("official TF code: TensorFlow 2.15.1, oneDNN on, 2 intra-op / 1 inter-op "
                        "threads; TF bf16 = oneDNN bf16 math mode (TF_SET_ONEDNN_FPMATH_MODE=BF16)")
    assert lines[1].startswith("| config | batch | slotlab mode | TF mode | slotlab train img/s ")
    assert lines[3:] == [
        "| od-official | 8 | fp32 | fp32 | 1.6 | 0.8 | 2.00 | 5.8 | 2.9 | 2.00 | 1500 |",
        "| od-official | 8 | fp32-cl | fp32 | 1.7 | 0.8 | 2.12 | 6.1 | 2.9 | 2.10 | 1500 |",
        "| od-official | 8 | bf16 | bf16 | 2.5 | 1.0 | 2.50 | 6.7 | 3.4 | 2.00 | 1500 |",
        "| sp-official | | fp32 | fp32 | TF failed: ImportError: scipy | | | | | | |",
        "| sp-official | | bf16 | bf16 | slotlab failed: out of memory | | | | | | |"]
    assert tp.format_tf_table(rows, []).splitlines()[0] == "official TF code: no row measured"


@pytest.mark.parametrize("case", ["no python", "no sources", "alone", "cuda", "no TF config"])
def test_throughput_refuses_bad_tf_options_in_one_line(tp, tmp_path, monkeypatch, capsys, case):
    src = official_src(tmp_path / "src")
    argv = {
        "no python": ["--device", "cpu", "--tf-python", str(tmp_path / "nope"), "--tf-src", src],
        "no sources": ["--device", "cpu", "--tf-python", sys.executable, "--tf-src", tmp_path],
        "alone": ["--device", "cpu", "--tf-python", sys.executable],
        "cuda": ["--device", "cuda", "--tf-python", sys.executable, "--tf-src", src],
        "no TF config": ["--device", "cpu", "--configs", "quickstart",
                         "--tf-python", sys.executable, "--tf-src", src],
    }[case]
    expected = {
        "no python": f"--tf-python {tmp_path / 'nope'}: no such executable",
        "no sources": f"--tf-src {tmp_path}: no slot_attention/model.py there",
        "alone": "--tf-python and --tf-src go together",
        "cuda": "--tf-python measures the official TF code on the CPU: add --device cpu",
        "no TF config": "--tf-python compares od-official and sp-official",
    }[case]

    def never(*args, **kwargs):
        raise AssertionError("measured before the options were checked")

    monkeypatch.setattr(tp, "matmul_peak", never)
    monkeypatch.setattr(sys, "argv", ["throughput.py", *map(str, argv)])
    with pytest.raises(SystemExit) as exit_info:
        tp.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"throughput.py: error: {expected}")


def test_tf_official_refuses_missing_sources_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(TF_OFFICIAL), "--official-src", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"tf_official.py: error: {tmp_path} has no slot_attention/model.py: give the directory "
        "that holds the official slot_attention folder (a google-research/google-research "
        "checkout)")


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="TensorFlow is importable here")
def test_tf_official_without_tensorflow_says_so_in_one_line(tmp_path):
    src = official_src(tmp_path / "src")
    proc = subprocess.run([sys.executable, str(TF_OFFICIAL), "--official-src", str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"tf_official.py: error: TensorFlow is not importable by {sys.executable} "
        "(No module named 'tensorflow')"]


def test_synthetic_inputs_are_shaped_as_the_official_data(tfo):
    od = tfo.synthetic_batch("od-official", 3)
    assert list(od) == ["image"]
    assert od["image"].shape == (3, 128, 128, 3) and od["image"].dtype == "float32"
    assert -1 <= od["image"].min() < -0.9 and 0.9 < od["image"].max() <= 1
    sp = tfo.synthetic_batch("sp-official", 4)
    assert sp["target"].shape == (4, 10, 19) and sp["target"].dtype == "float32"
    assert set(sp["target"][:, :, -1].ravel()) <= {0.0, 1.0}
    assert 0 <= sp["target"].min() and sp["target"].max() <= 1


def test_math_mode_sets_and_clears_the_onednn_variable(tfo, monkeypatch):
    monkeypatch.setenv("TF_SET_ONEDNN_FPMATH_MODE", "BF16")
    tfo.set_math_mode("fp32")
    assert "TF_SET_ONEDNN_FPMATH_MODE" not in os.environ
    tfo.set_math_mode("bf16")
    assert os.environ["TF_SET_ONEDNN_FPMATH_MODE"] == "BF16"


@pytest.mark.skipif(not (os.environ.get("SLOTLAB_TF_PYTHON") and os.environ.get("SLOTLAB_TF_SRC")),
                    reason="SLOTLAB_TF_PYTHON and SLOTLAB_TF_SRC are not set")
def test_official_tf_set_prediction_step_runs():
    proc = subprocess.run(
        [os.environ["SLOTLAB_TF_PYTHON"], str(TF_OFFICIAL), "--official-src",
         os.environ["SLOTLAB_TF_SRC"], "--config", "sp-official", "--batch", "2", "--steps", "1",
         "--warmup", "1", "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["config"] == "sp-official" and row["batch_size"] == 2
    assert row["train_img_s"] > 0 and row["infer_img_s"] > 0
    assert row["train_step"] == "eager" and row["fpmath"] == "strict"
    assert row["intra_op_threads"] == 1 and row["inter_op_threads"] == 1
