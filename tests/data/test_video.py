"""Procedural video for SAVi: item layout, identities kept over time, exact optical flow,
determinism per (seed, index), and bad options as one ConfigError line."""

import math

import numpy as np
import pytest
import torch

from slotlab.data.build import build_dataset
from slotlab.data.procedural.render import _Shape
from slotlab.data.sprites import _inside
from slotlab.data.video import VIDEO_KEYS, box_centres, boxes_from_masks, flow_to_rgb
from slotlab.data.video_clevr import DEFAULT_WINDOW, ProceduralVideoDataset, _hits, clevr_video
from slotlab.data.video_sprites import ProceduralVideoSpritesDataset, sprite_video
from slotlab.errors import ConfigError

T, SIZE = 4, 32


@pytest.fixture(scope="module", params=["sprites", "clevr"])
def dataset(request):
    if request.param == "sprites":
        return ProceduralVideoSpritesDataset(num=4, resolution=SIZE, num_frames=T,
                                             rotation_speed=8.0)
    return ProceduralVideoDataset(num=3, resolution=SIZE, num_frames=T, rotation_speed=8.0)


def test_item_layout(dataset):
    item = dataset[0]
    m = dataset.max_instances
    assert tuple(item) == VIDEO_KEYS
    shapes = {k: tuple(v.shape) for k, v in item.items()}
    assert shapes == {"video": (T, 3, SIZE, SIZE), "masks": (T, SIZE, SIZE),
                      "boxes": (T, m, 4), "points": (T, m, 2), "flow": (T, SIZE, SIZE, 2),
                      "forward_flow": (T, SIZE, SIZE, 2), "flow_rgb": (T, 3, SIZE, SIZE)}
    assert item["video"].dtype == torch.float32 and item["masks"].dtype == torch.int64
    assert 0 <= item["video"].min() and item["video"].max() <= 1
    # every object shows in the first frame, so the first-frame boxes condition every slot
    present = item["masks"][0].unique()
    n = int(item["masks"].max())
    assert present.tolist() == list(range(n + 1))
    assert (item["boxes"][0, :n, 2:] > item["boxes"][0, :n, :2]).all()
    assert (item["boxes"][:, n:] == 0).all()
    assert torch.equal(item["points"], torch.from_numpy(box_centres(item["boxes"].numpy())))
    # static background (the flow is that of the surface at the pixel centre; a 3-D render's
    # mask is the majority of the samples, so a few silhouette pixels differ)
    still = (item["flow"][item["masks"] == 0] == 0).all(dim=-1).float().mean()
    assert still == 1 if isinstance(dataset, ProceduralVideoSpritesDataset) else still > 0.97


def test_boxes_cover_the_masks(dataset):
    item = dataset[1]
    masks, boxes = item["masks"], item["boxes"]
    for t in range(T):
        for k in range(boxes.shape[1]):
            rows, cols = torch.nonzero(masks[t] == k + 1, as_tuple=True)
            if rows.numel() == 0:
                assert (boxes[t, k] == 0).all()
                continue
            expected = torch.tensor([rows.min() / SIZE, cols.min() / SIZE,
                                     (rows.max() + 1) / SIZE, (cols.max() + 1) / SIZE])
            assert torch.allclose(boxes[t, k], expected)


def test_deterministic_per_seed_and_index(dataset):
    again = type(dataset)(num=dataset.num, resolution=SIZE, num_frames=T, rotation_speed=8.0)
    a, b = dataset[2], again[2]
    assert all(torch.equal(a[k], b[k]) for k in VIDEO_KEYS)
    assert not torch.equal(dataset[1]["video"], a["video"])
    other = type(dataset)(num=dataset.num, seed=1, resolution=SIZE, num_frames=T)
    assert not torch.equal(other[2]["video"], a["video"])
    assert torch.equal(dataset[-1]["video"], dataset[dataset.num - 1]["video"])
    with pytest.raises(IndexError):
        dataset[dataset.num]


