"""`slotlab report`: the page of a tiny trained run of each task holds its config, evaluation,
curves and N images of K slots, nothing from the network, and data that reproduce the model."""

import json
import re
import shutil

import numpy as np
import pytest
import torch

from slotlab.cli import main
from slotlab.data import build_dataset
from slotlab.errors import SlotlabError
from slotlab.metrics import segmentation_metrics
from slotlab.report import build_report, pack, recombine, unpack
from slotlab.report.build import VIDEO_ERROR, parse_iterations
from slotlab.train.checkpoint import load_model
from slotlab.train.losses import hungarian_match, pairwise_huber_cost
from tests.report.conftest import ITERATIONS, NUM_IMAGES, VIDEO_DATA
from tests.report.helpers import page_data

K = 4


def external_references(html: str) -> list[str]:
    """src / href attributes (and CSS url()s) that point at the network."""
    found = re.findall(r"""(?:src|href)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]*)""", html, re.I)
    found += re.findall(r"""url\(\s*["']?\s*((?:https?:)?//[^)"']*)""", html, re.I)
    return found


def test_object_discovery_page(od_report, od_run):
    html = od_report.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert external_references(html) == []
    assert "<link" not in html and "<img" not in html and "<iframe" not in html
    data = page_data(html)
    assert data["task"] == "object_discovery" and data["num_slots"] == K
    assert (data["height"], data["width"]) == (32, 32)
    assert data["iterations"] == ITERATIONS and data["default_iterations"] == 3
    assert len(data["images"]) == NUM_IMAGES
    for image in data["images"]:
        assert image["input"]["shape"] == [3, 32, 32] and image["mask"]["shape"] == [32, 32]
        assert [e["iterations"] for e in image["per_t"]] == ITERATIONS
        for entry, t in zip(image["per_t"], ITERATIONS):
            assert entry["rgb"]["shape"] == [K, 3, 32, 32]
            assert entry["logits"]["shape"] == [K, 32, 32] and entry["logits"]["q"] == "u16"
            assert entry["attention"]["shape"] == [t, K, 32, 32]  # every iteration
            assert {"fg_ari", "mbo", "mse"} <= set(entry["metrics"])
    # the config
    assert 'id="facts"' in html and f"folder:{od_run.parent / 'data'}" in html
    config = re.search(r'<pre id="config">(.*?)</pre>', html, re.S).group(1)
    assert "num_slots: 4" in config and "steps: 6" in config
    # the evaluation table: untrained beside trained (step 6)
    table = re.search(r'<table class="metrics" id="evaluation-table">(.*?)</table>', html,
                      re.S).group(1)
    assert "<th>untrained</th><th>trained (step 6)</th>" in table
    fg_ari = re.search(r'<tr data-key="fg_ari">(.*?)</tr>', table).group(1)
    assert len(re.findall(r"<td>[-0-9.e]+</td>", fg_ari)) == 2
    assert "recorded by the run" in html  # training wrote the untrained figures
    # the curves: loss over the 6 steps, FG-ARI and mBO at the 2 evaluations
    svgs = re.findall(r'<svg class="curve".*?</svg>', html, re.S)
    assert len(svgs) == 3
    titles = [re.search(r'class="curve-title">(.*?)</text>', s).group(1) for s in svgs]
    assert titles == ["training loss", "FG-ARI (val split)", "mBO (val split)"]
    points = [len(re.search(r'<polyline points="([^"]*)"', s).group(1).split()) for s in svgs]
    assert points == [6, 2, 2]
    assert all("untrained" in s for s in svgs[1:])  # the untrained model's level


