"""A user's own image folder: any preset trains on it, evaluation scores held-out images (or
the folder given with --eval-data) and says which, and every evaluation carries the untrained
model's figures."""

import json

import pytest

from slotlab.cli import main
from slotlab.data import build_dataset
from slotlab.data.folder import ImageFolderDataset
from slotlab.errors import ConfigError
from slotlab.train.checkpoint import list_checkpoints
from tests.train.helpers import TINY_ARGS, write_folder, write_preset


def eval_records(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "split" in r]


def test_a_preset_with_generator_options_trains_on_a_folder(tmp_path, capsys):
    """cpu-sprites sets procedural-sprites options (num, background, ...): with --data folder:
    they are left out with a note, the images are resized to the preset's 32x32, and the
    evaluations score the folder's held-out images."""
    data = write_folder(tmp_path / "data", num=40, size=48)
    run = tmp_path / "run"
    assert main(["train", "object-discovery", "--preset", "cpu-sprites", "--data",
                 f"folder:{data}", "--out", str(run), "--steps", "2", "--eval-every", "2",
                 "--eval-num", "64", "--no-progress", "--num-workers", "0"]) == 0
    err = capsys.readouterr().err
    assert "the preset's data options background, max_objects, min_objects, num are for its " \
        "own data; they are left out with folder:" in err
    (record,) = eval_records(run)
    held_out = ImageFolderDataset(data, "val")
    assert record["data"] == f"folder:{data}" and record["split"] == "val"
    assert record["num_images"] == len(held_out) < 40
    assert set(record["untrained"]) >= {"fg_ari", "mbo", "mse"}


def test_an_option_a_kind_does_not_take_is_one_line(tmp_path, capsys):
    data = write_folder(tmp_path / "data")
    with pytest.raises(ConfigError, match="dataset kind 'folder' does not take the option 'num'; "
                       "it takes: resolution, crop"):
        build_dataset(f"folder:{data}", "train", num=5)
    preset = tmp_path / "p.yaml"
    preset.write_text(f"task: object_discovery\ndata: folder:{data}\n"
                      "model: {resolution: [32, 32], num_slots: 4, slot_size: 16, "
                      "mlp_hidden_size: 32, encoder_channels: [16, 16, 16, 16], "
                      "decoder_channels: [16, 16, 16], decoder_strides: [2, 2, 1]}\n"
                      "data_options: {max_objects: 3}\n")
    capsys.readouterr()
    assert main(["train", "object-discovery", "--preset", str(preset), "--out",
                 str(tmp_path / "run"), *TINY_ARGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not take the option 'max_objects'" in err


def test_eval_data_is_what_evaluation_scores_and_checkpoint_picks_the_step(tmp_path, capsys):
    data = write_folder(tmp_path / "data")
    other = write_folder(tmp_path / "other", num=5, seed=7)
    preset = write_preset(tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    assert main(["train", "object-discovery", "--data", f"folder:{data}", "--eval-data",
                 f"folder:{other}", "--out", str(run), "--preset", str(preset),
                 *TINY_ARGS]) == 0
    records = eval_records(run)
    assert [r["step"] for r in records] == [3, 6]
    assert all(r["data"] == f"folder:{other}" and r["split"] == "all" and r["num_images"] == 5
               for r in records)
    # the untrained figures are computed once and the same at every evaluation
    assert records[0]["untrained"] == records[1]["untrained"]
    assert (run / "untrained.json").is_file()
    capsys.readouterr()
    assert main(["eval", str(run), "--checkpoint", "2", "--json"]) == 0
    at_2 = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run), "--json"]) == 0
    newest = json.loads(capsys.readouterr().out)
    assert at_2["step"] == 2 and newest["step"] == 6 and at_2["mse"] != newest["mse"]
    assert at_2["untrained"] == newest["untrained"]
    path = list_checkpoints(run)[-2][1]
    assert main(["eval", str(run), "--checkpoint", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 4
    assert main(["eval", str(run), "--checkpoint", "3"]) == 2
    assert "has no checkpoint of step 3; it has steps 2, 4, 6" in capsys.readouterr().err
    # a folder given to eval is scored whole, and the report says so
    assert main(["eval", str(run), "--data", f"folder:{other}", "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert whole["split"] == "all" and whole["num_images"] == 5
