"""Training and scoring SAVi on procedural video: the official objective and schedule, the video
metrics, slot pictures (sheet and GIF), resume, `slotlab eval` and `slotlab visualize`."""

import json
import math

import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from slotlab.cli import main
from slotlab.data import build_dataset
from slotlab.models.savi import SAVi, savi_loss
from slotlab.train.config import make_config
from slotlab.train.evaluate import evaluate, video_metrics
from slotlab.train.step import build_state, compute_loss, train_step, video_forward
from slotlab.train.visualize import HEADER_HEIGHT, PAD
from slotlab.train.visualize_video import video_columns, video_gif_frames, video_sheet

MODEL = {"resolution": [16, 16], "num_slots": 4, "slot_size": 16, "encoder_channels": [8, 8],
         "encoder_mlp_hidden_size": 16, "initializer_hidden_size": 16, "predictor_mlp_size": 16,
         "decoder_channels": [8, 8], "decoder_strides": [2, 1], "decoder_kernel_size": 3}
DATA = {"resolution": [16, 16], "num": 64, "num_frames": 3, "max_objects": 3}


def tiny_config(**overrides):
    model = {**MODEL, **overrides.pop("model", {})}
    values = dict(task="video", data="procedural-video-sprites", batch_size=4, steps=3,
                  learning_rate=2e-4, warmup_steps=1, lr_schedule="cosine", grad_clip=0.05,
                  data_options=DATA, model=model, eval_every=3, eval_num=8, image_every=3,
                  checkpoint_every=2, log_every=1, num_workers=0)
    return make_config(None, **{**values, **overrides})


def batch_of(cfg, n=4):
    dataset = build_dataset(cfg.data, "train", "video", **cfg.data_options.kwargs())
    return default_collate([dataset[i] for i in range(n)])


def preset_file(tmp_path, **values):
    text = json.dumps(tiny_config(**values).to_dict())  # JSON is YAML
    path = tmp_path / "video.yaml"
    path.write_text(text)
    return path


