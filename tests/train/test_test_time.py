"""Test-time settings (K, T) chosen after training on held-out images no evaluation scores,
recorded in test_time.json and the saved model, and used by `slotlab eval` of the run."""

import dataclasses
import json
import shutil

import pytest
import torch

from slotlab.cli import main
from slotlab.errors import ConfigError
from slotlab.models import build_model, model_config
from slotlab.models.config import ObjectDiscoveryConfig
from slotlab.models.pretrained import load_pretrained
from slotlab.train.checkpoint import load_model
from slotlab.train.config import make_config
from slotlab.train.evaluate import eval_num_slots, evaluate, slot_noise
from slotlab.train.test_time import (
    MIN_IMAGES,
    TEST_TIME_FILE,
    candidates,
    held_out_images,
    recorded_choice,
)
from tests.train.helpers import TINY_ARGS, TINY_MODEL, write_folder, write_preset


def test_candidates_put_the_models_own_settings_first_once():
    config = ObjectDiscoveryConfig(num_slots=4, num_iterations=3, test_iterations=5)
    assert candidates(config, [4, 6], [3, 5]) == [(4, 5), (4, 3), (6, 3), (6, 5)]
    assert candidates(config, [], [7]) == [(4, 5), (4, 7)]
    assert candidates(config, [6], []) == [(4, 5), (6, 5)]


def test_the_held_out_images_follow_the_evaluated_ones():
    with_masks = [{"mask": None}] * 1000
    assert held_out_images(with_masks[:500], 256, 256) == range(256, 500)
    assert held_out_images(with_masks, 256, 100) == range(256, 356)
    with pytest.raises(ConfigError, match="at least 64 held-out images after the 256"):
        held_out_images(range(300), 256, 256)
    with pytest.raises(ConfigError, match="needs ground-truth masks"):
        held_out_images([{"image": None}] * 400, 256, 256)


def test_test_slots_set_the_eval_mode_number_of_slots():
    config = model_config("object_discovery", {**TINY_MODEL, "test_slots": 6})
    model = build_model("object_discovery", config).eval()
    assert eval_num_slots(model) == 6
    assert slot_noise(model, 2, torch.Generator().manual_seed(0)).shape == (2, 6, 16)
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).masks.shape[1] == 6
        model.train()
        assert model(torch.zeros(2, 3, 32, 32)).masks.shape[1] == 4  # training keeps K


def test_learned_slots_cannot_change_k_at_test_time():
    with pytest.raises(ValueError, match="test_slots 6 needs Gaussian initial slots"):
        ObjectDiscoveryConfig(num_slots=4, slot_init="learned", test_slots=6)
    with pytest.raises(ConfigError, match="test_time_slots needs Gaussian initial slots"):
        make_config(None, model={"slot_init": "learned", "num_slots": 4},
                    test_time_slots=(4, 6))
    with pytest.raises(ConfigError, match="object discovery only"):
        make_config(None, task="set_prediction", test_time_iterations=(5,))


def test_a_run_chooses_records_and_evaluates_with_its_test_time_settings(tmp_path, capsys):
    data = write_folder(tmp_path / "data", num=8)
    held_out = write_folder(tmp_path / "held_out", num=8 + MIN_IMAGES, seed=3)
    run = tmp_path / "run"
    assert main(["train", "object-discovery", "--preset", str(write_preset(tmp_path / "t.yaml")),
                 "--data", f"folder:{data}", "--eval-data", f"folder:{held_out}", "--out",
                 str(run), "--test-time-slots", "4,6", "--test-time-iterations", "1,3",
                 "--test-time-num", "100", *TINY_ARGS]) == 0
    out = capsys.readouterr().out
    record = json.loads((run / TEST_TIME_FILE).read_text())
    assert record["step"] == 6 and record["images"] == [8, 8 + MIN_IMAGES]
    assert record["data"] == f"folder:{held_out}" and record["split"] == "all"
    pairs = [(r["num_slots"], r["num_iterations"]) for r in record["grid"]]
    assert pairs == [(4, 3), (4, 1), (6, 1), (6, 3)]  # the trained settings first
    best = max(record["grid"], key=lambda r: r["fg_ari"])
    chosen = record["chosen"]
    assert chosen == {"num_slots": best["num_slots"], "num_iterations": best["num_iterations"]}
    assert f"test time: K = {chosen['num_slots']}, T = {chosen['num_iterations']}" in out

    # the saved model, the run's newest checkpoint and `slotlab eval` run the choice
    saved = load_pretrained(run / "model")
    assert (eval_num_slots(saved), saved.slot_attention.iterations()) == tuple(chosen.values())
    model, info = load_model(run)
    assert info["step"] == 6
    assert (eval_num_slots(model), model.slot_attention.iterations()) == tuple(chosen.values())
    assert main(["eval", str(run), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored.get("num_slots", 4) == chosen["num_slots"]
    assert scored.get("num_iterations", 3) == chosen["num_iterations"]
    # an earlier checkpoint was not chosen for: it runs the trained settings
    assert main(["eval", str(run), "--checkpoint", "4", "--json"]) == 0
    assert "num_slots" not in json.loads(capsys.readouterr().out)
    # the last evaluation in training used the choice
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if '"split"' in line][-1]
    assert last.get("num_slots", 4) == chosen["num_slots"]


def test_a_choice_for_another_step_is_not_used_and_a_damaged_file_is_one_line(tmp_path):
    (tmp_path / TEST_TIME_FILE).write_text(json.dumps(
        {"step": 10, "chosen": {"num_slots": 6, "num_iterations": 5}}))
    assert recorded_choice(tmp_path, 10) == {"num_slots": 6, "num_iterations": 5}
    assert recorded_choice(tmp_path, 9) is None
    (tmp_path / TEST_TIME_FILE).write_text("{")
    with pytest.raises(ConfigError, match="is not a test-time choice slotlab wrote"):
        recorded_choice(tmp_path, 10)


@pytest.mark.parametrize("case", ["too few images", "no masks"])
def test_without_held_out_images_to_choose_on_the_run_says_so_and_trains(tmp_path, capsys, case):
    data = write_folder(tmp_path / "data", num=8)
    held_out = write_folder(tmp_path / "held_out", num=8 if case == "too few images" else 80)
    if case == "no masks":
        shutil.rmtree(held_out / "masks")
    run = tmp_path / "run"
    assert main(["train", "object-discovery", "--preset", str(write_preset(tmp_path / "t.yaml")),
                 "--data", f"folder:{data}", "--eval-data", f"folder:{held_out}", "--out",
                 str(run), "--test-time-iterations", "1,5", *TINY_ARGS]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "test-time" in line]
    reason = ("needs at least 64 held-out images after the 8" if case == "too few images"
              else "needs ground-truth masks")
    assert len(notes) == 1 and reason in notes[0] and "evaluation runs K = 4, T = 3" in notes[0]
    assert not (run / TEST_TIME_FILE).exists()
    assert load_pretrained(run / "model").slot_attention.iterations() == 3


def test_evaluate_reports_the_eval_mode_slots(tmp_path):
    config = model_config("object_discovery", TINY_MODEL)
    model = build_model("object_discovery", dataclasses.replace(config, test_slots=5))
    folder = write_folder(tmp_path / "d", num=4)
    from slotlab.data import build_dataset

    dataset = build_dataset(f"folder:{folder}", "all", "object_discovery", resolution=(32, 32))
    assert evaluate(model, dataset, "object_discovery")["num_slots"] == 5
    assert "num_slots" not in evaluate(build_model("object_discovery", config), dataset,
                                       "object_discovery")
