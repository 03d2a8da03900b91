"""CLEVR set-prediction average precision, with the semantics of the official Slot Attention code.

The official metric (google-research ``slot_attention/utils.py``,
``average_precision_clevr``) is a Python loop over ranked detections. This module computes the
same numbers in batched torch:

1. **Ranking.** All ``B * K`` predicted slots are detections. They are ranked by confidence
   ``predictions[..., 18]``, descending, exactly like ``np.argsort(conf)[::-1]`` with a stable
   sort: confidence ties are ordered by *descending* flat index, and NaN confidences come first.
2. **Candidate search** (vectorised over all detection / ground-truth pairs). A ground-truth object
   of the detection's own scene is a candidate when it is real (``target[..., 18] != 0``) and its
   four discrete attributes (argmax of size 3:5, material 5:7, shape 7:10, colour 10:18; the first
   index wins an argmax tie) all equal the prediction's. The distance is
   ``||(target[:3] - pred[:3]) * 6||_2`` (original CLEVR units), computed in the inputs' floating
   dtype. The nearest candidate wins, the first one on a distance tie; as in the official code, a
   candidate must also be closer than 10000 (its initial ``best_distance``), and a NaN distance
   never wins.
3. **Claiming** (exact vectorised equivalent of the sequential loop). A detection *passes* when it
   has a nearest candidate and ``threshold == -1`` or ``distance < threshold``. There is no
   fallback to the second-nearest object, so the official loop's outcome only depends on order:
   a passing detection is a true positive iff no earlier-ranked passing detection has the same
   ``(scene, object)``. Every other detection (no candidate, too far, duplicate) is a false
   positive.
4. **Precision / recall.** ``recall = cumsum(TP) / sum(targets[..., 18])`` and
   ``precision = cumsum(TP) / (cumsum(TP) + cumsum(FP))``, both rounded to float32.
5. **AP.** VOC all-point interpolation: prepend (recall 0, precision 0), append (1, 0), make the
   precision non-increasing from the right, sum ``Δrecall * precision`` where the recall changes.
   This is done in float64. A batch without any real object has recall 0/0 and gives NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "AP_THRESHOLDS",
    "ap_key",
    "average_precision_clevr",
    "average_precision_all",
]

#: The distance thresholds of the paper, in CLEVR units; -1 means no distance limit (AP@inf).
AP_THRESHOLDS: tuple[float, ...] = (-1.0, 1.0, 0.5, 0.25, 0.125)

_ELEMENT_SIZE = 19
_ATTRIBUTE_SLICES = (slice(3, 5), slice(5, 7), slice(7, 10), slice(10, 18))
COORD_SCALE = 6.0
_INITIAL_BEST_DISTANCE = 10000.0  # the official loop starts from this "best" distance

ArrayLike = torch.Tensor | np.ndarray


def ap_key(threshold: float) -> str:
    """Name of the AP value at ``threshold``: ``-1 -> "ap_inf"``, ``0.5 -> "ap_0.5"``, ..."""
    if threshold == -1 or math.isinf(threshold):
        return "ap_inf"
    return f"ap_{threshold:g}"


def _to_tensor(x: ArrayLike, name: str, device: torch.device | None = None) -> torch.Tensor:
    """Convert a numpy array or tensor of shape [B, K, 19] to a tensor (on ``device``)."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 3 or t.shape[-1] != _ELEMENT_SIZE:
        raise ValueError(f"{name} must have shape [B, K, {_ELEMENT_SIZE}], got {tuple(t.shape)}")
    if device is not None:
        t = t.to(device)
    return t


def discrete_attributes(x: torch.Tensor) -> torch.Tensor:
    """Argmax of the size, material, shape and colour scores: [..., 19] -> [..., 4] int64."""
    return torch.stack([x[..., s].argmax(dim=-1) for s in _ATTRIBUTE_SLICES], dim=-1)


