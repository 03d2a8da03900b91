"""The typed configuration: presets, saved run configs and flags are one dataclass, and every
bad key is one error line naming the key and the valid ones."""

import argparse
import dataclasses

import pytest
import yaml

from slotlab.errors import ConfigError
from slotlab.models import CONFIGS, ObjectDiscoveryConfig, SetPredictionConfig
from slotlab.schema import to_dict
from slotlab.train.commands import register, train_config_from_args
from slotlab.train.config import TrainConfig, config_from_dict, list_presets, make_config


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_reads_and_round_trips(preset):
    cfg = make_config(preset)
    assert isinstance(cfg.model, CONFIGS[cfg.task])
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize("values, message", [
    ({"modle": {}}, "unknown key 'modle' in config; valid keys: task, data"),
    ({"model": {"num_slot": 3}}, "unknown key 'num_slot' in model; valid keys: resolution"),
    ({"model": {"num_slots": "7"}}, "model.num_slots must be an integer, got '7'"),
    ({"model": {"slot_init": "uniform"}}, "model.slot_init must be one of 'gaussian', 'learned'"),
    ({"model": {"resolution": [64]}}, "model.resolution must have 2 values"),
    ({"task": "set-prediction", "model": {"decoder_channels": [8]}},
     "unknown key 'decoder_channels' in model"),
    ({"data_options": {"max_object": 3}}, "unknown key 'max_object' in config.data_options"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"learning_rate": -1}, "learning_rate must be > 0"),
    ({"model": {"num_slots": 0}}, "num_slots must be >= 1"),
    ({"task": "segmentation"}, "unknown task 'segmentation'"),
    ({"bf16": "yes"}, "bf16 must be true or false"),
])
def test_bad_keys_are_one_line(values, message):
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict(values)
    assert "\n" not in str(info.value)


def test_a_saved_run_config_with_only_overrides_still_reads():
    """Run configs hold the model fields that differ from the defaults (older runs) or all of
    them: both give the same model."""
    short = config_from_dict({"task": "set_prediction", "model": {"num_slots": 4}})
    full = config_from_dict(short.to_dict())
    assert short == full and full.model == SetPredictionConfig(num_slots=4)
    assert to_dict(full.model)["encoder_strides"] == [1, 2, 2, 1]


def parse(*argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", *argv])


def test_every_config_field_is_a_flag_with_help():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {a.dest: a for a in train._actions}
    for cls in (TrainConfig, ObjectDiscoveryConfig, SetPredictionConfig):
        for f in dataclasses.fields(cls):
            if f.name in ("task", "data", "preset", "model", "data_options"):
                continue
            dest = f.name if cls is TrainConfig else f"model.{f.name}"
            assert dest in flags, f"no flag for {cls.__name__}.{f.name}"
            assert flags[dest].help, f"no help for {dest}"


def test_flags_override_the_preset_and_reach_the_typed_config():
    cfg = train_config_from_args(parse("object-discovery", "--out", "x", "--preset", "cpu-sprites",
                                       "--num-slots", "5", "--resolution", "48x40",
                                       "--no-mask-attention", "--lr", "0.001"))
    assert cfg.model.num_slots == 5 and cfg.model.resolution == (48, 40)
    assert cfg.data_options.resolution == (48, 40)
    assert not cfg.model.mask_attention and cfg.model.attention_locality  # the rest: preset
    assert cfg.learning_rate == 0.001 and cfg.batch_size == 16


def test_a_flag_of_the_other_tasks_model_is_one_line():
    with pytest.raises(ConfigError, match="--decoder-channels is an option of the "
                       "object-discovery model, not of set-prediction"):
        train_config_from_args(parse("set-prediction", "--out", "x", "--decoder-channels", "8,8"))


def test_a_presets_scene_count_stays_with_its_own_data():
    """cpu-sprites-64 generates 100,000 procedural-sprites scenes: with data of another kind (a
    cache, CLEVR-style scenes) that count is left out, the options the kind takes are kept, and a
    count given with the data is kept."""
    own = make_config("cpu-sprites-64", data="procedural-sprites").data_options.kwargs()
    assert own["num"] == 100000 and own["background"] == "greyscale"
    other = make_config("cpu-sprites-64", data="procedural").data_options.kwargs()
    assert "num" not in other and "background" not in other
    assert other["max_objects"] == 5 and other["resolution"] == (64, 64)
    given = make_config("cpu-sprites-64", data="procedural", data_options={"num": 500})
    assert given.data_options.kwargs()["num"] == 500
