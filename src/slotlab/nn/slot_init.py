"""Slot initialisers: where Slot Attention's starting slots [B, K, D] come from.

- `GaussianSlots` (the paper's): slots ~ N(mu, sigma), mu and log sigma learned, [1, 1, D].
- `LearnedSlots` (BO-QSA, Jia et al. 2023): K learned queries [1, K, D]. They are trained
  bi-level: Slot Attention cuts the gradient before its last iteration and passes it straight
  through to the queries (`straight_through = True`).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _glorot_limit(slot_size: int) -> float:
    """Keras glorot_uniform's range on a [1, 1, D] weight (fan_in = 1, fan_out = D)."""
    return math.sqrt(6.0 / (1 + slot_size))


class GaussianSlots(nn.Module):
    """slots = mu + exp(log_sigma) * noise, noise ~ N(0, 1) [B, K, D] (official)."""

    straight_through = False

    def __init__(self, num_slots: int, slot_size: int):
        super().__init__()
        limit = _glorot_limit(slot_size)
        self.num_slots, self.slot_size = num_slots, slot_size
        self.slots_mu = nn.Parameter(torch.empty(1, 1, slot_size).uniform_(-limit, limit))
        self.slots_log_sigma = nn.Parameter(torch.empty(1, 1, slot_size).uniform_(-limit, limit))

    def forward(self, batch_size: int, num_slots: int | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """[B, K, D], K = `num_slots`, else the noise's, else the default; `noise` [B, K, D]
        fixes the draw (the official code's tf.random.normal)."""
        if num_slots is None:
            num_slots = self.num_slots if noise is None else noise.shape[1]
        shape = (batch_size, num_slots, self.slot_size)
        if noise is None:
            noise = torch.randn(shape, device=self.slots_mu.device, dtype=self.slots_mu.dtype)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        return self.slots_mu + self.slots_log_sigma.exp() * noise


class LearnedSlots(nn.Module):
    """K learned initial slots (BO-QSA queries) [B, K, D]; the noise is not used."""

    straight_through = True

    def __init__(self, num_slots: int, slot_size: int):
        super().__init__()
        limit = _glorot_limit(slot_size)
        self.num_slots, self.slot_size = num_slots, slot_size
        self.slots_queries = nn.Parameter(
            torch.empty(1, num_slots, slot_size).uniform_(-limit, limit))

    def forward(self, batch_size: int, num_slots: int | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        if num_slots is not None and num_slots != self.num_slots:
            raise ValueError(f"learned slot initialisation has {self.num_slots} slots; "
                             f"{num_slots} were asked for")
        return self.slots_queries.expand(batch_size, -1, -1)


def make_slot_init(kind: str, num_slots: int, slot_size: int) -> GaussianSlots | LearnedSlots:
    """The initialiser named by a model config's `slot_init`."""
    if kind == "gaussian":
        return GaussianSlots(num_slots, slot_size)
    if kind == "learned":
        return LearnedSlots(num_slots, slot_size)
    raise ValueError(f"slot_init must be 'gaussian' or 'learned', got {kind!r}")