def landing(masks: np.ndarray, flow: np.ndarray, step: int) -> tuple[float, float]:
    """Of the object pixels whose flowed position is inside the image, the share that lands on
    the same id in frame t + step, and the share that lands on the same id or another object
    (an occluder)."""
    same = same_or_other = total = 0
    frames, h, w = masks.shape
    for t in range(frames):
        s = t + step
        if not 0 <= s < frames:
            continue
        rows, cols = np.nonzero(masks[t])
        r = np.floor(rows + 0.5 + flow[t, rows, cols, 0]).astype(int)
        c = np.floor(cols + 0.5 + flow[t, rows, cols, 1]).astype(int)
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        ids, landed = masks[t, rows[ok], cols[ok]], masks[s, r[ok], c[ok]]
        same += int((landed == ids).sum())
        same_or_other += int(((landed == ids) | (landed > 0)).sum())
        total += int(ok.sum())
    return same / total, same_or_other / total


def test_identities_and_flow_agree(dataset):
    """Pixels of object i moved by the flow land on object i in the next (previous) frame: the
    ids are kept over time and the flow points where the object went (pixel rounding, mask
    edges and occlusion account for the rest)."""
    for index in range(2):
        item = dataset[index]
        masks = item["masks"].numpy()
        for key, step in (("forward_flow", 1), ("flow", -1)):
            same, same_or_occluded = landing(masks, item[key].numpy(), step)
            assert same > 0.8 and same_or_occluded > 0.9, (key, same, same_or_occluded)


def test_sprite_identities_keep_their_colour():
    clip = sprite_video(np.random.default_rng(5), (SIZE, SIZE), 6, 3, 5, rotation_speed=10)
    for k, obj in enumerate(clip.objects):
        for t in range(6):
            pixels = clip.frames[t][clip.masks[t] == k + 1]
            assert (pixels == np.array(obj["color"], dtype=np.uint8)).all()


def test_sprite_flow_is_exact():
    """Every object pixel centre moved by the flow is inside the same object's shape in the
    other frame (the continuous shape, not the pixel grid)."""
    clip = sprite_video(np.random.default_rng(7), (SIZE, SIZE), 5, 3, 5, rotation_speed=12,
                        speed_range=(0.05, 0.1))
    for t in range(5):
        for flow, state in ((clip.forward_flow[t], t + 2), (clip.backward_flow[t], t)):
            for k, obj in enumerate(clip.objects):
                rows, cols = np.nonzero(clip.masks[t] == k + 1)
                y = rows + 0.5 + flow[rows, cols, 0] - clip.centres[state, k, 1]
                x = cols + 0.5 + flow[rows, cols, 1] - clip.centres[state, k, 0]
                a = math.radians(clip.angles[state, k])
                u, v = math.cos(a) * x + math.sin(a) * y, -math.sin(a) * x + math.cos(a) * y
                scale = 1.0 + 1e-4  # float32 flow
                assert _inside(obj["shape"], u / scale, v / scale, obj["radius"],
                               obj["aspect"]).all()


def test_sprite_translation_flow_is_the_displacement():
    clip = sprite_video(np.random.default_rng(3), (SIZE, SIZE), 4, 2, 3)
    for t in range(4):
        for k in range(len(clip.objects)):
            rows, cols = np.nonzero(clip.masks[t] == k + 1)
            dx, dy = clip.centres[t + 2, k] - clip.centres[t + 1, k]
            assert np.allclose(clip.forward_flow[t][rows, cols], [dy, dx], atol=1e-4)


