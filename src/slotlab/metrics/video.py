"""Video metrics: segmentation over whole videos (ARI, FG-ARI, mBO, mIoU) and object tracking.

Segmentation: a video is one segmentation of its [T, H, W] volume, so an object split between
two slots over time (a slot switch) costs as much as a split within a frame. This is the
official SAVi evaluation: `savi/lib/metrics.py` (`Ari`, `AriNoBg` = FG-ARI) takes the
[B, T, H, W] ground truth and predicted segmentations (the argmax of the alpha masks) and
computes one ARI per video over all its frames, including the first (where the conditional model
got the boxes); the evaluator runs it on the whole (24-frame) eval videos. Verified against the
fixture of the unmodified official code (../shared/reference/official_savi, meta.json
`official_train_step_metrics`): its `ari` and `ari_nobg` equal `video_segmentation_metrics(...,
skip_first_frame=False)` on the stored segmentations (to float32 rounding) and differ from
`skip_first_frame=True`. `skip_first_frame=True` is the stricter variant some later papers
report for conditional models. One difference in a degenerate case: the official ARI is 1.0
wherever its denominator is 0, slotlab's (DeepMind's semantics, `slotlab.metrics.segmentation`)
is NaN there unless both segmentations are a single cluster.

Tracking: each object's slot in a frame is the argmax over slots of the masks summed over the
object's pixels in that frame (first slot on ties); frames where the object has no pixel are
skipped. An object is tracked when it keeps one slot in every frame it is visible in; an
identity switch is a change of slot between two consecutive frames the object is visible in.
"""

from __future__ import annotations

import numpy as np
import torch

from slotlab.metrics.segmentation import segmentation_metrics

__all__ = ["object_slots", "tracking_metrics", "video_segmentation_metrics"]

ArrayLike = torch.Tensor | np.ndarray


def _inputs(true_ids: ArrayLike, pred_masks: ArrayLike,
            skip_first_frame: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked ids [B, T, H, W] (int64) and masks [B, T, K, H, W]."""
    pred = pred_masks if isinstance(pred_masks, torch.Tensor) else torch.as_tensor(
        np.asarray(pred_masks))
    ids = true_ids if isinstance(true_ids, torch.Tensor) else torch.as_tensor(np.asarray(true_ids))
    ids = ids.to(pred.device)
    if pred.ndim == 6 and pred.shape[3] == 1:
        pred = pred[:, :, :, 0]
    if pred.ndim != 5 or ids.ndim != 4 or ids.shape != (pred.shape[0], pred.shape[1],
                                                        *pred.shape[3:]):
        raise ValueError(
            "true_ids must be [B, T, H, W] and pred_masks [B, T, K, H, W] or [B, T, K, 1, H, W], "
            f"got {tuple(ids.shape)} and {tuple(torch.as_tensor(pred_masks).shape)}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"true_ids must have an integer dtype, got {ids.dtype}")
    if skip_first_frame:
        if ids.shape[1] < 2:
            raise ValueError("skip_first_frame needs videos of at least 2 frames")
        ids, pred = ids[:, 1:], pred[:, 1:]
    return ids.long(), pred


@torch.no_grad()
def video_segmentation_metrics(true_ids: ArrayLike, pred_masks: ArrayLike,
                               skip_first_frame: bool = False) -> dict[str, torch.Tensor]:
    """ARI, FG-ARI, mBO and mIoU per video over all its frames (see the module docstring).

    Args:
        true_ids: [B, T, H, W] integer instance ids, 0 = background, the same id for the same
            object in every frame.
        pred_masks: [B, T, K, H, W] or [B, T, K, 1, H, W] slot masks (e.g. `SAViOutput.masks`);
            the argmax over K is the predicted segmentation (first slot on ties).
        skip_first_frame: leave out frame 0 (official SAVi: False, every frame counts).

    Returns:
        `{"ari", "fg_ari", "mbo", "miou"}`, each [B] float32: `segmentation_metrics` of each
        video's [T*H, W] volume, so mBO / mIoU compare each object's pixels over the whole video
        with each slot's.
    """
    ids, pred = _inputs(true_ids, pred_masks, skip_first_frame)
    b, t, k, h, w = pred.shape
    volume_ids = ids.reshape(b, t * h, w)
    volume_masks = pred.transpose(1, 2).reshape(b, k, t * h, w)
    return segmentation_metrics(volume_ids, volume_masks)


@torch.no_grad()
def object_slots(true_ids: ArrayLike, pred_masks: ArrayLike,
                 skip_first_frame: bool = False) -> torch.Tensor:
    """The slot of every object in every frame: [B, T, G] int64 (G = max id over the batch;
    column g is object id g + 1), -1 where the object has no pixel."""
    ids, pred = _inputs(true_ids, pred_masks, skip_first_frame)
    b, t, k, h, w = pred.shape
    g = int(ids.max()) if ids.numel() else 0
    if g == 0:
        return torch.full((b, t, 0), -1, dtype=torch.long, device=pred.device)
    one_hot = torch.nn.functional.one_hot(ids.reshape(b, t, h * w), g + 1)[..., 1:]  # [B,T,N,G]
    mass = torch.einsum("btkn,btng->btgk", pred.reshape(b, t, k, h * w).double(),
                        one_hot.double())  # mask mass of each slot on each object's pixels
    visible = one_hot.sum(dim=2) > 0  # [B, T, G]
    slots = mass.argmax(dim=-1)
    return torch.where(visible, slots, torch.full_like(slots, -1))


@torch.no_grad()
def tracking_metrics(true_ids: ArrayLike, pred_masks: ArrayLike,
                     skip_first_frame: bool = False) -> dict[str, torch.Tensor]:
    """How well slots follow objects (see the module docstring).

    Args:
        true_ids: [B, T, H, W] instance ids (0 background), kept over time.
        pred_masks: [B, T, K, H, W] or [B, T, K, 1, H, W] slot masks.
        skip_first_frame: leave out frame 0.

    Returns:
        `tracked` [B] float32: the share of the video's objects (those visible in some frame)
        that keep one slot in every frame they are visible in (NaN without objects);
        `id_switches` [B] int64: the number of slot changes between consecutive visible frames,
        summed over the objects; `num_objects` [B] int64.
    """
    slots = object_slots(true_ids, pred_masks, skip_first_frame)  # [B, T, G]
    b, _, g = slots.shape
    switches = torch.zeros(b, g, dtype=torch.long, device=slots.device)
    previous = torch.full((b, g), -1, dtype=torch.long, device=slots.device)
    for frame in slots.unbind(dim=1):
        seen = frame >= 0
        switches += (seen & (previous >= 0) & (frame != previous)).long()
        previous = torch.where(seen, frame, previous)
    present = (slots >= 0).any(dim=1)  # [B, G]
    num_objects = present.sum(dim=1)
    kept = (present & (switches == 0)).sum(dim=1)
    tracked = kept.double() / num_objects.double()  # 0 / 0 = NaN without objects
    return {"tracked": tracked.float(), "id_switches": switches.sum(dim=1),
            "num_objects": num_objects}
