"""Object-discovery metrics: ARI / FG-ARI with DeepMind's semantics, plus mBO and mIoU.

``adjusted_rand_index`` reproduces ``adjusted_rand_index(true_mask, pred_mask)`` of DeepMind's
``multi_object_datasets/segmentation_metrics.py``:

* the prediction is argmax'd over its groups (first index on ties) and one-hot encoded; the true
  mask is used as given (one-hot; all-zero rows add nothing, so those points are ignored);
* ``n_ij`` is the contingency table, ``a`` / ``b`` its per-predicted / per-true group totals and
  ``n`` the number of labelled points (the sum of the true mask);
* ``ARI = (R - E) / (M - E)`` with ``R = sum n_ij(n_ij - 1)``, ``A = sum a(a - 1)``,
  ``B = sum b(b - 1)``, ``E = A B / (n(n - 1))`` and ``M = (A + B) / 2``;
* special case: 1.0 when the argmax of the true mask is constant over *all* points (an all-zero
  row has argmax 0) and the predicted argmax is constant over all points;
* otherwise a zero denominator gives NaN (e.g. the FG-ARI of a scene without foreground, or of a
  single object that falls in one slot), and a single object split over several slots gives
  exactly 0;
* ``ValueError`` when ``n_points <= n_true_groups and n_points <= n_pred_groups`` (shapes).

Counts are exact (float64 holding integers, or int64); the ratio is evaluated as
``(R n(n-1) - A B) / (M n(n-1) - A B)`` in float64, which is the same quantity for ``n >= 2``
and keeps the exact-0 and NaN outcomes exact (``n(n - 1) = 0`` gives NaN, as ``0/0`` does in the
official code). Results are float32, like the official ones.

FG-ARI (the paper's metric) drops true channel 0, the background, before calling ARI.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["adjusted_rand_index", "fg_adjusted_rand_index", "segmentation_metrics"]

ArrayLike = torch.Tensor | np.ndarray


def _as_tensor(x: ArrayLike, device: torch.device | None = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t if device is None else t.to(device)


def _check_group_counts(n_points: int, n_true_groups: int, n_pred_groups: int) -> None:
    """The official guard: one cluster per data point is not supported."""
    if n_points <= n_true_groups and n_points <= n_pred_groups:
        raise ValueError(
            "adjusted_rand_index requires n_groups < n_points: got n_points="
            f"{n_points}, n_true_groups={n_true_groups}, n_pred_groups={n_pred_groups}"
        )


def _all_equal(values: torch.Tensor) -> torch.Tensor:
    """[B, N] -> [B] bool: whether each row holds a single value."""
    return (values == values[:, :1]).all(dim=1)


def _ari_from_contingency(
    nij: torch.Tensor, n_points: torch.Tensor, single_cluster: torch.Tensor
) -> torch.Tensor:
    """ARI from a contingency table.

    Args:
        nij: [B, K, G] float64 counts (predicted group x true group).
        n_points: [B] float64 number of labelled points.
        single_cluster: [B] bool, the special case that is defined as ARI = 1.

    Returns:
        [B] float32 ARI.
    """
    a = nij.sum(dim=2)
    b = nij.sum(dim=1)
    rindex = (nij * (nij - 1)).sum(dim=(1, 2))
    aindex = (a * (a - 1)).sum(dim=1)
    bindex = (b * (b - 1)).sum(dim=1)
    pairs = n_points * (n_points - 1)
    # Both terms of the official ratio multiplied by n(n-1).
    numerator = rindex * pairs - aindex * bindex
    denominator = 0.5 * (aindex + bindex) * pairs - aindex * bindex
    ari = numerator / denominator
    ari = torch.where(pairs == 0, torch.full_like(ari, math.nan), ari)
    ari = torch.where(single_cluster, torch.ones_like(ari), ari)
    return ari.float()


@torch.no_grad()
def adjusted_rand_index(true_masks: ArrayLike, pred_masks: ArrayLike) -> torch.Tensor:
    """Adjusted Rand index per scene, DeepMind semantics (see the module docstring).

    Args:
        true_masks: [B, N, G] one-hot ground-truth groups (any numeric dtype); all-zero rows are
            ignored points.
        pred_masks: [B, N, K] predicted group scores or probabilities; only the argmax over K
            is used (first index on ties).

    Returns:
        [B] float32 tensor on the device of ``pred_masks``; NaN where undefined.

    Raises:
        ValueError: on bad shapes, or when ``N <= G and N <= K``.
    """
    pred = _as_tensor(pred_masks)
    true = _as_tensor(true_masks, device=pred.device)
    if true.ndim != 3 or pred.ndim != 3 or true.shape[:2] != pred.shape[:2]:
        raise ValueError(
            "true_masks and pred_masks must have shapes [B, N, G] and [B, N, K], got "
            f"{tuple(true.shape)} and {tuple(pred.shape)}"
        )
    batch, n, n_true_groups = true.shape
    n_pred_groups = pred.shape[2]
    _check_group_counts(n, n_true_groups, n_pred_groups)

    pred_ids = pred.argmax(dim=2)  # [B, N]
    true_ids = true.argmax(dim=2) if n_true_groups > 0 else pred_ids.new_zeros((batch, n))
    true64 = true.to(torch.float64)
    # nij[b, k, g] = sum over points with predicted group k of true[b, point, g]; a batched
    # matmul (deterministic, exact for integer counts in float64), like the official einsum.
    pred_one_hot = torch.nn.functional.one_hot(pred_ids, n_pred_groups).to(torch.float64)
    nij = torch.bmm(pred_one_hot.transpose(1, 2), true64)
    n_points = true64.sum(dim=(1, 2))
    single_cluster = _all_equal(true_ids) & _all_equal(pred_ids)
    return _ari_from_contingency(nij, n_points, single_cluster)


def fg_adjusted_rand_index(true_masks: ArrayLike, pred_masks: ArrayLike) -> torch.Tensor:
    """Foreground ARI (the paper's metric): ARI after dropping true group 0, the background.

    Args:
        true_masks: [B, N, G] one-hot ground truth whose group 0 is the background.
        pred_masks: [B, N, K] predicted group scores.

    Returns:
        [B] float32; background points are ignored. NaN where undefined.
    """
    true = _as_tensor(true_masks)
    return adjusted_rand_index(true[..., 1:], pred_masks)


def _hungarian_mean_iou(iou: np.ndarray) -> float:
    """Mean over GT objects (rows) of the IoU of their Hungarian-matched segment (columns)."""
    if iou.shape[0] == 0:
        return math.nan
    rows, cols = linear_sum_assignment(iou, maximize=True)
    # Objects left unmatched (more objects than segments) count as IoU 0.
    return float(iou[rows, cols].sum() / iou.shape[0])


def _ids_and_segments(true_ids: ArrayLike, pred_masks: ArrayLike
                      ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Checked inputs: instance ids [B, N] (int64), argmax segments [B, N] (first slot on
    ties), K, and G = max id + 1 (over the batch)."""
    pred = _as_tensor(pred_masks)
    ids = _as_tensor(true_ids, device=pred.device)
    if pred.ndim == 5 and pred.shape[2] == 1:
        pred = pred[:, :, 0]
    if pred.ndim != 4 or ids.ndim != 3 or ids.shape != (pred.shape[0], *pred.shape[2:]):
        raise ValueError(
            "true_ids must be [B, H, W] and pred_masks [B, K, H, W] or [B, K, 1, H, W], got "
            f"{tuple(ids.shape)} and {tuple(_as_tensor(pred_masks).shape)}"
        )
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"true_ids must have an integer dtype, got {ids.dtype}")
    batch, num_slots = pred.shape[:2]
    n = ids.shape[1] * ids.shape[2]
    ids = ids.reshape(batch, n).long()
    if ids.numel() and int(ids.min()) < 0:
        raise ValueError("true_ids must be >= 0 (0 = background)")
    num_groups = int(ids.max()) + 1 if ids.numel() else 1
    pred_ids = pred.reshape(batch, num_slots, n).argmax(dim=1)  # [B, N]
    return ids, pred_ids, num_slots, num_groups


