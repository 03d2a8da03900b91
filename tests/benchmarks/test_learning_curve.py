"""benchmarks/learning_curve.py: variant names and the tables it prints from run directories."""

import argparse
import json
from pathlib import Path

import pytest


def write_run(run_dir: Path, evals: list[tuple[int, float, float, float]]) -> Path:
    """metrics.jsonl with a training line and an evaluation (step, minutes, fg_ari, mse) each."""
    run_dir.mkdir(parents=True)
    lines = []
    for step, minutes, fg_ari, mse in evals:
        lines.append({"step": step, "loss": 0.1, "train_minutes": minutes})
        lines.append({"step": step, "split": "val", "train_minutes": minutes,
                      "images_seen": 16 * step, "fg_ari": fg_ari, "mse": mse})
    (run_dir / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    return run_dir


def test_variants_combine_and_unknown_names_are_refused(lc):
    settings = lc.variant_settings("locality+batch8+clip")
    assert settings == {"model": {"attention_locality": True}, "grad_clip": 0.05,
                        "batch_size": 8}
    assert lc.parse_variant("clip+ema") == "clip+ema"
    with pytest.raises(argparse.ArgumentTypeError, match="unknown variant nope"):
        lc.parse_variant("clip+nope")


def test_step_table_lines_runs_up_by_step(lc, tmp_path):
    a = write_run(tmp_path / "a", [(1000, 4.0, 0.5, 0.03), (2000, 8.0, 0.6, 0.02)])
    b = write_run(tmp_path / "b", [(1000, 6.0, 0.4, 0.05), (1500, 9.0, 0.45, 0.04)])
    rows = lc.step_table([a, b]).splitlines()
    assert rows[0] == f"| step | {a} | {b} |"
    assert rows[2:] == ["| 1000 | 0.500 (0.0300) | 0.400 (0.0500) |",
                        "| 1500 |  | 0.450 (0.0400) |",
                        "| 2000 | 0.600 (0.0200) |  |"]


def test_compare_table_within_the_budget(lc, tmp_path):
    run = write_run(tmp_path / "r", [(1000, 5.0, 0.4, 0.05), (2000, 10.0, 0.7, 0.03),
                                     (3000, 15.0, 0.6, 0.02), (4000, 25.0, 0.9, 0.01)])
    row = lc.compare_table([run], minutes=20).splitlines()[-1]
    # 48,000 images in 15 minutes; binds at step 2,000; best and last within 20 minutes
    assert row == (f"| {run} | 53 | 10.0 min (step 2000) | 0.700 at 10.0 min | "
                   "0.700 at 10.0 min | 0.600 at 15.0 min |")


def test_dataset_table_has_a_row_per_dataset_and_seed_with_the_untrained_figure(lc):
    assert lc.parse_dataset("black=folder:a@folder:b") == ("black", "folder:a", "folder:b")
    assert lc.parse_dataset("own=procedural-sprites") == ("own", "procedural-sprites", None)
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=SPEC"):
        lc.parse_dataset("folder:a")
    rec = {"step": 0, "train_minutes": 0.0, "fg_ari": 0.0, "mbo": 0.0}
    runs = {"black/baseline": {0: [{**rec, "step": 500, "train_minutes": 2.0, "fg_ari": 0.7},
                                   {**rec, "step": 1000, "train_minutes": 4.0, "fg_ari": 0.85,
                                    "mbo": 0.8, "untrained": {"fg_ari": 0.55}}]},
            "own/baseline": {1: [{**rec, "step": 400, "train_minutes": 3.0, "fg_ari": 0.6,
                                  "mbo": 0.5}]}}
    lines = lc.dataset_table(runs, "fg_ari", 0.8).splitlines()
    assert lines[2] == "| black/baseline | 0 | 1000 | 4.0 | 0.850 | 0.800 | 0.550 | 4.0 |"
    assert lines[3] == "| own/baseline | 1 | 400 | 3.0 | 0.600 | 0.500 | nan | no |"


def test_report_with_test_time_reads_runs_under_dataset_names(lc, tmp_path, monkeypatch, capsys):
    from slotlab.cli import main
    from tests.train.helpers import TINY_ARGS, write_folder, write_preset

    data, preset = write_folder(tmp_path / "data"), write_preset(tmp_path / "tiny.yaml")
    run = tmp_path / "out" / "black" / "baseline" / "seed0"
    assert main(["train", "object-discovery", "--data", f"folder:{data}", "--out", str(run),
                 "--preset", str(preset), "--no-bf16", *TINY_ARGS]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.argv", [
        "learning_curve.py", "--preset", str(preset), "--report-only", "--seeds", "0",
        "--datasets", "black=unused", "--out", str(tmp_path / "out"), "--test-time", "5:1"])
    lc.main()
    rows = capsys.readouterr().out.split("other K (slots) and T (iterations):")[1].split("\n")
    rows = [r for r in rows if r.startswith("| black/")]
    # the trained K = 4, T = 3 first, then the asked K = 5, T = 1; one seed: no spread
    assert [r.split(" | ")[:3] for r in rows] == [["| black/baseline", "4", "3"],
                                                  ["| black/baseline", "5", "1"]]
    assert all("± 0.000" in r for r in rows)
