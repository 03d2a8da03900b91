"""`slotlab convert-tf` round trip and clear errors on bad checkpoint files."""

import shutil

import numpy as np
import pytest
import torch

from slotlab.cli import main
from slotlab.convert import TFCheckpoint, load_tf_checkpoint
from slotlab.errors import CheckpointError
from slotlab.models.pretrained import load_pretrained, save_pretrained
from tests.conftest import reference_path


@pytest.mark.parametrize("task", ["object_discovery", "set_prediction"])
def test_convert_tf_round_trip(task, tmp_path, capsys):
    root = reference_path("official_tf", task)
    assert main(["convert-tf", str(root / "ckpt-1"), "--task", task, "--out",
                 str(tmp_path / "m")]) == 0
    assert "parameters" in capsys.readouterr().out
    reloaded = load_pretrained(tmp_path / "m")
    original = load_tf_checkpoint(root, task)
    fx = np.load(root / "fixture.npz")
    image = torch.from_numpy(fx["image"]).permute(0, 3, 1, 2)
    noise = torch.from_numpy(fx["slots_init_noise"])
    with torch.no_grad():
        a, b = reloaded(image, noise=noise), original(image, noise=noise)
    for field in ("slots", "attention"):
        assert torch.equal(getattr(a, field), getattr(b, field))


def copy_checkpoint(task, tmp_path):
    src = reference_path("official_tf", task)
    dst = tmp_path / task
    shutil.copytree(src, dst)
    return dst


def last_network_weight(ckpt_dir):
    """(offset, size) of the network weight stored last in the data shard."""
    entries = TFCheckpoint(ckpt_dir).entries.values()
    weights = [e for e in entries if e.name.startswith("network/") and "OPTIMIZER" not in e.name]
    last = max(weights, key=lambda e: e.offset)
    return last.offset, last.size


def expect_clear_error(argv, capsys, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_random_bytes_is_not_a_checkpoint(tmp_path, capsys):
    prefix = tmp_path / "ckpt-1"
    (tmp_path / "ckpt-1.index").write_bytes(np.random.default_rng(0).bytes(4096))
    expect_clear_error(["convert-tf", str(prefix), "--task", "object_discovery", "--out",
                        str(tmp_path / "o")], capsys, "ckpt-1.index", "not a TF checkpoint")


@pytest.mark.parametrize("cut", ["index", "data"])
def test_truncated_checkpoint(tmp_path, capsys, cut):
    ckpt = copy_checkpoint("set_prediction", tmp_path)
    path = ckpt / ("ckpt-1.index" if cut == "index" else "ckpt-1.data-00000-of-00001")
    data = path.read_bytes()
    offset, size = last_network_weight(ckpt)
    path.write_bytes(data[: len(data) // 2] if cut == "index" else data[: offset + size // 2])
    err = expect_clear_error(["convert-tf", str(ckpt), "--task", "set_prediction", "--out",
                              str(tmp_path / "o")], capsys, path.name)
    assert "truncated" in err or "not a TF checkpoint" in err or "corrupt" in err


def test_flipped_byte_in_data_is_detected(tmp_path):
    ckpt = copy_checkpoint("set_prediction", tmp_path)
    path = ckpt / "ckpt-1.data-00000-of-00001"
    data = bytearray(path.read_bytes())
    offset, size = last_network_weight(ckpt)
    data[offset + size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_tf_checkpoint(ckpt, "set_prediction")


def test_other_task_checkpoint(capsys, tmp_path):
    root = reference_path("official_tf", "set_prediction")
    expect_clear_error(["convert-tf", str(root), "--task", "object_discovery", "--out",
                        str(tmp_path / "o")], capsys,
                       "not a object_discovery checkpoint", "set_prediction weights")


def test_missing_paths(tmp_path, capsys):
    expect_clear_error(["convert-tf", str(tmp_path / "nope"), "--task", "set_prediction",
                        "--out", str(tmp_path / "o")], capsys, "does not exist")
    expect_clear_error(["convert-tf", str(tmp_path), "--task", "set_prediction",
                        "--out", str(tmp_path / "o")], capsys, "without a TF 'checkpoint' file")


def test_reads_global_step_and_optimizer_entries():
    ckpt = TFCheckpoint(reference_path("official_tf", "object_discovery"))
    assert int(ckpt.read("global_step/.ATTRIBUTES/VARIABLE_VALUE")) == 1
    assert ckpt.read("optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE").dtype == np.int64


def test_load_pretrained_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not a slotlab model directory"):
        load_pretrained(tmp_path)
    from slotlab.models import SlotAttentionSetPredictor

    save_pretrained(SlotAttentionSetPredictor(), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_pretrained(tmp_path / "m")
