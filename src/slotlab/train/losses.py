"""The losses of the official training scripts.

- `reconstruction_loss`: mean squared error over every element (official `utils.l2_loss`).
- `mixture_nll` (an option, not official): the negative log-likelihood of the image under the
  per-pixel mixture of the slots' Gaussians, sum_k m_k N(x; recon_k, sigma^2) (as in IODINE and
  MONet), per image element.
- `hungarian_huber_loss`: per pair (target i, prediction j) the Huber loss (delta 1) averaged over
  the 19 dims; the optimal assignment per image by scipy's `linear_sum_assignment` (not
  differentiated); the sum of matched costs per image, averaged over the batch
  (official `utils.hungarian_huber_loss`).
- `hungarian_bce_loss` (an option, not official): the same matching and sum, but per pair the
  16 classification outputs (size, material, shape, colour, objectness) cost the binary
  cross-entropy of their logits, the 3 coordinates keep the Huber loss of their sigmoids; mean over
  the 19 dims. Its gradient on a logit is p - t, where the Huber loss of a sigmoid gives
  (p - t) p (1 - p), which vanishes on confident wrong outputs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def reconstruction_loss(image: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all of B, C, H, W."""
    return F.mse_loss(recon, image)


def mixture_nll(image: torch.Tensor, recons: torch.Tensor, mask_logits: torch.Tensor,
                sigma: float) -> torch.Tensor:
    """-log sum_k m_k N(x; recons_k, sigma^2 I) per pixel (the Gaussian constant left out),
    averaged over B, H, W and divided by C, so that with one slot owning a pixel it equals
    MSE / (2 sigma^2).

    image [B, C, H, W], recons [B, K, C, H, W], mask_logits [B, K, 1, H, W] -> scalar.
    Unlike the MSE of the blended image, whose gradient on a mask vanishes where the mask is
    near 0 (softmax), the mixture pushes each pixel's mask towards the slots whose colour
    explains it (the posterior), however small the mask is now.
    """
    log_masks = mask_logits.float().log_softmax(dim=1)  # [B, K, 1, H, W]
    sq = (image.float().unsqueeze(1) - recons.float()).square().sum(dim=2, keepdim=True)
    log_lik = torch.logsumexp(log_masks - sq / (2.0 * sigma * sigma), dim=1)  # [B, 1, H, W]
    return -log_lik.mean() / image.shape[1]


def mask_entropy(mask_logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each pixel's mask over the slots, -sum_k m_k log m_k, averaged over B, H, W:
    mask_logits [B, K, 1, H, W] -> scalar in [0, log K].

    As a penalty it breaks ties: where several slots hold the same object at equal weight (the
    blend reconstructs it whichever of them draws it, so the reconstruction loss has no gradient
    that separates them), it pushes the weight to whichever slot holds a little more."""
    log_masks = mask_logits.float().log_softmax(dim=1)
    return -(log_masks.exp() * log_masks).sum(dim=1).mean()


def pairwise_huber_cost(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """cost[b, i, j] = mean over dims of Huber(targets[b, i], predictions[b, j]); [B, K_t, K_p]."""
    diff = targets.unsqueeze(2) - predictions.unsqueeze(1)  # [B, K_t, K_p, F]
    absdiff = diff.abs()
    huber = torch.where(absdiff <= 1.0, 0.5 * diff * diff, absdiff - 0.5)
    return huber.mean(dim=-1)


def hungarian_match(cost: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Optimal assignment per image of a cost [B, K_t, K_p]: index arrays (rows, cols), [B, M]."""
    cost_np = cost.detach().float().cpu().numpy()
    rows, cols = zip(*(linear_sum_assignment(c) for c in cost_np), strict=True)
    return np.stack(rows), np.stack(cols)


def matched_cost(cost: torch.Tensor) -> torch.Tensor:
    """Sum per image of the costs [B, K_t, K_p] of the optimal assignment, mean over the batch."""
    rows, cols = hungarian_match(cost)
    batch = torch.arange(cost.shape[0], device=cost.device)[:, None]
    rows_t = torch.as_tensor(rows, device=cost.device)
    cols_t = torch.as_tensor(cols, device=cost.device)
    return cost[batch, rows_t, cols_t].sum(dim=1).mean()


def hungarian_huber_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Official set-prediction loss. predictions [B, K, 19], targets [B, K_t, 19] -> scalar."""
    return matched_cost(pairwise_huber_cost(predictions, targets))


def pairwise_bce_cost(logits: torch.Tensor, targets: torch.Tensor,
                      num_coords: int = 3) -> torch.Tensor:
    """cost[b, i, j] = mean over dims: Huber(targets, sigmoid(logits)) on the first `num_coords`
    dims, binary cross-entropy of the logits on the rest; logits [B, K_p, F], targets [B, K_t, F]
    -> [B, K_t, K_p]."""
    coords = pairwise_huber_cost(torch.sigmoid(logits[..., :num_coords]),
                                 targets[..., :num_coords]) * num_coords
    x = logits[..., num_coords:].unsqueeze(1)  # [B, 1, K_p, C]
    t = targets[..., num_coords:].unsqueeze(2)  # [B, K_t, 1, C]
    x, t = torch.broadcast_tensors(x, t)  # [B, K_t, K_p, C]
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none").sum(dim=-1)
    return (coords + bce) / logits.shape[-1]


def hungarian_bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Set-prediction loss with binary cross-entropy on the classification outputs (not official).
    logits [B, K, 19] (before the sigmoid), targets [B, K_t, 19] -> scalar."""
    return matched_cost(pairwise_bce_cost(logits, targets))
