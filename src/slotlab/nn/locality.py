"""An attention bias for Slot Attention: the locality term (slotlab's option, not the paper's).

From the second iteration on, the logits get -|x_n - mu_k|^2 / (2 s^2), where x_n is input n's
position in [-1, 1], mu_k the mean position of slot k's previous attention (weighted as its
update) and s a learned width (one scalar, starting at `width`, 0.5 by default). The paper's
position embedding is added to the features, so k . q is linear in the position: a slot can
prefer a side of the image but not a place, and pixels of one colour in two places go to one
slot. The quadratic term lets a slot prefer the place it found.

With one width for every slot, a slot holding a wide region (a coloured background) pays
|x - mu|^2 / (2 s^2) at its far pixels and the region is cut between several slots. With
`area` c > 0 each slot's width grows with the area its attention covers:

    s_k^2 = s^2 + c A_k / (2 pi),    A_k = 4 sum_n a_kn / N

A_k is in units of the image ([-1, 1]^2, area 4) and A / (2 pi) is the mean squared distance
from the centre of a disk of area A: a slot on one sprite keeps about the width s, a slot on the
background gets a term near flat over the image, and two sprites of one hue held by one slot
(little area in two places) are still far from its mean.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LocalityBias(nn.Module):
    """positions [N, 2] of the inputs -> a module mapping the previous attention [B, K, N] to the
    bias of the next iteration's logits [B, K, N] (float32)."""

    def __init__(self, positions: torch.Tensor, epsilon: float = 1e-8, width: float = 0.5,
                 area: float = 0.0):
        super().__init__()
        self.epsilon, self.area = epsilon, area
        self.register_buffer("positions", positions.float(), persistent=False)
        self.log_width = nn.Parameter(torch.tensor(math.log(width)))

    def forward(self, attention: torch.Tensor) -> torch.Tensor:
        with torch.autocast(attention.device.type, enabled=False):
            weights = attention.float() + self.epsilon
            weights = weights / weights.sum(dim=-1, keepdim=True)  # as the update's mean
            x = self.positions  # [N, 2]
            mu = weights @ x  # [B, K, 2]
            d2 = (x[None, None] - mu[:, :, None]).square().sum(dim=-1)  # [B, K, N]
            variance = torch.exp(2 * self.log_width.float())  # s^2
            if self.area:
                covered = 4.0 * attention.float().mean(dim=-1, keepdim=True)  # A_k [B, K, 1]
                variance = variance + self.area * covered / (2 * math.pi)
            return -0.5 * d2 / variance
