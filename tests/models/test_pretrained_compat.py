"""A model directory written by slotlab's model format version 1 (the initial slots inside Slot
Attention) loads into today's layout and reproduces the outputs it was saved with."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slotlab.errors import CheckpointError
from slotlab.models.pretrained import load_pretrained

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "model_v1"


def test_version_1_model_directory_loads_and_reproduces_its_outputs():
    model = load_pretrained(FIXTURE)
    assert model.config.slot_init == "learned" and model.config.attention_locality
    assert model.config.test_iterations == 4
    expected = load_file(str(FIXTURE / "expected_outputs.safetensors"))
    with torch.no_grad():
        out = model(expected["image"])
    torch.testing.assert_close(out.recon_combined, expected["recon_combined"], atol=1e-6, rtol=0)
    torch.testing.assert_close(out.masks, expected["masks"], atol=1e-6, rtol=0)


def test_unknown_format_version_and_removed_option_are_one_line(tmp_path):
    model_dir = tmp_path / "m"
    shutil.copytree(FIXTURE, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "version": 9}))
    with pytest.raises(CheckpointError, match="format version 9"):
        load_pretrained(model_dir)
    config["config"]["decoder_frequencies"] = 3
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown key 'decoder_frequencies'"):
        load_pretrained(model_dir)


def test_retired_option_loads_at_todays_value_and_is_refused_at_another(tmp_path):
    """`bounded_colours` was removed: a saved `false` (today's model) loads with the same
    outputs, a saved `true` is one line naming the option."""
    model_dir = tmp_path / "m"
    shutil.copytree(FIXTURE, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["config"]["bounded_colours"] = False
    (model_dir / "config.json").write_text(json.dumps(config))
    expected = load_file(str(FIXTURE / "expected_outputs.safetensors"))
    with torch.no_grad():
        out = load_pretrained(model_dir)(expected["image"])
    torch.testing.assert_close(out.masks, expected["masks"], atol=1e-6, rtol=0)
    config["config"]["bounded_colours"] = True
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="bounded_colours was removed"):
        load_pretrained(model_dir)