def _model_outputs(run, t, num=NUM_IMAGES):
    """The model's outputs on the report's images, with the report's slot noise (seed 0)."""
    model, info = load_model(run, "cpu")
    config = info["config"]
    dataset = build_dataset(config["data"], "val", "object_discovery", resolution=(32, 32))
    image = torch.stack([dataset[i]["image"] for i in range(num)])
    mask = torch.stack([dataset[i]["mask"] for i in range(num)])
    noise = torch.randn(num, model.num_slots, model.slot_size,
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(image, noise=noise, num_iterations=t, return_all_attention=True), image, mask


@pytest.mark.parametrize("t_index", [0, 1])
def test_object_discovery_data_reproduce_the_model(od_report, od_run, t_index):
    """Dequantised, the page's slots recombine into the model's reconstruction; its attention
    and per-image metrics are the model's."""
    data = page_data(od_report.read_text())
    t = ITERATIONS[t_index]
    out, images, mask = _model_outputs(od_run, t)
    for i, image in enumerate(data["images"]):
        entry = image["per_t"][t_index]
        rgb, logits = unpack(entry["rgb"]), unpack(entry["logits"])
        assert np.abs(rgb - out.recons[i].numpy()).max() <= entry["rgb"]["step"] / 2 + 1e-6
        assert np.abs(logits - out.mask_logits[i, :, 0].numpy()).max() <= \
            entry["logits"]["step"] / 2 + 1e-5
        recon = recombine(rgb, logits, list(range(K)))
        np.testing.assert_allclose(recon, out.recon_combined[i].numpy(), atol=0.02)
        attention = unpack(entry["attention"])
        expected = torch.stack(out.attention_per_iteration, 1)[i].reshape(t, K, 32, 32)
        np.testing.assert_allclose(attention, expected.numpy(), atol=0.5 / 255 + 1e-6)
        metrics = segmentation_metrics(mask[i : i + 1], out.masks[i : i + 1])
        assert entry["metrics"]["fg_ari"] == pytest.approx(float(metrics["fg_ari"][0]), abs=1e-5)
        np.testing.assert_array_equal(unpack(image["mask"]), mask[i].numpy())
        np.testing.assert_allclose(unpack(image["input"]), images[i].numpy(),
                                   atol=1 / 255 + 1e-6)


def test_recombine_drops_slots():
    rng = np.random.default_rng(0)
    rgb, logits = rng.uniform(-1, 1, (3, 3, 4, 5)), rng.normal(size=(3, 4, 5)) * 3
    full = recombine(rgb, logits, [0, 1, 2])
    masks = torch.softmax(torch.as_tensor(logits), 0).numpy()
    np.testing.assert_allclose(full, (masks[:, None] * rgb).sum(0))
    np.testing.assert_allclose(recombine(rgb, logits, [2]), rgb[2])  # one slot: its RGB
    two = torch.softmax(torch.as_tensor(logits[[0, 2]]), 0).numpy()
    np.testing.assert_allclose(recombine(rgb, logits, [0, 2]),
                               (two[:, None] * rgb[[0, 2]]).sum(0))
    assert recombine(rgb, logits, []).shape == (3, 4, 5)


def test_pack_round_trip():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(2, 3, 7)) * 10
    for bits in (8, 16):
        packed = pack(values, bits)
        assert packed["q"] == f"u{bits}" and packed["shape"] == [2, 3, 7]
        restored = unpack(packed)
        assert np.abs(restored - values).max() <= packed["step"] / 2 + 1e-12
        assert restored.min() == values.min()  # lo is exact
    constant = unpack(pack(np.full((2, 2), 0.25), 8))
    np.testing.assert_array_equal(constant, np.full((2, 2), 0.25))