def test_clevr_flow_is_exact():
    """The surface point seen at a pixel, moved rigidly with its object, is on that object's
    surface in the next frame (checks the spin direction against the renderer's), and the flow
    is its projection's displacement."""
    clip = clevr_video(np.random.default_rng(3), (SIZE, SIZE), 3, 4, 6, rotation_speed=15)
    for t in range(3):
        here, there = clip.scenes[t + 1], clip.scenes[t + 2]
        ids, points, _ = _hits(here, (SIZE, SIZE), DEFAULT_WINDOW)
        for k, (a, b) in enumerate(zip(here["objects"], there["objects"], strict=True)):
            rows, cols = np.nonzero(ids == k + 1)
            if not rows.size:
                continue
            p = points[rows, cols]
            theta = math.radians(b["rotation"] - a["rotation"])
            rel = p[:, :2] - np.asarray(a["3d_coords"][:2])
            moved = np.stack([
                b["3d_coords"][0] + math.cos(theta) * rel[:, 0] - math.sin(theta) * rel[:, 1],
                b["3d_coords"][1] + math.sin(theta) * rel[:, 0] + math.cos(theta) * rel[:, 1],
                p[:, 2]], axis=-1)
            assert np.abs(_Shape(b).sdf(moved)).max() < 1e-3
        assert clip.forward_flow[t][ids == 0].max() == 0


def test_flow_to_rgb():
    flow = np.zeros((2, 8, 8, 2), np.float32)
    flow[0, :, :, 0] = 100.0  # large flow along channel 0 ("x"): hue 0.5, saturation 1
    rgb = flow_to_rgb(flow)
    assert rgb.shape == (2, 8, 8, 3)
    assert np.allclose(rgb[1], 1.0)  # no motion: white
    assert np.allclose(rgb[0], [0.0, 1.0, 1.0])  # cyan
    assert np.allclose(rgb * 255, np.round(rgb * 255))  # uint8 levels
    flow[0, :, :, 0] = -100.0  # hue 0 or 1: red
    assert np.allclose(flow_to_rgb(flow)[0], [1.0, 0.0, 0.0])


def test_boxes_from_masks_by_hand():
    masks = np.zeros((1, 4, 8), np.uint8)
    masks[0, 1:3, 2:5] = 2
    boxes = boxes_from_masks(masks, 3)
    assert np.allclose(boxes[0, 1], [0.25, 0.25, 0.75, 5 / 8])
    assert (boxes[0, [0, 2]] == 0).all()
    assert np.allclose(box_centres(boxes)[0], [[0, 0], [0.5, 3.5 / 8], [0, 0]])


@pytest.mark.parametrize("spec", ["procedural-video", "procedural-video-sprites"])
def test_build_dataset_specs(spec):
    ds = build_dataset(spec, "val", "video", num=2, resolution=(24, 32), num_frames=2)
    item = ds[0]
    assert item["video"].shape == (2, 3, 24, 32) and item["masks"].shape == (2, 24, 32)


@pytest.mark.parametrize("spec, options, name", [
    ("procedural-video-sprites", {"num_frames": 0}, "num_frames"),
    ("procedural-video-sprites", {"max_speed": -1.0}, "max_speed"),
    ("procedural-video-sprites", {"min_speed": 0.5, "max_speed": 0.1}, "min_speed"),
    ("procedural-video-sprites", {"background": "plaid"}, "background"),
    ("procedural-video-sprites", {"rotation_speed": float("nan")}, "rotation_speed"),
    ("procedural-video-sprites", {"max_instances": 2}, "max_instances"),
    ("procedural-video-sprites", {"resolution": "big"}, "resolution"),
    ("procedural-video-sprites", {"fps": 12}, "fps"),
    ("procedural-video", {"window": (0, 500, 0, 10)}, "window"),
    ("procedural-video", {"max_objects": 11}, "max_objects"),
    ("procedural-video", {"min_objects": 5, "max_objects": 3}, "min_objects"),
    ("procedural-video", {"supersample": 0}, "supersample"),
    ("procedural-video", {"num": -1}, "num"),
])
def test_bad_options_are_one_config_error(spec, options, name):
    with pytest.raises(ConfigError) as info:
        build_dataset(spec, "train", "video", **options)
    message = str(info.value)
    assert name in message and "\n" not in message


def test_wrong_task_is_a_config_error():
    with pytest.raises(ConfigError, match="task"):
        ProceduralVideoSpritesDataset(task="set_prediction")
