"""Evaluation helpers: attention maps as masks (the FG-ARI of the attention)."""

import pytest
import torch

from slotlab.metrics import segmentation_metrics
from slotlab.train.evaluate import attention_masks, attribute_accuracy


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


def test_attention_masks_on_the_encoder_cell_centres():
    """With the encoder's geometry (a stride-2 layer on 32 pixels: cells on pixels 1, 3, ...)
    the attention lands on the pixels its cells look at; the nearest-neighbour default puts
    cell i on pixels 2i and 2i + 1."""
    from slotlab.models.object_discovery import encoder_cell_pixels

    cells = encoder_cell_pixels((32, 32), 3, (1, 1, 2, 1))
    ids = torch.zeros(16, 16, dtype=torch.long)
    ids[5:9, 3:12] = 1
    attention = torch.nn.functional.one_hot(ids.flatten(), 2).T[None].float()  # [1, 2, 256]
    masks = attention_masks(attention, (32, 32), cells)
    assert masks.shape == (1, 2, 1, 32, 32)
    slot1 = masks[0, 1, 0]
    assert slot1[11, 7].item() == 1.0 and slot1[17, 23].item() == 1.0  # cells (5, 3), (8, 11)
    assert slot1[10, 7].item() == 0.5 and slot1[9, 7].item() == 0.0  # between cells 4 and 5
    assert attention_masks(attention, (32, 32))[0, 1, 0, 10, 7].item() == 1.0  # nearest
    with pytest.raises(ValueError, match="encoder has 16x16 cells"):
        attention_masks(torch.rand(1, 2, 17), (32, 32), cells)


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


def _object(coords, size, material, shape, color):
    v = torch.zeros(19)
    v[:3] = torch.tensor(coords)
    v[3 + size] = v[5 + material] = v[7 + shape] = v[10 + color] = v[18] = 1.0
    return v


def test_attribute_accuracy_matches_slots_to_objects_first():
    objects = [_object([0.1, 0.2, 0.3], 0, 1, 2, 3), _object([0.8, 0.5, 0.2], 1, 0, 0, 7),
               _object([0.4, 0.9, 0.6], 0, 0, 1, 5)]
    targets = torch.zeros(2, 4, 19)  # the 4th object of each scene is padding
    targets[0, :3] = torch.stack(objects)
    targets[1, :3] = torch.stack(objects[::-1])
    predictions = targets[:, [2, 0, 3, 1]].clone()  # the slots in another order
    result = attribute_accuracy(predictions, targets)
    assert result["acc_all"] == 1.0 and result["position_error"] == 0.0
    predictions[0, 1, 10:18] = torch.eye(8)[4]  # scene 0, object 0: colour 3 -> 4
    predictions[1, 3, 7:10] = torch.eye(3)[0]  # scene 1, slot 3 = object 1: shape 0 already
    predictions[1, 3, 0] += 0.5  # and moved by 0.5 * 6 = 3 units
    result = attribute_accuracy(predictions, targets)
    assert result["acc_color"] == pytest.approx(5 / 6) and result["acc_all"] == pytest.approx(5 / 6)
    assert result["acc_shape"] == result["acc_size"] == result["acc_material"] == 1.0
    assert result["position_error"] == 0.0  # the median of five 0s and one 3
    predictions[:, :, 0] += 0.25
    assert attribute_accuracy(predictions, targets)["position_error"] == pytest.approx(1.5)


def test_evaluate_runs_and_records_the_models_test_iterations():
    """A model with `test_iterations` is evaluated with them (the metrics say how many), and
    equals an evaluation of the same model asked for that many iterations explicitly; training
    mode still runs T."""
    from slotlab.data.sprites import ProceduralSpritesDataset
    from slotlab.models import SlotAttentionAutoEncoder
    from slotlab.train.evaluate import evaluate
    from tests.train.helpers import TINY_MODEL

    torch.manual_seed(0)
    data = ProceduralSpritesDataset("val", num=4, resolution=(32, 32), max_objects=3)
    model = SlotAttentionAutoEncoder(**TINY_MODEL, test_iterations=6)
    plain = SlotAttentionAutoEncoder(**TINY_MODEL)
    plain.load_state_dict(model.state_dict())
    result = evaluate(model, data, "object_discovery", batch_size=4)
    assert result["num_iterations"] == 6 and model.training
    asked = evaluate(plain, data, "object_discovery", batch_size=4, num_iterations=6)
    assert asked["fg_ari"] == pytest.approx(result["fg_ari"])
    assert asked["mse"] == pytest.approx(result["mse"])
    default = evaluate(plain, data, "object_discovery", batch_size=4)
    assert "num_iterations" not in default and default["mse"] != pytest.approx(result["mse"])
