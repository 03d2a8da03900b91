"""ARI / FG-ARI (DeepMind semantics), mBO and mIoU."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from slotlab.metrics import (
    adjusted_rand_index,
    fg_adjusted_rand_index,
    segmentation_errors,
    segmentation_metrics,
)

REF = Path(__file__).resolve().parents[3] / "shared" / "reference" / "metrics"
ARI_FIXTURES = REF / "ari_fixtures.npz"

needs_fixtures = pytest.mark.skipif(
    not ARI_FIXTURES.is_file(), reason="shared/reference/metrics/ari_fixtures.npz not available"
)


def _fixture_cases() -> list[str]:
    if not ARI_FIXTURES.is_file():
        return []
    with np.load(ARI_FIXTURES) as z:
        return [str(c) for c in z["case_names"]]


def _load_case(case: str) -> dict[str, np.ndarray]:
    with np.load(ARI_FIXTURES) as z:
        fields = ("true_mask", "pred_mask", "ari", "fg_ari")
        return {f: z[f"{case}__{f}"] for f in fields}


def one_hot_np(ids: np.ndarray, n: int) -> np.ndarray:
    """[..., N] int -> [..., N, n] float32 one-hot."""
    return np.eye(n, dtype=np.float32)[ids]


def reference_ari(true_mask: np.ndarray, pred_mask: np.ndarray) -> np.ndarray:
    """Independent per-scene ARI with exact rational arithmetic (pair counting, C(n, 2) form)."""
    out = []
    for true, pred in zip(true_mask, pred_mask):
        true_ids, pred_ids = true.argmax(-1), pred.argmax(-1)
        if np.all(true_ids == true_ids[0]) and np.all(pred_ids == pred_ids[0]):
            out.append(1.0)
            continue
        labelled = true.sum(-1) > 0
        table: dict[tuple[int, int], int] = {}
        for t, p in zip(true_ids[labelled], pred_ids[labelled]):
            table[(int(t), int(p))] = table.get((int(t), int(p)), 0) + 1
        rows: dict[int, int] = {}
        cols: dict[int, int] = {}
        for (t, p), c in table.items():
            rows[t] = rows.get(t, 0) + c
            cols[p] = cols.get(p, 0) + c
        n = int(labelled.sum())
        pairs = math.comb(n, 2)
        index = sum(math.comb(c, 2) for c in table.values())
        sum_rows = sum(math.comb(c, 2) for c in rows.values())
        sum_cols = sum(math.comb(c, 2) for c in cols.values())
        if pairs == 0:
            out.append(math.nan)
            continue
        expected = Fraction(sum_rows * sum_cols, pairs)
        maximum = Fraction(sum_rows + sum_cols, 2)
        if maximum == expected:
            out.append(math.nan)
            continue
        out.append(float((index - expected) / (maximum - expected)))
    return np.asarray(out)


def assert_close_nan(actual: torch.Tensor | np.ndarray, expected: np.ndarray, atol: float) -> None:
    actual = actual.cpu().numpy() if isinstance(actual, torch.Tensor) else actual
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol, equal_nan=True)


def ids_to_masks(ids: np.ndarray, k: int) -> np.ndarray:
    """Predicted slot ids [B, N] -> probabilities [B, N, k] whose argmax is ``ids``."""
    return 0.1 + one_hot_np(ids, k)


# --- official fixtures -------------------------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize("case", _fixture_cases())
def test_fixture_ari_and_fg_ari(case: str) -> None:
    c = _load_case(case)
    true = c["true_mask"].astype(np.float32)
    ari = adjusted_rand_index(true, c["pred_mask"])
    fg_ari = fg_adjusted_rand_index(torch.from_numpy(true), torch.from_numpy(c["pred_mask"]))
    assert ari.dtype == torch.float32 and ari.shape == (true.shape[0],)
    assert_close_nan(ari, c["ari"], 1e-5)
    assert_close_nan(fg_ari, c["fg_ari"], 1e-5)
    # uint8 masks as stored give the same values.
    assert_close_nan(adjusted_rand_index(c["true_mask"], c["pred_mask"]), c["ari"], 1e-5)


@needs_fixtures
@pytest.mark.parametrize("case", _fixture_cases())
def test_fixture_segmentation_metrics_on_id_maps(case: str) -> None:
    c = _load_case(case)
    b, n, _ = c["true_mask"].shape
    side = int(round(math.sqrt(n)))
    ids = torch.from_numpy(c["true_mask"].argmax(-1)).reshape(b, side, side)
    masks = torch.from_numpy(c["pred_mask"]).permute(0, 2, 1).reshape(b, -1, 1, side, side)
    result = segmentation_metrics(ids, masks)
    assert_close_nan(result["ari"], c["ari"], 1e-5)
    assert_close_nan(result["fg_ari"], c["fg_ari"], 1e-5)
    for key in ("mbo", "miou"):
        values = result[key].numpy()
        assert values.shape == (b,) and np.all((values >= 0) & (values <= 1))
    assert np.all(result["miou"].numpy() <= result["mbo"].numpy() + 1e-6)


# --- ARI edge cases ----------------------------------------------------------------------------


def test_perfect_segmentation_up_to_permutation() -> None:
    rng = np.random.default_rng(0)
    true_ids = rng.integers(0, 5, (3, 64))
    perm = np.array([3, 0, 6, 1, 2, 4, 5])
    true, pred = one_hot_np(true_ids, 5), ids_to_masks(perm[true_ids], 7)
    assert torch.equal(adjusted_rand_index(true, pred), torch.ones(3))
    assert torch.equal(fg_adjusted_rand_index(true, pred), torch.ones(3))


def test_all_pixels_in_one_slot_gives_zero() -> None:
    true_ids = np.repeat(np.arange(4), 16)[None]  # background + 3 objects
    true, pred = one_hot_np(true_ids, 4), ids_to_masks(np.full((1, 64), 2), 5)
    assert adjusted_rand_index(true, pred).item() == 0.0
    assert fg_adjusted_rand_index(true, pred).item() == 0.0


def test_background_only_scene() -> None:
    true = one_hot_np(np.zeros((1, 64), dtype=int), 3)
    varied = ids_to_masks(np.arange(64)[None] % 3, 4)
    assert adjusted_rand_index(true, varied).item() == 0.0
    assert math.isnan(fg_adjusted_rand_index(true, varied).item())  # no foreground point
    single = ids_to_masks(np.full((1, 64), 1), 4)
    assert adjusted_rand_index(true, single).item() == 1.0  # special case
    assert fg_adjusted_rand_index(true, single).item() == 1.0


def test_single_object_in_one_slot_is_nan() -> None:
    true_ids = np.zeros((1, 64), dtype=int)
    true_ids[0, 10:30] = 1
    pred_ids = np.zeros((1, 64), dtype=int)
    pred_ids[0, 10:30] = 2
    true, pred = one_hot_np(true_ids, 2), ids_to_masks(pred_ids, 3)
    assert math.isnan(fg_adjusted_rand_index(true, pred).item())
    assert adjusted_rand_index(true, pred).item() == 1.0  # perfect with the background
    # Special case: background + one object is a constant argmax once channel 0 is dropped.
    assert fg_adjusted_rand_index(true, ids_to_masks(np.zeros((1, 64), int), 3)).item() == 1.0


@pytest.mark.parametrize("n", [64, 1024, 128 * 128])
def test_single_object_split_is_exactly_zero(n: int) -> None:
    rng = np.random.default_rng(n)
    true_ids = np.zeros((1, n), dtype=int)
    true_ids[0, n // 4 :] = 1
    pred_ids = rng.integers(0, 4, (1, n))
    result = fg_adjusted_rand_index(one_hot_np(true_ids, 2), ids_to_masks(pred_ids, 4))
    assert result.item() == 0.0


def test_many_objects_with_four_slots() -> None:
    rng = np.random.default_rng(1)
    true_ids = rng.integers(0, 11, (4, 1024))  # background + 10 objects
    pred_ids = (true_ids * 7 + rng.integers(0, 2, true_ids.shape)) % 4
    true, pred = one_hot_np(true_ids, 11), ids_to_masks(pred_ids, 4)
    assert_close_nan(adjusted_rand_index(true, pred), reference_ari(true, pred), 1e-6)
    assert_close_nan(fg_adjusted_rand_index(true, pred), reference_ari(true[..., 1:], pred), 1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_random_inputs_match_independent_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    b, n, g, k = 6, 300, 6, 5
    true_ids = rng.integers(0, g, (b, n))
    true = one_hot_np(true_ids, g)
    true[rng.random((b, n)) < 0.2] = 0  # unlabelled points
    pred = rng.random((b, n, k)).astype(np.float32)
    # Correlate the prediction with the truth in some scenes.
    pred[:3] += 2 * one_hot_np(true_ids[:3] % k, k) * (rng.random((3, n, 1)) < 0.7)
    assert_close_nan(adjusted_rand_index(true, pred), reference_ari(true, pred), 1e-6)
    assert_close_nan(fg_adjusted_rand_index(true, pred), reference_ari(true[..., 1:], pred), 1e-6)


def test_pred_argmax_tie_takes_first_index() -> None:
    true_ids = np.repeat(np.arange(2), 8)[None]
    pred = np.zeros((1, 16, 3), dtype=np.float32)
    pred[0, :8, 0] = 1.0
    pred[0, 8:, 1:] = 1.0  # tie between slots 1 and 2 -> slot 1 (still a perfect split)
    assert adjusted_rand_index(one_hot_np(true_ids, 2), pred).item() == 1.0
    pred[0, 8:, 0] = 1.0  # tie between all three -> slot 0 everywhere: single cluster
    assert adjusted_rand_index(one_hot_np(true_ids, 2), pred).item() == 0.0


def test_value_error_condition() -> None:
    with pytest.raises(ValueError):
        adjusted_rand_index(np.zeros((1, 4, 5)), np.zeros((1, 4, 4)))
    adjusted_rand_index(np.eye(5)[None, :4], np.zeros((1, 4, 3)))  # n_points > n_pred_groups
    with pytest.raises(ValueError):
        adjusted_rand_index(np.zeros((1, 4, 2)), np.zeros((1, 5, 2)))  # shape mismatch
    with pytest.raises(ValueError):
        segmentation_metrics(torch.tensor([[[1, 2], [3, 4]]]), torch.rand(1, 4, 2, 2))  # G = 5
    with pytest.raises(ValueError):
        segmentation_metrics(torch.zeros(1, 2, 2), torch.rand(1, 4, 2, 2))  # float ids


# --- segmentation_metrics: mBO / mIoU ----------------------------------------------------------

TRUE_IDS = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [2, 2, 2, 2]])


def _metrics(pred_ids: np.ndarray, k: int, true_ids: np.ndarray = TRUE_IDS) -> dict:
    masks = ids_to_masks(pred_ids[None], k)  # [1, H, W, k]
    masks_t = torch.from_numpy(masks).permute(0, 3, 1, 2)
    return segmentation_metrics(torch.from_numpy(true_ids[None]), masks_t)


def test_mbo_miou_hand_computed_distinct_segments() -> None:
    pred = np.array([[0, 0, 0, 1], [0, 0, 1, 1], [0, 2, 2, 2]])
    # Object 1: IoU with segment 0 = 4/6. Object 2: segment 0 1/9, segment 2 3/4.
    result = _metrics(pred, 3)
    assert result["mbo"].item() == pytest.approx((2 / 3 + 3 / 4) / 2, abs=1e-6)
    assert result["miou"].item() == pytest.approx((2 / 3 + 3 / 4) / 2, abs=1e-6)


def test_mbo_miou_hand_computed_shared_best_segment() -> None:
    pred = np.zeros((3, 4), dtype=int)
    pred[0, 3] = 1
    # Both objects have IoU 4/11 with segment 0 and 0 with segment 1: mBO lets both use segment
    # 0, the Hungarian matching gives it to one object only.
    result = _metrics(pred, 2)
    assert result["mbo"].item() == pytest.approx(4 / 11, abs=1e-6)
    assert result["miou"].item() == pytest.approx(2 / 11, abs=1e-6)


def test_more_objects_than_slots_and_empty_scene() -> None:
    result = _metrics(np.zeros((3, 4), dtype=int), 1)
    assert result["mbo"].item() == pytest.approx(1 / 3, abs=1e-6)
    assert result["miou"].item() == pytest.approx(1 / 6, abs=1e-6)  # second object gets 0
    empty = _metrics(np.arange(12).reshape(3, 4) % 2, 2, np.zeros((3, 4), dtype=np.int64))
    assert math.isnan(empty["mbo"].item()) and math.isnan(empty["miou"].item())
    assert empty["ari"].item() == 0.0 and math.isnan(empty["fg_ari"].item())


def test_perfect_prediction_all_metrics_one() -> None:
    perm = np.array([2, 0, 3])
    result = _metrics(perm[TRUE_IDS], 4)
    for key in ("ari", "fg_ari", "mbo", "miou"):
        assert result[key].item() == pytest.approx(1.0, abs=1e-7), key


def test_layouts_and_batch_groups_agree() -> None:
    rng = np.random.default_rng(2)
    ids = torch.from_numpy(rng.integers(0, 6, (3, 16, 16)))
    ids[0] = ids[0] % 3  # fewer groups in one image; G comes from the batch maximum
    masks = torch.rand(3, 5, 16, 16)
    a = segmentation_metrics(ids, masks)
    b = segmentation_metrics(ids.numpy(), masks[:, :, None].numpy())
    for key in a:
        assert a[key].shape == (3,) and a[key].dtype == torch.float32
        assert torch.equal(a[key], b[key]), key
    true = torch.nn.functional.one_hot(ids.reshape(3, -1), 6)
    pred = masks.reshape(3, 5, -1).transpose(1, 2)
    assert torch.equal(a["ari"], adjusted_rand_index(true, pred))
    assert torch.equal(a["fg_ari"], fg_adjusted_rand_index(true, pred))


def test_large_batch_runs() -> None:
    # B=64, K=7 at 128x128 (the training resolution): no huge intermediates needed.
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (64, 128, 128), generator=gen)
    masks = torch.rand(64, 7, 1, 128, 128, generator=gen)
    result = segmentation_metrics(ids, masks)
    assert all(v.shape == (64,) for v in result.values())


@pytest.mark.gpu
@needs_fixtures
def test_cuda_matches_official() -> None:
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    for case in _fixture_cases():
        c = _load_case(case)
        true = torch.from_numpy(c["true_mask"].astype(np.float32)).cuda()
        pred = torch.from_numpy(c["pred_mask"]).cuda()
        ari, fg_ari = adjusted_rand_index(true, pred), fg_adjusted_rand_index(true, pred)
        assert ari.is_cuda and fg_ari.is_cuda
        assert_close_nan(ari, c["ari"], 1e-5)
        assert_close_nan(fg_ari, c["fg_ari"], 1e-5)
        b, n, _ = c["true_mask"].shape
        ids = true.argmax(-1).reshape(b, 32, 32)
        result = segmentation_metrics(ids, pred.permute(0, 2, 1).reshape(b, -1, 32, 32))
        assert all(v.is_cuda for v in result.values())
        assert_close_nan(result["fg_ari"], c["fg_ari"], 1e-5)


def test_segmentation_errors_by_hand():
    ids = torch.zeros(3, 5, 5, dtype=torch.long)
    ids[:2, 1:4, 1:4] = 1  # a 3x3 object: 8 border pixels around 1 inner one; image 2 empty
    pred = torch.zeros(3, 5, 5, dtype=torch.long)  # slot 0 holds the background
    pred[0, 1:4, 1:4] = torch.tensor([[1, 1, 2], [1, 1, 1], [2, 2, 0]])
    pred[1, 1:4, 1:4] = 1
    pred[1, 2, 2] = 2  # only the inner pixel goes astray
    masks = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()  # [B, K, H, W]
    e = segmentation_errors(ids, masks)
    torch.testing.assert_close(e["obj_px_main_slot"][:2], torch.tensor([5 / 9, 8 / 9]))
    torch.testing.assert_close(e["obj_px_bg_slot"][:2], torch.tensor([1 / 9, 0.0]))
    torch.testing.assert_close(e["obj_px_other_slot"][:2], torch.tensor([3 / 9, 1 / 9]))
    torch.testing.assert_close(e["obj_px_border"][:2], torch.tensor([8 / 9, 8 / 9]))
    torch.testing.assert_close(e["wrong_px_border"][:2], torch.tensor([1.0, 0.0]))
    assert all(torch.isnan(v[2]) for k, v in e.items() if "ari" not in k)  # no objects
    fg_ari = segmentation_metrics(ids, masks)["fg_ari"]  # the ceilings follow FG-ARI there
    assert e["fg_ari_no_splits"][2] == e["fg_ari_no_merges"][2] == fg_ari[2]
    # the main slot is per object: two objects sharing a slot put nothing in "other"
    ids2 = torch.tensor([[[1, 1, 0, 2, 2]]])
    one = torch.nn.functional.one_hot(torch.tensor([[[1, 1, 0, 1, 1]]]), 2)
    e2 = segmentation_errors(ids2, one.permute(0, 3, 1, 2).float())
    assert e2["obj_px_main_slot"].item() == 1.0 and math.isnan(e2["wrong_px_border"].item())


def test_fg_ari_ceilings_remove_splits_or_merges():
    ids = torch.tensor([[[1, 1, 1, 1, 0, 2, 2, 2, 2, 0, 3, 3]]])
    split = torch.tensor([[[1, 1, 2, 2, 0, 3, 3, 3, 3, 0, 4, 4]]])  # object 1 in two segments
    merged = torch.tensor([[[1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 2, 2]]])  # objects 1 and 2 in one
    both = torch.tensor([[[1, 1, 2, 2, 0, 3, 3, 3, 3, 0, 3, 3]]])  # a split and a merge

    def scores(pred):
        masks = torch.nn.functional.one_hot(pred, 5).permute(0, 3, 1, 2).float()
        m, e = segmentation_metrics(ids, masks), segmentation_errors(ids, masks)
        return m["fg_ari"].item(), e["fg_ari_no_splits"].item(), e["fg_ari_no_merges"].item()

    fg, no_splits, no_merges = scores(split)
    assert fg < 0.9 and no_splits == pytest.approx(1.0) and no_merges == pytest.approx(fg)
    fg, no_splits, no_merges = scores(merged)
    assert fg < 0.9 and no_merges == pytest.approx(1.0) and no_splits == pytest.approx(fg)
    fg, no_splits, no_merges = scores(both)  # each ceiling removes only its own error
    assert fg < no_splits < 1.0 and fg < no_merges < 1.0
    fg, no_splits, no_merges = scores(ids)
    assert fg == no_splits == no_merges == pytest.approx(1.0)
