"""The losses of the official training scripts.

- `reconstruction_loss`: mean squared error over every element (official `utils.l2_loss`).
- `hungarian_huber_loss`: per pair (target i, prediction j) the Huber loss (delta 1) averaged over
  the 19 dims; the optimal assignment per image by scipy's `linear_sum_assignment` (not
  differentiated); the sum of matched costs per image, averaged over the batch
  (official `utils.hungarian_huber_loss`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def reconstruction_loss(image: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all of B, C, H, W."""
    return F.mse_loss(recon, image)


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
