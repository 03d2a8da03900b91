"""Video metrics: FG-ARI / mBO over whole videos (checked against the official SAVi metric on the
fixture) and slot tracking on hand-made cases."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slotlab.metrics.segmentation import segmentation_metrics
from slotlab.metrics.video import object_slots, tracking_metrics, video_segmentation_metrics

ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "official_savi"


def one_hot_masks(slots: torch.Tensor, k: int) -> torch.Tensor:
    """Slot ids [B, T, H, W] -> masks [B, T, K, H, W]."""
    return torch.nn.functional.one_hot(slots, k).permute(0, 1, 4, 2, 3).float()


def moving_squares(frames: int = 4) -> torch.Tensor:
    """Two 2x2 objects moving right over an 8x8 background: ids [1, T, 8, 8]."""
    ids = torch.zeros(1, frames, 8, 8, dtype=torch.long)
    for t in range(frames):
        ids[0, t, 1:3, t:t + 2] = 1
        ids[0, t, 5:7, t + 2:t + 4] = 2
    return ids


def test_perfect_tracking():
    ids = moving_squares()
    masks = one_hot_masks(ids + 3, 6)  # object i -> slot i + 3 in every frame
    result = tracking_metrics(ids, masks)
    assert result["tracked"].tolist() == [1.0] and result["id_switches"].tolist() == [0]
    assert result["num_objects"].tolist() == [2]
    seg = video_segmentation_metrics(ids, masks)
    assert seg["fg_ari"].tolist() == [1.0] and seg["ari"].tolist() == [1.0]
    assert seg["mbo"].tolist() == [1.0]


def test_a_swap_is_counted():
    ids = moving_squares()
    slots = ids.clone()
    slots[0, 2:][ids[0, 2:] == 1] = 2  # from frame 2 on the two objects swap slots
    slots[0, 2:][ids[0, 2:] == 2] = 1
    result = tracking_metrics(ids, one_hot_masks(slots, 3))
    assert result["tracked"].tolist() == [0.0] and result["id_switches"].tolist() == [2]
    assert object_slots(ids, one_hot_masks(slots, 3))[0].tolist() == [[1, 2], [1, 2], [2, 1],
                                                                       [2, 1]]
    # each frame alone is perfect, the video is not: FG-ARI over the volume sees the swap
    seg = video_segmentation_metrics(ids, one_hot_masks(slots, 3))
    assert seg["fg_ari"].item() < 0.5
    per_frame = segmentation_metrics(ids[0], one_hot_masks(slots, 3)[0])
    assert (per_frame["fg_ari"] == 1).all()
    # skipping the first frame does not hide a later swap
    assert tracking_metrics(ids, one_hot_masks(slots, 3), skip_first_frame=True)[
        "id_switches"].tolist() == [2]


def test_switch_and_back_counts_twice_and_hidden_frames_are_skipped():
    ids = moving_squares(5)
    ids[0, 2][ids[0, 2] == 2] = 0  # object 2 hidden in frame 2
    slots = ids.clone()
    slots[0, 1][ids[0, 1] == 1] = 3  # object 1: slot 1, 3, 1, 1, 1
    result = tracking_metrics(ids, one_hot_masks(slots, 4))
    assert result["id_switches"].tolist() == [2] and result["tracked"].tolist() == [0.5]
    assert object_slots(ids, one_hot_masks(slots, 4))[0, 2].tolist() == [1, -1]


def test_soft_masks_use_the_mask_mass():
    ids = moving_squares(2)
    masks = torch.zeros(1, 2, 3, 8, 8)
    masks[:, :, 0] = 0.4  # a diffuse background slot
    masks[:, :, 1] = (ids == 1) * 0.6
    masks[:, :, 2] = (ids == 2) * 0.6
    assert tracking_metrics(ids, masks[:, :, :, None])["tracked"].tolist() == [1.0]


def test_no_objects_and_bad_shapes():
    ids = torch.zeros(2, 3, 4, 4, dtype=torch.long)
    result = tracking_metrics(ids, torch.rand(2, 3, 5, 4, 4))
    assert torch.isnan(result["tracked"]).all() and result["id_switches"].tolist() == [0, 0]
    with pytest.raises(ValueError, match="true_ids"):
        tracking_metrics(ids[0], torch.rand(2, 3, 5, 4, 4))
    with pytest.raises(ValueError, match="2 frames"):
        video_segmentation_metrics(ids[:, :1], torch.rand(2, 1, 5, 4, 4), skip_first_frame=True)


def test_skip_first_frame_drops_frame_zero():
    ids = moving_squares()
    slots = ids.clone()
    slots[0, 0][ids[0, 0] == 1] = 2  # only frame 0 is wrong: object 1 merged with object 2
    masks = one_hot_masks(slots, 3)
    assert video_segmentation_metrics(ids, masks)["fg_ari"].item() < 1.0
    assert video_segmentation_metrics(ids, masks, skip_first_frame=True)["fg_ari"].item() == 1.0


@pytest.mark.parametrize("name, variant", [("fixture.npz", "cond"),
                                           ("fixture_uncond_param.npz", "uncond_param"),
                                           ("fixture_uncond_gauss.npz", "uncond_gauss")])
def test_equals_the_official_metric_over_all_frames(name, variant):
    """The official train step's `ari` / `ari_nobg` (mean over the batch) on the fixture's
    segmentations equal ours over all frames, including the first."""
    if not (ROOT / name).is_file():
        pytest.skip(f"official SAVi fixture not found: {ROOT / name}")
    official = json.loads((ROOT / "meta.json").read_text())["variants"][variant][
        "official_train_step_metrics"]
    with np.load(ROOT / name) as fx:
        ids = torch.from_numpy(fx["in__segmentations"]).long()
        slots = torch.from_numpy(fx["out__segmentations"][..., 0]).long()
    masks = one_hot_masks(slots, 11)
    ours = video_segmentation_metrics(ids, masks)
    assert abs(ours["ari"].mean().item() - official["ari"]) < 1e-6
    assert abs(ours["fg_ari"].mean().item() - official["ari_nobg"]) < 1e-6
    skipped = video_segmentation_metrics(ids, masks, skip_first_frame=True)
    assert abs(skipped["fg_ari"].mean().item() - official["ari_nobg"]) > 1e-5
