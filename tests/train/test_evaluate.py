"""Evaluation helpers: attention maps as masks (the FG-ARI of the attention)."""

import pytest
import torch

from slotlab.metrics import segmentation_metrics
from slotlab.train.evaluate import attention_masks


def test_attention_masks_stride_one_is_a_reshape():
    attention = torch.rand(2, 3, 6 * 5).softmax(dim=1)
    masks = attention_masks(attention, (6, 5))
    assert masks.shape == (2, 3, 1, 6, 5)
    torch.testing.assert_close(masks.flatten(2), attention)


def test_attention_masks_of_a_strided_encoder_cover_each_pixel():
    # a 35x35 image through stride 2 (TF SAME): 18x18 positions; position (i, j) covers
    # pixels (2i..2i+1, 2j..2j+1), the last row/column only half
    attention = torch.rand(1, 4, 18 * 18).softmax(dim=1)
    masks = attention_masks(attention, (35, 35))
    assert masks.shape == (1, 4, 1, 35, 35)
    grid = attention.reshape(1, 4, 18, 18)
    for r, c in [(0, 0), (1, 1), (7, 20), (34, 34), (33, 2)]:
        torch.testing.assert_close(masks[0, :, 0, r, c], grid[0, :, r // 2, c // 2])
    with pytest.raises(ValueError, match="match no encoder grid"):
        attention_masks(torch.rand(1, 4, 17), (35, 35))


def test_perfect_attention_has_fg_ari_one_and_a_split_object_does_not():
    ids = torch.zeros(1, 8, 8, dtype=torch.long)
    ids[0, :4, :4], ids[0, 4:, 4:] = 1, 2
    onehot = torch.nn.functional.one_hot(ids.flatten(1), 3).float()  # [1, 64, 3]: slot = id
    masks = attention_masks(onehot.transpose(1, 2), (8, 8))
    assert segmentation_metrics(ids, masks)["fg_ari"].item() == pytest.approx(1.0)
    split = onehot.clone()
    split[0, :2, :] = torch.tensor([0.0, 0.0, 1.0])  # two pixels of object 1 go to slot 2
    masks = attention_masks(split.transpose(1, 2), (8, 8))
    assert segmentation_metrics(ids, masks)["fg_ari"].item() < 0.95
