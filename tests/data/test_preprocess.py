from pathlib import Path

import numpy as np
import pytest
import torch

from slotlab.data.preprocess import clevr_preprocess, clevr_target, resize_mask
from slotlab.errors import DataError

REF = Path(__file__).resolve().parents[3] / "shared" / "reference" / "official_tf"
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason="../shared/reference is absent")


@needs_ref
@pytest.mark.parametrize("task", ["object_discovery", "set_prediction"])
def test_clevr_preprocess_matches_official(task):
    fx = np.load(REF / task / "fixture.npz")
    for raw, expected in zip(fx["raw_image_uint8"], fx["image"]):
        got = clevr_preprocess(raw, task).permute(1, 2, 0).numpy()
        assert got.shape == (128, 128, 3)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@needs_ref
def test_clevr_target_rebuilds_official_target_exactly():
    fx = np.load(REF / "set_prediction" / "fixture.npz")
    for b in range(fx["target"].shape[0]):
        n = int(fx["objects_n"][b])
        objects = [
            {
                "3d_coords": fx["objects_3d_coords"][b, i],
                "size": fx["objects_size"][b, i],
                "material": fx["objects_material"][b, i],
                "shape": fx["objects_shape"][b, i],
                "color": fx["objects_color"][b, i],
            }
            for i in range(n)
        ]
        got = clevr_target(objects, max_objects=10).numpy()
        np.testing.assert_array_equal(got, fx["target"][b])


def test_clevr_target_names_and_unknown_colour():
    t = clevr_target([{"3d_coords": [0, 0, 0.35], "size": "small", "material": "metal",
                       "shape": "sphere", "color": "cyan"}], max_objects=2)
    assert t.shape == (2, 19)
    assert t[0, [3, 6, 8, 17, 18]].tolist() == [1, 1, 1, 1, 1]
    assert t[1].abs().sum() == 0
    with pytest.raises(DataError, match="unknown color 'pink'"):
        clevr_target([{"3d_coords": [0, 0, 0], "size": "small", "material": "metal",
                       "shape": "sphere", "color": "pink"}])


def test_resize_mask_keeps_ids():
    m = torch.zeros(40, 60, dtype=torch.int64)
    m[5:20, 5:30] = 3
    m[25:35, 40:55] = 7
    r = resize_mask(m, (20, 30))
    assert set(r.unique().tolist()) == {0, 3, 7}
    assert r.dtype == torch.int64


def test_resize_mask_gives_each_pixel_the_id_of_most_of_its_colour():
    """A 2x reduction: each pixel is the 2x2 block average of the image (`resize_image`), and
    its label is the block's majority id; ties keep the nearest pixel's (bottom-right) id. At
    1.5x it agrees with nearest-neighbour resizing."""
    m = torch.tensor([[0, 0, 5, 5],
                      [0, 5, 5, 2],
                      [0, 2, 2, 2],
                      [2, 2, 2, 0]])
    assert resize_mask(m, (2, 2)).tolist() == [[0, 5], [2, 2]]
    tie = torch.tensor([[0, 7], [0, 7]])  # 2-2 split: the nearest pixel, (1, 1), is 7
    assert resize_mask(tie, (1, 1)).tolist() == [[7]]
    ids = torch.randint(0, 6, (48, 48), generator=torch.Generator().manual_seed(0))
    nearest = torch.nn.functional.interpolate(ids[None, None].float(), size=(32, 32),
                                              mode="nearest-exact")[0, 0].long()
    assert torch.equal(resize_mask(ids, (32, 32)), nearest)
