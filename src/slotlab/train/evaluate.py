"""Evaluation of a model on a dataset with the paper's metrics.

Object discovery: reconstruction MSE, and where the data has instance masks ARI, FG-ARI (the
paper's number), mBO, mIoU and the error breakdown of `segmentation_errors`, averaged over images
(NaN images, e.g. FG-ARI of a scene without foreground, are left out of the mean and counted).
Set prediction: AP at the distance thresholds inf, 1, 0.5, 0.25, 0.125, computed over all
evaluated images at once, and the per-attribute accuracy of `attribute_accuracy`.
Slot-initialisation noise comes from a generator seeded with `seed`, so results repeat.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from slotlab.data.preprocess import normalize_batch_image
from slotlab.errors import ConfigError
from slotlab.metrics import average_precision_all, segmentation_errors, segmentation_metrics
from slotlab.metrics.ap import COORD_SCALE, discrete_attributes
from slotlab.models.object_discovery import cells_to_pixels, config_cell_pixels
from slotlab.train.losses import hungarian_match, pairwise_huber_cost


def slot_noise(model: nn.Module, batch: int, generator: torch.Generator,
               num_slots: int | None = None) -> torch.Tensor:
    """Standard-normal slot-initialisation noise [B, K, D] drawn from `generator` (on CPU)."""
    sa = model.slot_attention
    return torch.randn(batch, num_slots or sa.num_slots, sa.slot_size, generator=generator)


def attribute_accuracy(predictions: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Where set prediction goes wrong: each scene's slots matched to its objects as in training
    (Hungarian on the Huber cost), then over the real matched objects the share whose size,
    material, shape and colour (argmax) are right, each and all four (`acc_*`), and the median
    distance of the positions in CLEVR units (`position_error`).

    predictions [B, K, 19], targets [B, K_t, 19] (`targets[..., 18] != 0` marks real objects).
    """
    rows, cols = hungarian_match(pairwise_huber_cost(predictions, targets))
    scene = torch.arange(targets.shape[0])[:, None]
    target = targets[scene, torch.as_tensor(rows)]  # [B, M, 19], matched pairs
    pred = predictions[scene, torch.as_tensor(cols)]
    real = target[..., 18] != 0
    right = discrete_attributes(pred)[real] == discrete_attributes(target)[real]  # [N, 4]
    if not len(right):
        return {}
    names = ("size", "material", "shape", "color")  # the order of `discrete_attributes`
    result = {f"acc_{n}": float(right[:, i].float().mean()) for i, n in enumerate(names)}
    result["acc_all"] = float(right.all(dim=1).float().mean())
    distance = ((target[..., :3] - pred[..., :3])[real] * COORD_SCALE).norm(dim=-1)
    result["position_error"] = float(distance.median())
    return result


def attention_masks(
    attention: torch.Tensor, size: tuple[int, int],
    cell_pixels: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Slot Attention's attention [B, K, N] (N = h * w encoder positions, softmax over slots)
    as masks [B, K, 1, H, W] at the image size.

    cell_pixels: the pixels each encoder cell is centred on, per axis (`encoder_cell_pixels`);
    the attention is then interpolated linearly between the cell centres (`cells_to_pixels`).
    Without it, each cell is repeated over a stride x stride block of pixels (nearest
    neighbour), the stride found from N (TF-SAME strided encoders give ceil(H / s) x ceil(W / s)
    positions)."""
    b, k, n = attention.shape
    height, width = size
    if cell_pixels is not None:
        h, w = len(cell_pixels[0]), len(cell_pixels[1])
        if h * w != n:
            raise ValueError(f"{n} attention positions, but the encoder has {h}x{w} cells")
        grid = attention.float().reshape(b, k, 1, h, w)
        return cells_to_pixels(grid, cell_pixels, (height, width))
    for stride in range(1, max(height, width) + 1):
        h, w = -(-height // stride), -(-width // stride)
        if h * w == n:
            break
    else:
        raise ValueError(f"{n} attention positions match no encoder grid of a {size} image")
    grid = attention.float().reshape(b * k, 1, h, w)
    if (h, w) != (height, width):
        grid = F.interpolate(grid, scale_factor=stride, mode="nearest")[..., :height, :width]
    return grid.reshape(b, k, 1, height, width)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    task: str,
    num: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    device: str | torch.device = "cpu",
    bf16: bool = False,
    num_slots: int | None = None,
    num_iterations: int | None = None,
) -> dict[str, Any]:
    """Metrics of `model` on the first `num` examples of `dataset` (all when None).

    `num_slots` / `num_iterations` evaluate with another K / T than the model was trained with
    (without `num_iterations`, a model with `test_iterations` runs those).
    """
    sa = model.slot_attention
    cell_pixels = config_cell_pixels(model.config) if task == "object_discovery" else None
    if num_slots and num_slots != sa.num_slots and sa.slot_init == "learned":
        raise ConfigError(f"this model learned its {sa.num_slots} initial slots (slot_init "
                          f"learned); it cannot be evaluated with {num_slots} slots")
    was_training = model.training
    model.eval()
    iterations = sa.iterations(num_iterations)  # eval mode: the model's test_iterations, if set
    n = len(dataset) if num is None else min(num, len(dataset))
    loader = DataLoader(Subset(dataset, range(n)), batch_size=batch_size, shuffle=False)
    generator = torch.Generator().manual_seed(seed)
    device = torch.device(device)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    predictions, targets = [], []
    for batch in loader:
        image = normalize_batch_image(batch["image"].to(device))
        noise = slot_noise(model, image.shape[0], generator, num_slots).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(image, noise=noise, num_iterations=num_iterations)
        if task == "object_discovery":
            mse = ((out.recon_combined.float() - image) ** 2).mean(dim=(1, 2, 3))
            values = {"mse": mse}
            if "mask" in batch:
                true_ids = batch["mask"].to(device)
                values.update(segmentation_metrics(true_ids, out.masks.float()))
                # where object pixels go: their main slot, the background's, a third one
                values.update(segmentation_errors(true_ids, out.masks.float()))
                # the same FG-ARI from the last iteration's attention instead of the decoder's
                # masks: where they differ, the slots bind objects that the decoder splits
                values["fg_ari_attn"] = segmentation_metrics(true_ids, attention_masks(
                    out.attention, image.shape[-2:], cell_pixels))["fg_ari"]
            for key, v in values.items():
                v = v.float().cpu()
                finite = ~torch.isnan(v)
                sums[key] = sums.get(key, 0.0) + float(v[finite].sum())
                counts[key] = counts.get(key, 0) + int(finite.sum())
                if key == "fg_ari":
                    counts["fg_ari_nan"] = counts.get("fg_ari_nan", 0) + int((~finite).sum())
        else:
            predictions.append(out.predictions.float().cpu())
            targets.append(batch["target"].float())
    model.train(was_training)
    result: dict[str, Any] = {"num_images": n, "seed": seed}
    if num_slots or num_iterations or iterations != sa.num_iterations:
        result.update(num_slots=num_slots or sa.num_slots, num_iterations=iterations)
    if task == "object_discovery":
        for key, total in sums.items():
            result[key] = total / counts[key] if counts[key] else math.nan
        if "fg_ari_nan" in counts:
            result["fg_ari_nan_images"] = counts["fg_ari_nan"]
    else:
        predictions, targets = torch.cat(predictions), torch.cat(targets)
        result.update(average_precision_all(predictions, targets))
        result.update(attribute_accuracy(predictions, targets))
    return result