def _contingency(ids: torch.Tensor, pred_ids: torch.Tensor, num_slots: int,
                 num_groups: int) -> torch.Tensor:
    """counts[b, k, g] = pixels of image b in segment k and group g: one bincount, int64."""
    batch = ids.shape[0]
    scene = torch.arange(batch, device=ids.device)[:, None]
    flat = ((scene * num_slots + pred_ids) * num_groups + ids).reshape(-1)
    counts = torch.bincount(flat, minlength=batch * num_slots * num_groups)
    return counts.reshape(batch, num_slots, num_groups)


def _fg_ari(ids: torch.Tensor, counts: torch.Tensor, pred_single: torch.Tensor) -> torch.Tensor:
    """FG-ARI [B] from ids [B, N], the contingency counts [B, K, G] and whether each image's
    segments are one [B]."""
    # FG: background points become all-zero rows, whose argmax is 0 like that of object 1.
    return _ari_from_contingency(
        counts[:, :, 1:].double(),
        (ids > 0).sum(dim=1).double(),
        _all_equal((ids - 1).clamp(min=0)) & pred_single,
    )


@torch.no_grad()
def segmentation_metrics(true_ids: ArrayLike, pred_masks: ArrayLike) -> dict[str, torch.Tensor]:
    """ARI, FG-ARI, mBO and mIoU per image, from instance-id maps and soft slot masks.

    The ground truth is the one-hot of ``true_ids`` with ``G = max id + 1`` groups (over the
    batch), so ``ari`` / ``fg_ari`` equal ``adjusted_rand_index`` / ``fg_adjusted_rand_index`` on
    that one-hot and ``pred_masks`` moved to [B, H*W, K]; the ``ValueError`` conditions are those
    of the two calls. The contingency table is built with one ``bincount`` (int64, exact), without
    any one-hot intermediate.

    Predicted segments are the per-pixel argmax over slots (first slot on ties). For each
    ground-truth foreground object ``g`` (id >= 1 present in the image) and segment ``k``,
    ``IoU(g, k) = |g ∩ k| / |g ∪ k|`` over all pixels of the image.

    * ``mbo``, mean best overlap: for each GT object its best IoU over all K segments (several
      objects may pick the same segment), averaged over the objects of the image.
    * ``miou``: one-to-one Hungarian matching (``scipy.optimize.linear_sum_assignment``,
      maximising the total IoU) between the GT objects and the K segments; matched IoUs are
      averaged over the GT objects, an object left without a segment (more objects than slots)
      counting as 0.

    Both are NaN for an image without foreground objects; aggregate with ``nanmean``.

    Args:
        true_ids: [B, H, W] integer instance ids, 0 = background.
        pred_masks: [B, K, H, W] or [B, K, 1, H, W] slot probabilities (e.g. the model's
            softmaxed ``masks``).

    Returns:
        ``{"ari", "fg_ari", "mbo", "miou"}``, each a [B] float32 tensor on the device of
        ``pred_masks``.
    """
    ids, pred_ids, num_slots, num_groups = _ids_and_segments(true_ids, pred_masks)
    batch, n = ids.shape
    _check_group_counts(n, num_groups, num_slots)  # ARI
    _check_group_counts(n, num_groups - 1, num_slots)  # FG-ARI
    counts = _contingency(ids, pred_ids, num_slots, num_groups)  # [B, K, G] int64

    pred_single = _all_equal(pred_ids)
    ari = _ari_from_contingency(
        counts.double(),
        torch.full((batch,), float(n), dtype=torch.float64, device=ids.device),
        _all_equal(ids) & pred_single,
    )
    fg_ari = _fg_ari(ids, counts, pred_single)

    inter = counts[:, :, 1:].double()  # [B, K, G-1]
    seg_area = counts.sum(dim=2).double()  # [B, K]
    obj_area = inter.sum(dim=1)  # [B, G-1]
    union = seg_area[:, :, None] + obj_area[:, None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
    present = obj_area > 0  # [B, G-1]
    num_objects = present.sum(dim=1).double()
    best = iou.max(dim=1).values if num_slots > 0 else obj_area.new_zeros(obj_area.shape)
    mbo = (best * present).sum(dim=1) / num_objects  # 0/0 = NaN without objects

    iou_np = iou.cpu().numpy()
    present_np = present.cpu().numpy()
    miou = torch.tensor(
        [_hungarian_mean_iou(iou_np[i][:, present_np[i]].T) for i in range(batch)],
        dtype=torch.float64,
    )
    return {
        "ari": ari,
        "fg_ari": fg_ari,
        "mbo": mbo.float(),
        "miou": miou.float().to(ids.device),
    }


@torch.no_grad()
def segmentation_errors(true_ids: ArrayLike, pred_masks: ArrayLike) -> dict[str, torch.Tensor]:
    """Where the object pixels of each image go, to tell blurred outlines from split objects.

    Each ground-truth object's *main slot* is the segment (argmax over slots) holding most of
    its pixels; the *background's slot* is the one holding most background pixels (slot 0 when
    the image has no background). A pixel is on an object's *border* when one of its four
    neighbours (inside the image) has another id. Per image, over its object pixels (id >= 1):

    * ``obj_px_main_slot``: the fraction in their object's main slot;
    * ``obj_px_bg_slot``: the fraction in the background's slot (and not their main slot);
    * ``obj_px_other_slot``: the rest, in a third slot (a duplicate or a split);
    * ``obj_px_border``: the fraction on a border (how much of the objects is outline);
    * ``wrong_px_border``: of the pixels not in their main slot, the fraction on a border;
    * ``fg_ari_no_splits``: FG-ARI with each segment relabelled by the id making up most of it
      (segments holding most of one object joined: what FG-ARI would be without split objects);
    * ``fg_ari_no_merges``: FG-ARI with each segment cut along the ids (what it would be without
      objects sharing a segment).

    NaN for an image without objects (and ``wrong_px_border`` for an image without errors).

    Args:
        true_ids: [B, H, W] integer instance ids, 0 = background.
        pred_masks: [B, K, H, W] or [B, K, 1, H, W] slot probabilities.

    Returns:
        the five fractions and the two FG-ARI ceilings, each a [B] float32 tensor on the device
        of ``pred_masks`` (the ceilings follow FG-ARI's conventions for images without objects).
    """
    ids, pred_ids, num_slots, num_groups = _ids_and_segments(true_ids, pred_masks)
    batch = ids.shape[0]
    height, width = true_ids.shape[1:]  # numpy array or tensor
    counts = _contingency(ids, pred_ids, num_slots, num_groups)  # [B, K, G]
    main = counts.argmax(dim=1)  # [B, G]: the main slot of each group (0 for absent ones)
    in_main = pred_ids == main.gather(1, ids)  # [B, N]
    in_bg = (pred_ids == main[:, :1]) & ~in_main
    grid = ids.reshape(batch, height, width)
    border = torch.zeros_like(grid, dtype=torch.bool)
    border[:, 1:] |= grid[:, 1:] != grid[:, :-1]
    border[:, :-1] |= grid[:, :-1] != grid[:, 1:]
    border[:, :, 1:] |= grid[:, :, 1:] != grid[:, :, :-1]
    border[:, :, :-1] |= grid[:, :, :-1] != grid[:, :, 1:]
    border = border.reshape(batch, -1)
    fg = ids > 0
    wrong = fg & ~in_main
    n_fg = fg.sum(dim=1).double()  # 0 -> NaN fractions
    fractions = {
        "obj_px_main_slot": (fg & in_main).sum(dim=1) / n_fg,
        "obj_px_bg_slot": (fg & in_bg).sum(dim=1) / n_fg,
        "obj_px_other_slot": (wrong & ~in_bg).sum(dim=1) / n_fg,
        "obj_px_border": (fg & border).sum(dim=1) / n_fg,
        "wrong_px_border": (wrong & border).sum(dim=1) / wrong.sum(dim=1).double(),
    }
    majority = counts.argmax(dim=2)  # [B, K]: the id making up most of each segment
    joined = majority.gather(1, pred_ids)  # [B, N]
    cut = pred_ids * num_groups + ids  # [B, N]: a segment per (segment, id)
    ceilings = {
        "fg_ari_no_splits": _fg_ari(ids, _contingency(ids, joined, num_groups, num_groups),
                                    _all_equal(joined)),
        "fg_ari_no_merges": _fg_ari(ids, _contingency(ids, cut, num_slots * num_groups,
                                                      num_groups), _all_equal(cut)),
    }
    return {k: v.float() for k, v in {**fractions, **ceilings}.items()}
