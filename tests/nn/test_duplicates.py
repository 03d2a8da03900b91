"""Duplicate slots switched off (`slotlab.nn.duplicates`, the model option `duplicate_overlap`)."""

import json

import pytest
import torch

from slotlab.cli import main
from slotlab.errors import ConfigError
from slotlab.models import SlotAttentionAutoEncoder
from slotlab.nn import SlotAttention
from slotlab.nn.duplicates import DuplicateSlots
from tests.train.helpers import TINY_ARGS, TINY_MODEL, write_folder, write_preset


def attention(*rows: list[float]) -> torch.Tensor:
    """Slots' shares of each input [1, K, N], normalised over the slots."""
    a = torch.tensor(rows, dtype=torch.float32)[None] + 1e-4
    return a / a.sum(dim=1, keepdim=True)


@pytest.mark.parametrize("share, dropped", [(0.5, True), (0.6, True), (0.7, False)])
def test_two_slots_sharing_an_object(share, dropped):
    # slot 0 owns inputs 0-3, slots 1 and 2 share inputs 4-9, slot 3 holds nothing
    a = attention([1] * 4 + [0] * 6, [0] * 4 + [share] * 6, [0] * 4 + [1 - share] * 6, [0] * 10)
    off = DuplicateSlots(0.5)(a)
    assert off.tolist() == [[False, False, dropped, False]]  # the weaker of the pair only


def test_a_slot_with_an_object_of_its_own_is_no_duplicate():
    # slot 0 owns inputs 0-4 and shares 5-9 with slot 1: slot 1 is not a copy of slot 0
    a = attention([1] * 5 + [0.5] * 5, [0] * 5 + [0.5] * 5)
    assert not DuplicateSlots(0.5)(a).any()


def test_three_slots_sharing_an_object_leave_one():
    a = attention([1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1])
    off = DuplicateSlots(0.5)(a)
    assert off.tolist() == [[False, False, True, True]]  # a tie goes to the lower index


def test_spread_or_disjoint_attention_keeps_every_slot():
    spread = torch.full((2, 6, 50), 1 / 6)  # an untrained model's attention: overlap 2/K
    assert not DuplicateSlots(0.5)(spread).any()
    parts = attention([1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1])
    assert not DuplicateSlots(0.5)(parts).any()


@pytest.mark.parametrize("group, dropped", [(None, []), (0.95, [2, 3, 4])])
def test_four_slots_sharing_an_object_faintly(group, dropped):
    """Four even shares overlap pairwise by 2/4, not above 0.5; as one group of four they
    overlap by 1, and one slot takes the object."""
    a = attention([1] * 4 + [0] * 12, *[[0] * 4 + [1] * 4 + [0] * 8] * 4, [0] * 8 + [1] * 8)
    off = DuplicateSlots(0.5, group)(a)
    assert torch.nonzero(off[0]).flatten().tolist() == dropped


def test_a_group_is_judged_only_where_it_holds_less_than_half_the_image():
    spread = torch.full((2, 6, 50), 1 / 6)  # one group of six over the whole image
    assert not DuplicateSlots(0.5, 0.95)(spread).any()
    # slot 0 owns inputs 0-4 and shares 5-9 with slot 1: other shapes, no group
    a = attention([1] * 5 + [0.5] * 5 + [0] * 10, [0] * 5 + [0.5] * 5 + [0] * 10,
                  [0] * 10 + [1] * 10)
    assert not DuplicateSlots(0.5, 0.95)(a).any()
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        DuplicateSlots(0.5, 1.0)


def test_a_slot_once_off_stays_off():
    a = attention([1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0])
    off = DuplicateSlots(0.5)(a, torch.tensor([[False, False, True]]))
    assert off.tolist() == [[False, False, True]]
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        DuplicateSlots(0.0)


def test_slot_attention_switches_a_duplicate_off_from_the_second_iteration():
    torch.manual_seed(0)
    sa = SlotAttention(num_iterations=3, slot_size=8, mlp_hidden_size=16,
                       duplicates=DuplicateSlots(0.5))
    with torch.no_grad():  # attention by similarity: slot i finds the inputs like it
        sa.project_q.weight.copy_(4 * torch.eye(8))
        sa.project_k.weight.copy_(4 * torch.eye(8))
    groups = 5 * torch.eye(8)[:3]  # three kinds of input, five each: [3, 8]
    inputs = groups.repeat_interleave(5, dim=0)[None] + 0.1 * torch.randn(1, 15, 8)
    slots = groups[[0, 1, 2, 0]][None]  # slot 3 starts as a copy of slot 0
    out = sa(inputs, slots, return_all_attention=True)
    assert out.off.tolist() == [[False, False, False, True]]
    first, _, last = out.attention_per_iteration
    torch.testing.assert_close(first[0, 0], first[0, 3])  # copies attend alike...
    assert last[0, 3].max() < 1e-6  # ...until the copy is off: nothing left for it
    torch.testing.assert_close(last.sum(dim=1), torch.ones(1, 15))
    once = sa(inputs, slots, num_iterations=1)
    assert once.off is None  # the first iteration is never judged
    logits = sa.final_logits(inputs, out)
    assert logits[0, 3].max() < -1e8


class LastSlotOff(torch.nn.Module):
    def forward(self, attention: torch.Tensor, off: torch.Tensor | None) -> torch.Tensor:
        return torch.arange(attention.shape[1]).expand(attention.shape[0], -1) == 3


@pytest.mark.parametrize("mask_attention", [True, False])
def test_a_switched_off_slot_draws_nothing(mask_attention):
    torch.manual_seed(0)
    model = SlotAttentionAutoEncoder(**TINY_MODEL, mask_attention=mask_attention,
                                     duplicate_overlap=0.5)
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    assert isinstance(model.slot_attention.duplicates, DuplicateSlots)
    model.slot_attention.duplicates = LastSlotOff()
    out = model(image)
    assert out.masks[:, 3].max() < 1e-6
    assert out.masks[:, :3].amax(dim=(2, 3, 4)).min() > 1e-3
    torch.testing.assert_close(out.masks.sum(dim=1), torch.ones(2, 1, 32, 32))


def test_model_option_and_cli(tmp_path):
    plain = SlotAttentionAutoEncoder(**TINY_MODEL, mask_attention=True)
    assert plain.slot_attention.duplicates is None
    for bad, message in (({"duplicate_overlap": 1.5}, r"in \[0, 1\]"),
                         ({"duplicate_overlap": 0.5, "invariant": True}, "not with invariant"),
                         ({"duplicate_group": 0.9}, "needs duplicate_overlap"),
                         ({"duplicate_overlap": 0.5, "duplicate_group": 1.0},
                          r"duplicate_group must be in \[0, 1\)")):
        with pytest.raises(ConfigError, match=message):
            SlotAttentionAutoEncoder(**TINY_MODEL, **bad)
    data, preset = write_folder(tmp_path / "data"), write_preset(tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    assert main(["train", "object-discovery", "--data", f"folder:{data}", "--out", str(run),
                 "--preset", str(preset), *TINY_ARGS, "--duplicate-overlap", "0.5",
                 "--duplicate-group", "0.95"]) == 0
    saved = json.loads((run / "model" / "config.json").read_text())
    assert saved["config"]["duplicate_overlap"] == 0.5
    assert saved["config"]["duplicate_group"] == 0.95
