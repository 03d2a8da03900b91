"""CLEVR average precision: official fixtures, hand-made edge cases and a sequential reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from slotlab.metrics import (
    AP_THRESHOLDS,
    ap_key,
    average_precision_all,
    average_precision_clevr,
)

REF = Path(__file__).resolve().parents[3] / "shared" / "reference" / "metrics"
AP_FIXTURES = REF / "ap_fixtures.npz"
KEYS = ["ap_inf", "ap_1", "ap_0.5", "ap_0.25", "ap_0.125"]

needs_fixtures = pytest.mark.skipif(
    not AP_FIXTURES.is_file(), reason="shared/reference/metrics/ap_fixtures.npz not available"
)


def _fixture_cases() -> list[str]:
    if not AP_FIXTURES.is_file():
        return []
    with np.load(AP_FIXTURES) as z:
        return [str(c) for c in z["case_names"]]


def _load_case(case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with np.load(AP_FIXTURES) as z:
        return z[f"{case}__pred"], z[f"{case}__target"], z[f"{case}__ap"], z["thresholds"]


def make_object(
    xyz: tuple[float, float, float] = (0.5, 0.5, 0.5),
    size: int = 0,
    material: int = 0,
    shape: int = 0,
    colour: int = 0,
    real: float = 1.0,
) -> np.ndarray:
    """One 19-dim CLEVR vector with one-hot attributes."""
    v = np.zeros(19, dtype=np.float32)
    v[:3] = xyz
    v[3 + size] = 1
    v[5 + material] = 1
    v[7 + shape] = 1
    v[10 + colour] = 1
    v[18] = real
    return v


def reference_ap(pred: np.ndarray, target: np.ndarray, threshold: float) -> float:
    """Straightforward sequential implementation of the official rules (test-only reference)."""
    b, k, _ = pred.shape
    flat = pred.reshape(b * k, 19)
    order = np.argsort(flat[:, 18], kind="stable")[::-1]
    slices = [(3, 5), (5, 7), (7, 10), (10, 18)]

    def attrs(v: np.ndarray) -> list[int]:
        return [int(np.argmax(v[s:e])) for s, e in slices]

    claimed: set[tuple[int, int]] = set()
    tp, fp = [], []
    for det in order:
        image = det // k
        p = flat[det]
        best, best_id = 10000.0, None
        for j, t in enumerate(target[image]):
            if t[18] != 0 and attrs(p) == attrs(t):
                d = float(np.sqrt(np.sum(((t[:3] - p[:3]) * 6.0) ** 2)))
                if d < best:
                    best, best_id = d, j
        hit = best_id is not None and (threshold == -1 or best < threshold)
        if hit and (image, best_id) not in claimed:
            claimed.add((image, best_id))
            tp.append(1.0)
            fp.append(0.0)
        else:
            tp.append(0.0)
            fp.append(1.0)
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = (ctp / np.sum(target[..., 18])).astype(np.float32).tolist()
    precision = (ctp / (ctp + cfp)).astype(np.float32).tolist()
    recall = [0.0] + recall + [1.0]
    precision = [0.0] + precision + [0.0]
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    ap = 0.0
    for i in range(len(recall) - 1):
        if recall[i + 1] != recall[i]:
            ap += precision[i + 1] * (recall[i + 1] - recall[i])
    return ap


# --- official fixtures -------------------------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize("case", _fixture_cases())
def test_fixture_cases_match_official(case: str) -> None:
    pred, target, expected, thresholds = _load_case(case)
    assert tuple(thresholds.tolist()) == AP_THRESHOLDS
    result = average_precision_all(pred, target)
    assert list(result) == KEYS
    np.testing.assert_allclose(list(result.values()), expected, rtol=0, atol=1e-6)
    for threshold, value in zip(thresholds, expected):
        single = average_precision_clevr(
            torch.from_numpy(pred), torch.from_numpy(target), threshold
        )
        assert single == pytest.approx(value, abs=1e-6)


@needs_fixtures
@pytest.mark.parametrize("case", _fixture_cases())
def test_fixture_confidence_rescaling_keeps_ap(case: str) -> None:
    pred, target, expected, _ = _load_case(case)
    scaled = pred.copy()
    scaled[..., 18] = 0.001 + 0.049 * scaled[..., 18]
    values = list(average_precision_all(scaled, target).values())
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6)


@needs_fixtures
def test_fixture_partially_empty_batch_matches_reference() -> None:
    pred, target, _, _ = _load_case(_fixture_cases()[0])
    target = target.copy()
    target[::3] = 0.0  # some scenes without any object
    result = average_precision_all(pred, target)
    for t in AP_THRESHOLDS:
        value = result[ap_key(t)]
        assert math.isfinite(value)
        assert value == pytest.approx(reference_ap(pred, target, t), abs=1e-9)


# --- hand-made edge cases ----------------------------------------------------------------------


def test_keys() -> None:
    assert [ap_key(t) for t in AP_THRESHOLDS] == KEYS
    assert ap_key(float("inf")) == "ap_inf"


def test_batch_without_objects_is_nan() -> None:
    pred = np.random.default_rng(0).random((4, 10, 19)).astype(np.float32)
    target = np.zeros((4, 10, 19), dtype=np.float32)
    result = average_precision_all(pred, target)
    assert all(math.isnan(v) for v in result.values())
    assert math.isnan(average_precision_clevr(pred, target, -1))


def test_perfect_predictions_give_one_despite_ties() -> None:
    rng = np.random.default_rng(3)
    target = np.zeros((5, 10, 19), dtype=np.float32)
    for b in range(5):
        for j in range(rng.integers(1, 8)):
            target[b, j] = make_object(
                tuple(rng.random(3)),
                rng.integers(2),
                rng.integers(2),
                rng.integers(3),
                rng.integers(8),
            )
    result = average_precision_all(target.copy(), target)
    assert all(v == pytest.approx(1.0, abs=1e-7) for v in result.values())


def test_duplicate_is_false_positive_without_fallback() -> None:
    # Objects A and B share all attributes. The second-ranked detection is nearest to the
    # already-claimed A: it is a false positive, even though B is still free.
    a = make_object((0.2, 0.2, 0.5))
    b = make_object((0.8, 0.8, 0.5))
    pred = np.stack([a.copy(), a.copy(), b.copy()])
    pred[1, 0] += 0.01
    pred[:, 18] = [0.9, 0.8, 0.7]
    target = np.stack([a, b, np.zeros(19, dtype=np.float32)])
    # TP, FP, TP: recall .5 .5 1, precision 1 .5 2/3 -> AP = .5 * 1 + .5 * float32(2/3).
    expected = 0.5 + 0.5 * float(np.float32(2 / 3))
    value = average_precision_clevr(pred[None], target[None], -1)
    assert value == pytest.approx(expected, abs=1e-12)
    assert value == pytest.approx(reference_ap(pred[None], target[None], -1), abs=1e-12)


def test_attribute_argmax_tie_takes_first_index() -> None:
    pred = make_object()
    pred[3:5] = 0.5  # size scores tied -> size 0
    target_size0 = make_object(size=0)
    target_size1 = make_object(size=1)
    assert average_precision_clevr(pred[None, None], target_size0[None, None], -1) == 1.0
    assert average_precision_clevr(pred[None, None], target_size1[None, None], -1) == 0.0


def test_confidence_ties_rank_higher_index_first() -> None:
    # np.argsort(conf)[::-1]: with equal confidence the later slot is ranked first.
    obj = make_object(colour=3)
    miss = make_object(colour=4)
    target = np.stack([obj, np.zeros(19, dtype=np.float32)])[None]
    hit_last = np.stack([miss, obj])[None]
    hit_last[..., 18] = 0.5
    assert average_precision_clevr(hit_last, target, -1) == 1.0  # TP then FP
    hit_first = np.stack([obj, miss])[None]
    hit_first[..., 18] = 0.5
    assert average_precision_clevr(hit_first, target, -1) == 0.5  # FP then TP


def test_distance_threshold_is_strict_and_in_clevr_units() -> None:
    target = make_object((0.5, 0.5, 0.5))
    pred = make_object((0.75, 0.5, 0.5))  # 0.25 normalised = 1.5 CLEVR units
    result = average_precision_all(pred[None, None], target[None, None], (-1, 2.0, 1.5, 1.0))
    assert result == {"ap_inf": 1.0, "ap_2": 1.0, "ap_1.5": 0.0, "ap_1": 0.0}


def test_padding_objects_never_match() -> None:
    target = make_object(real=0.0)
    real = make_object((0.1, 0.1, 0.1), colour=1)
    pred = make_object()  # equals the padding row exactly
    value = average_precision_clevr(pred[None, None], np.stack([target, real])[None], -1)
    assert value == 0.0


def test_numpy_torch_and_dtypes_agree() -> None:
    rng = np.random.default_rng(5)
    pred = rng.random((3, 6, 19)).astype(np.float32)
    target = np.zeros((3, 4, 19), dtype=np.float32)  # fewer target rows than slots
    for b in range(3):
        for j in range(3):
            target[b, j] = make_object(tuple(rng.random(3)), rng.integers(2), 0, 0, 0)
    pred[..., 5:18] = target[:, :1, 5:18]  # make many attribute matches
    ref = average_precision_all(pred, target)
    assert average_precision_all(torch.from_numpy(pred), torch.from_numpy(target)) == ref
    as64 = average_precision_all(pred.astype(np.float64), target.astype(np.float64))
    for key in KEYS:
        assert as64[key] == pytest.approx(ref[key], abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_random_batches_match_sequential_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    b, k = 6, 8
    target = np.zeros((b, k, 19), dtype=np.float32)
    for i in range(b):
        for j in range(rng.integers(0, k + 1)):
            target[i, j] = make_object(tuple(rng.random(3)), rng.integers(2), rng.integers(2))
    pred = target[:, rng.permutation(k)].copy()
    pred[::2, -1] = pred[::2, 0]  # near-duplicates
    pred[..., :3] += rng.normal(0, 0.03, (b, k, 3)).astype(np.float32)
    pred[..., 3:7] += rng.normal(0, 0.4, (b, k, 4)).astype(np.float32)
    pred[..., 18] = np.round(rng.random((b, k)), 1)  # many confidence ties
    result = average_precision_all(pred, target)
    for t in AP_THRESHOLDS:
        assert result[ap_key(t)] == pytest.approx(reference_ap(pred, target, t), abs=1e-9)


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError):
        average_precision_clevr(np.zeros((2, 3, 18)), np.zeros((2, 3, 19)), -1)
    with pytest.raises(ValueError):
        average_precision_clevr(np.zeros((2, 3, 19)), np.zeros((3, 3, 19)), -1)


@pytest.mark.gpu
@needs_fixtures
def test_cuda_matches_official() -> None:
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    for case in _fixture_cases():
        pred, target, expected, _ = _load_case(case)
        result = average_precision_all(
            torch.from_numpy(pred).cuda(), torch.from_numpy(target).cuda()
        )
        np.testing.assert_allclose(list(result.values()), expected, rtol=0, atol=1e-6)