def test_cosine_schedule_is_the_official_warmup_cosine_decay():
    """optax.warmup_cosine_decay_schedule(0, peak, warmup, decay_steps=steps, end_value=0)."""
    from slotlab.train.config import learning_rate

    cfg = make_config(None, task="video", learning_rate=2e-4, warmup_steps=100, steps=1100,
                      lr_schedule="cosine")
    assert learning_rate(cfg, 0) == 0.0
    assert learning_rate(cfg, 50) == pytest.approx(1e-4)
    assert learning_rate(cfg, 100) == pytest.approx(2e-4)
    assert learning_rate(cfg, 600) == pytest.approx(1e-4)  # half way: cos(pi / 2)
    assert learning_rate(cfg, 350) == pytest.approx(2e-4 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert learning_rate(cfg, 1100) == pytest.approx(0.0, abs=1e-12)
    exponential = cfg.replace(lr_schedule="exponential", decay_steps=1000)
    assert learning_rate(exponential, 600) == pytest.approx(2e-4 * 0.5 ** 0.6)


@pytest.mark.parametrize("target", ["frames", "flow"])
def test_the_loss_is_savi_loss_of_the_model_target(target):
    torch.manual_seed(0)
    cfg = tiny_config(model={"target": target})
    state = build_state(cfg, torch.device("cpu"))
    batch = state.prepare_batch(batch_of(cfg))
    loss, out = compute_loss(state.model, batch, "video")
    truth = batch["video"] if target == "frames" else batch["flow_rgb"]
    assert loss.item() == pytest.approx(savi_loss(out.target, truth).item())
    expected = ((out.target - truth) ** 2).sum(dim=(1, 2, 3, 4)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    other = batch["flow_rgb"] if target == "frames" else batch["video"]
    assert loss.item() != pytest.approx(savi_loss(out.target, other).item())


def test_conditioning_and_noise_reach_the_model():
    """boxes start the slots (other boxes, other output); a Gaussian initializer starts from
    the step's noise."""
    torch.manual_seed(0)
    cfg = tiny_config()
    model = SAVi(cfg.model).eval()
    batch = batch_of(cfg)
    a = video_forward(model, batch, None).slots
    moved = {**batch, "boxes": batch["boxes"].flip(2)}
    assert not torch.allclose(a, video_forward(model, moved, None).slots)
    gaussian = SAVi(tiny_config(model={"initializer": "gaussian"}).model).eval()
    noise = torch.randn(4, 4, 16)
    one = video_forward(gaussian, batch, noise)
    assert torch.equal(one.initial_slots, noise)
    assert not torch.allclose(one.slots, video_forward(gaussian, batch, noise + 1).slots)


def test_a_training_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = tiny_config(learning_rate=2e-3, grad_clip=None)
    state = build_state(cfg, torch.device("cpu"))
    batch = state.prepare_batch(batch_of(cfg))
    first = train_step(state, batch, state.draw_noise(), 2e-3).item()
    for _ in range(15):
        last = train_step(state, batch, state.draw_noise(), 2e-3).item()
    assert state.step == 16 and last < 0.8 * first


def test_video_metrics_of_the_true_masks_are_perfect_and_a_swap_is_caught():
    cfg = tiny_config()
    batch = batch_of(cfg)
    ids = batch["masks"]  # [B, T, H, W], ids 0..3
    masks = torch.nn.functional.one_hot(ids, 4).permute(0, 1, 4, 2, 3)[:, :, :, None].float()

    class Out:
        pass

    out = Out()
    out.masks, out.target = masks, batch["video"]
    values = video_metrics(out, batch, batch["video"])
    assert torch.allclose(values["fg_ari"], torch.ones(4))
    assert torch.allclose(values["tracked"], torch.ones(4))
    assert values["id_switches"].sum() == 0 and values["mse"].sum() == 0
    swapped = masks.clone()
    swapped[:, -1, 1], swapped[:, -1, 2] = masks[:, -1, 2], masks[:, -1, 1]  # last frame
    out.masks = swapped
    values = video_metrics(out, batch, batch["video"])
    both = [b for b in range(4) if ((ids[b, -1] == 1).any() and (ids[b, -1] == 2).any()
                                    and (ids[b, -2] == 1).any() and (ids[b, -2] == 2).any())]
    assert both, "no video with objects 1 and 2 in the last two frames"
    for b in both:
        assert values["tracked"][b] < 1 and values["id_switches"][b] >= 2
        assert values["fg_ari"][b] < 1


def test_pictures_are_a_frames_by_slots_sheet_and_an_animation():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = SAVi(cfg.model).eval()
    batch = batch_of(cfg)
    with torch.no_grad():
        out = video_forward(model, batch, None)
    sheet = video_sheet(batch["video"], out, batch["video"], num=2)
    frames = video_gif_frames(batch["video"], out, batch["video"], num=3)
    assert len(video_columns(4)) == 9 and len(frames) == 3  # T frames
    top = HEADER_HEIGHT + PAD
    assert sheet.height - top == 2 * (frames[0].height - top)  # 6 rows against 3
    assert sheet.width == frames[0].width


def test_train_resume_eval_and_visualize_a_video_run(tmp_path, capsys):
    preset = preset_file(tmp_path)
    run = tmp_path / "run"
    args = ["train", "video", "--preset", str(preset), "--out", str(run), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "tracked" in out and "FG-ARI" in out
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (evaluation,) = [r for r in records if "split" in r]
    assert evaluation["num_videos"] == 8 and evaluation["step"] == 3
    assert {"fg_ari", "mbo", "ari", "tracked", "id_switches", "fg_ari_after_first"} <= set(
        evaluation)
    assert {"fg_ari", "mbo", "tracked"} <= set(evaluation["untrained"])
    assert (run / "images" / "step_00000003.png").is_file()
    with Image.open(run / "images" / "step_00000003.gif") as gif:
        assert gif.n_frames == 3
    # resume: the run continues from its checkpoint to the new step count
    assert main([*args, "--steps", "4"]) == 0
    assert "resuming" in capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text()
             .splitlines()]
    assert max(steps) == 4
    # slotlab eval scores held-out videos with the untrained model beside
    assert main(["eval", str(run), "--num", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "video" and result["num_videos"] == 4
    assert 0 <= result["fg_ari"] <= 1 and "tracked" in result["untrained"]
    # slotlab visualize: the sheet and its animation
    picture = tmp_path / "pics" / "slots.png"
    assert main(["visualize", str(run), "--out", str(picture), "--num", "2"]) == 0
    assert picture.is_file()
    with Image.open(picture.with_suffix(".gif")) as gif:
        assert gif.n_frames == 3


def test_evaluate_refuses_other_slots_or_iterations_for_video():
    cfg = tiny_config()
    dataset = build_dataset(cfg.data, "val", "video", **cfg.data_options.kwargs())
    with pytest.raises(Exception, match="trained with"):
        evaluate(SAVi(cfg.model), dataset, "video", num=2, num_slots=5)