def _ranked_matches(
    predictions: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank the detections and find each one's nearest matching ground-truth object.

    Args:
        predictions: [B, K, 19] predicted slots.
        targets: [B, Kt, 19] ground-truth objects (``targets[..., 18] != 0`` marks real ones).

    Returns:
        key: [B*K] int64, ``scene * Kt + object`` of the nearest candidate, in ranked order
            (meaningless where ``best_distance`` is inf).
        best_distance: [B*K] float64 distance to it, ``inf`` where there is no candidate.
        order: [B*K] int64 flat (unranked) index of each ranked detection.
    """
    batch, num_slots, _ = predictions.shape
    num_targets = targets.shape[1]

    dtype = torch.promote_types(predictions.dtype, targets.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float64
    pred_coords = predictions[..., :3].to(dtype)
    target_coords = targets[..., :3].to(dtype)

    # All detection / object pairs of a scene at once: [B, K, Kt].
    diff = (target_coords[:, None, :, :] - pred_coords[:, :, None, :]) * COORD_SCALE
    distance = torch.linalg.vector_norm(diff, dim=-1)
    same_attributes = (
        discrete_attributes(predictions)[:, :, None, :]
        == discrete_attributes(targets)[:, None, :, :]
    ).all(dim=-1)
    real = targets[..., 18] != 0
    candidate = same_attributes & real[:, None, :] & (distance < _INITIAL_BEST_DISTANCE)

    masked = torch.where(candidate, distance, torch.full_like(distance, math.inf))
    if num_targets > 0:
        best_distance, best_id = masked.min(dim=-1)  # first index wins a distance tie
    else:
        best_distance = masked.new_full((batch, num_slots), math.inf)
        best_id = torch.zeros((batch, num_slots), dtype=torch.long, device=masked.device)
    scene = torch.arange(batch, device=predictions.device)[:, None].expand(batch, num_slots)
    key = (scene * num_targets + best_id).reshape(-1)

    # np.argsort(conf)[::-1] with a stable sort: descending, ties by descending index.
    confidence = predictions[..., 18].reshape(-1)
    order = torch.sort(confidence, stable=True).indices.flip(0)
    return key[order], best_distance.reshape(-1)[order].double(), order


def _true_positives(
    key: torch.Tensor, best_distance: torch.Tensor, threshold: float, num_keys: int
) -> torch.Tensor:
    """TP flags [D] (bool) of the ranked detections at one distance threshold.

    A detection passes when it has a candidate within the threshold; it is a true positive when it
    is the first-ranked passing detection of its ``(scene, object)`` key. This equals the official
    sequential claim loop because a detection never falls back to another object.
    """
    has_candidate = torch.isfinite(best_distance)
    if threshold == -1:
        passes = has_candidate
    else:
        passes = has_candidate & (best_distance < threshold)
    position = torch.arange(key.numel(), device=key.device)
    first_claim = torch.full((max(num_keys, 1),), key.numel(), dtype=torch.long, device=key.device)
    first_claim.scatter_reduce_(0, key[passes], position[passes], reduce="amin")
    return passes & (first_claim[key.clamp(0, max(num_keys, 1) - 1)] == position)


def _voc_average_precision(true_positive: torch.Tensor, num_objects: torch.Tensor) -> float:
    """All-point interpolated AP from ranked TP flags [D] and the (float64) number of objects."""
    tp = torch.cumsum(true_positive.double(), dim=0)
    fp = torch.arange(1, tp.numel() + 1, dtype=torch.float64, device=tp.device) - tp
    # Rounded to float32 like the official code, then used as (exact) Python/float64 values.
    recall = (tp / num_objects).float().double()
    precision = (tp / (tp + fp)).float().double()
    zero = recall.new_zeros(1)
    recall = torch.cat([zero, recall, zero + 1.0])
    precision = torch.cat([zero, precision, zero])
    # Non-increasing precision: running maximum from the right.
    precision = torch.cummax(precision.flip(0), dim=0).values.flip(0)
    changes = recall[1:] != recall[:-1]  # NaN recalls count as changes, as in Python
    terms = precision[1:] * (recall[1:] - recall[:-1])
    return float(terms[changes].sum())


def _prepare(predictions: ArrayLike, targets: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    preds = _to_tensor(predictions, "predictions")
    tgts = _to_tensor(targets, "targets", device=preds.device)
    if preds.shape[0] != tgts.shape[0]:
        raise ValueError(
            f"predictions and targets have different batch sizes: {preds.shape[0]} vs "
            f"{tgts.shape[0]}"
        )
    return preds, tgts


@torch.no_grad()
def average_precision_all(
    predictions: ArrayLike,
    targets: ArrayLike,
    thresholds: Sequence[float] = AP_THRESHOLDS,
) -> dict[str, float]:
    """CLEVR AP at several distance thresholds, sharing one ranking and candidate search.

    Args:
        predictions: [B, K, 19] torch tensor or numpy array (the model's sigmoid outputs;
            ``[..., 18]`` is the confidence used for ranking).
        targets: [B, Kt, 19] ground truth as built by the official preprocessing (one-hot
            attributes, ``[..., 18]`` = 1 for real objects, 0 for padding).
        thresholds: distances in CLEVR units; -1 means no limit.

    Returns:
        ``{ap_key(t): AP}`` for each threshold, e.g. ``{"ap_inf": ..., "ap_1": ..., "ap_0.5": ...,
        "ap_0.25": ..., "ap_0.125": ...}``. Values are NaN when the batch has no real object.
    """
    preds, tgts = _prepare(predictions, targets)
    key, best_distance, _ = _ranked_matches(preds, tgts)
    num_objects = tgts[..., 18].sum().double()  # official: np.sum(attributes[:, :, -1])
    num_keys = tgts.shape[0] * tgts.shape[1]
    results: dict[str, float] = {}
    for threshold in thresholds:
        tp = _true_positives(key, best_distance, float(threshold), num_keys)
        results[ap_key(float(threshold))] = _voc_average_precision(tp, num_objects)
    return results


def average_precision_clevr(
    predictions: ArrayLike, targets: ArrayLike, distance_threshold: float
) -> float:
    """CLEVR average precision at one distance threshold (official semantics, see module doc).

    Args:
        predictions: [B, K, 19] torch tensor or numpy array; ``[..., 18]`` is the confidence.
        targets: [B, Kt, 19] ground truth; ``[..., 18]`` != 0 marks real objects.
        distance_threshold: maximum distance in CLEVR units (strict ``<``); -1 means no limit.

    Returns:
        The AP as a Python float; NaN when the batch contains no real object.
    """
    result = average_precision_all(predictions, targets, thresholds=(distance_threshold,))
    return next(iter(result.values()))