def test_set_prediction_page(sp_report, sp_run):
    html = sp_report.read_text()
    assert external_references(html) == []
    data = page_data(html)
    assert data["task"] == "set_prediction" and data["num_slots"] == K
    assert len(data["images"]) == NUM_IMAGES
    model, info = load_model(sp_run, "cpu")
    dataset = build_dataset("procedural", "val", "set_prediction", num=8, resolution=(32, 32))
    image = torch.stack([dataset[i]["image"] for i in range(NUM_IMAGES)])
    target = torch.stack([dataset[i]["target"] for i in range(NUM_IMAGES)])
    noise = torch.randn(NUM_IMAGES, K, model.slot_size,
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(image, noise=noise, num_iterations=3, return_all_attention=True)
    rows, cols = hungarian_match(pairwise_huber_cost(out.predictions, target))
    for i, view in enumerate(data["images"]):
        real = int((target[i, :, 18] != 0).sum())
        assert len(view["objects"]) == real
        entry = view["per_t"][ITERATIONS.index(3)]
        assert entry["attention"]["shape"] == [3, K, 32, 32]  # 16x16 cells placed on pixels
        assert len(entry["slots"]) == K
        for r, c in zip(rows[i], cols[i]):
            slot = entry["slots"][c]
            assert slot["prediction"]["p"] == pytest.approx(float(out.predictions[i, c, 18]),
                                                            abs=1e-4)
            if target[i, r, 18] != 0:
                assert slot["target"]["index"] == r
            else:
                assert slot["target"] is None
    svgs = re.findall(r'<svg class="curve".*?</svg>', html, re.S)
    assert len(svgs) == 2 and "AP@inf" in svgs[1]
    table = re.search(r'id="evaluation-table">(.*?)</table>', html, re.S).group(1)
    assert '<tr data-key="ap_inf">' in table and "<th>untrained</th>" in table


def test_recorded_untrained_figures_are_used(od_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(od_run, run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[-1]) if "split" in lines[-1] else None
    assert record is not None
    record["untrained"] = {"fg_ari": 0.123456, "mbo": 0.0421}
    (run / "metrics.jsonl").write_text("\n".join([*lines[:-1], json.dumps(record)]) + "\n")
    html = build_report(run, tmp_path / "out", num=1).read_text()
    fg_ari = re.search(r'<tr data-key="fg_ari">(.*?)</tr>', html).group(1)
    assert "<td>0.1235</td>" in fg_ari
    assert "untrained: recorded by the run" in html


def test_user_errors_are_one_line(tmp_path, capsys, od_run, monkeypatch):
    video = tmp_path / "video"
    video.mkdir()
    (video / "config.yaml").write_text("task: video\ndata: procedural\n")
    with monkeypatch.context() as patch:  # a slotlab without the video model
        patch.setattr("slotlab.report.build.video_supported", lambda: False)
        assert main(["report", str(video), "--out", str(tmp_path / "o")]) == 2
        assert capsys.readouterr().err.strip() == f"error: {VIDEO_ERROR}"
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    for bad in ("0", "1,x", ""):
        assert main(["report", str(od_run), "--out", str(tmp_path / "o"), "--iterations",
                     bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --iterations") and "\n" not in err
    assert main(["report", str(od_run), "--out", str(tmp_path / "o"), "--num", "0"]) == 2
    assert "error: --num" in capsys.readouterr().err
    assert parse_iterations("5, 1,3,3") == [1, 3, 5]
    with pytest.raises(SlotlabError):
        parse_iterations("-1")


def test_video_page(video_report, video_model, tmp_path, capsys):
    """A SAVi model's clips: every frame's slots (decoded flow and mask logits) recombine into
    the model's decoded flow; the corrector's attention and the true masks of every frame."""
    html = video_report.read_text()
    assert external_references(html) == []
    data = page_data(html)
    assert data["task"] == "video" and data["target"] == "flow" and len(data["images"]) == 2
    model, _ = load_model(video_model, "cpu")
    dataset = build_dataset(VIDEO_DATA, "val", "video", resolution=(32, 32))
    items = [dataset[i] for i in range(2)]
    with torch.no_grad():
        out = model(torch.stack([it["video"] for it in items]),
                    boxes=torch.stack([it["boxes"] for it in items]))
    frames, k = out.mask_logits.shape[1:3]
    assert data["num_slots"] == k
    for i, clip in enumerate(data["images"]):
        assert clip["frames"] == frames and len(clip["per_t"]) == 1
        entry = clip["per_t"][0]
        assert entry["rgb"]["shape"] == [frames, k, 3, 32, 32]
        assert entry["logits"]["shape"] == [frames, k, 32, 32]
        assert entry["attention"]["shape"] == [frames, 1, k, 32, 32]
        np.testing.assert_array_equal(unpack(clip["mask"]), items[i]["masks"].numpy())
        rgb, logits = unpack(entry["rgb"]), unpack(entry["logits"])
        for f in range(frames):
            np.testing.assert_allclose(recombine(rgb[f], logits[f], list(range(k))),
                                       out.target[i, f].numpy() * 2 - 1, atol=0.02)
        assert {"fg_ari", "mbo", "mse"} <= set(entry["metrics"])
    assert "1 per frame" in html
    assert main(["report", str(video_model), "--data", VIDEO_DATA, "--out", str(tmp_path),
                 "--iterations", "2"]) == 2
    assert "--iterations does not apply to a video model" in capsys.readouterr().err
