"""Tiny trained runs of both tasks and their reports, built once per test session."""

from pathlib import Path

import pytest
import yaml

from slotlab.cli import main
from tests.train.helpers import TINY_ARGS, write_folder, write_preset

NUM_IMAGES = 3
ITERATIONS = [1, 3]
SET_PREDICTION_MODEL = {
    "resolution": [32, 32], "num_slots": 4, "slot_size": 16, "mlp_hidden_size": 32,
    "encoder_channels": [16, 16], "encoder_strides": [1, 2],  # strided: attention on 16x16 cells
    "classifier_hidden_size": 32,
}


VIDEO_MODEL = {
    "resolution": [32, 32], "slot_size": 16, "encoder_channels": [8, 8],
    "encoder_mlp_hidden_size": 16, "initializer": "boxes", "initializer_hidden_size": 16,
    "predictor_heads": 2, "predictor_mlp_size": 16, "decoder_channels": [8, 8],
    "decoder_strides": [2, 1],
}
VIDEO_DATA = "procedural-video-sprites"


def _train_object_discovery(root: Path) -> Path:
    data, preset = write_folder(root / "data"), write_preset(root / "tiny.yaml")
    run = root / "od"
    assert main(["train", "object-discovery", "--data", f"folder:{data}", "--out", str(run),
                 "--preset", str(preset), *TINY_ARGS]) == 0
    return run


def _train_set_prediction(root: Path) -> Path:
    preset = root / "sp.yaml"
    preset.write_text(yaml.safe_dump({
        "task": "set_prediction", "model": SET_PREDICTION_MODEL,
        "data_options": {"num": 16, "resolution": [32, 32]},
    }))
    run = root / "sp"
    assert main(["train", "set-prediction", "--data", "procedural", "--out", str(run),
                 "--preset", str(preset), *TINY_ARGS]) == 0
    return run


@pytest.fixture(scope="session")
def od_run(tmp_path_factory) -> Path:
    return _train_object_discovery(tmp_path_factory.mktemp("report_od"))


@pytest.fixture(scope="session")
def sp_run(tmp_path_factory) -> Path:
    return _train_set_prediction(tmp_path_factory.mktemp("report_sp"))


@pytest.fixture(scope="session")
def od_report(od_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report_od_page")
    assert main(["report", str(od_run), "--out", str(out), "--num", str(NUM_IMAGES),
                 "--iterations", ",".join(map(str, ITERATIONS))]) == 0
    return out / "index.html"


@pytest.fixture(scope="session")
def sp_report(sp_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report_sp_page")
    assert main(["report", str(sp_run), "--out", str(out), "--num", str(NUM_IMAGES),
                 "--iterations", ",".join(map(str, ITERATIONS))]) == 0
    return out / "index.html"


@pytest.fixture(scope="session")
def video_model(tmp_path_factory) -> Path:
    """A tiny untrained SAVi model directory (training has no video loop yet)."""
    pytest.importorskip("slotlab.models.savi")
    pytest.importorskip("slotlab.data.video_sprites")
    import torch

    from slotlab.models import build_model
    from slotlab.models.pretrained import save_pretrained

    torch.manual_seed(0)
    return save_pretrained(build_model("video", VIDEO_MODEL),
                           tmp_path_factory.mktemp("report_video") / "model")


@pytest.fixture(scope="session")
def video_report(video_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report_video_page")
    assert main(["report", str(video_model), "--data", VIDEO_DATA, "--out", str(out),
                 "--num", "2"]) == 0
    return out / "index.html"
