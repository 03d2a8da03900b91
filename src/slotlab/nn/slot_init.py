"""Slot initialisers: where Slot Attention's starting slots [B, K, D] come from.

- `GaussianSlots` (the paper's): slots ~ N(mu, sigma), mu and log sigma learned, [1, 1, D].
- `LearnedSlots` (BO-QSA, Jia et al. 2023): K learned queries [1, K, D]. They are trained
  bi-level: Slot Attention cuts the gradient before its last iteration and passes it straight
  through to the queries (`straight_through = True`).
- `FarthestSlots` (slotlab's, not the paper's): each image's slots start from K of its own
  inputs picked far apart (farthest-point seeding, as k-means++ without the sampling).

An initialiser is called as `init(batch_size, num_slots, noise, inputs)`; `inputs` [B, N, D_in]
are Slot Attention's inputs, used only by `FarthestSlots`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from slotlab.nn.layers import dense


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
                noise: torch.Tensor | None = None,
                inputs: torch.Tensor | None = None) -> torch.Tensor:
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
                noise: torch.Tensor | None = None,
                inputs: torch.Tensor | None = None) -> torch.Tensor:
        if num_slots is not None and num_slots != self.num_slots:
            raise ValueError(f"learned slot initialisation has {self.num_slots} slots; "
                             f"{num_slots} were asked for")
        return self.slots_queries.expand(batch_size, -1, -1)


class FarthestSlots(nn.Module):
    """Slots started from the image's own inputs: the input farthest from the mean input, then
    K - 1 times the input farthest from all picked so far (Euclidean, on the layer-normalised
    inputs), each picked input projected to the slot size by a learned dense layer.

    With K exchangeable slots drawn from one Gaussian, several slots can start alike and share
    one object; with K learned queries, each query learns a fixed kind of input (on flat sprites
    of uniform hue: a range of hues) and sprites of near hues go to one slot. Seeds picked far
    apart in the image's own features start the slots on different parts of each image. The pick
    is not differentiated; the picked inputs and the projection are. The noise is not used.
    """

    straight_through = False

    def __init__(self, num_slots: int, slot_size: int, input_size: int | None = None):
        super().__init__()
        self.num_slots, self.slot_size = num_slots, slot_size
        self.project = dense(slot_size if input_size is None else input_size, slot_size)

    def forward(self, batch_size: int, num_slots: int | None = None,
                noise: torch.Tensor | None = None,
                inputs: torch.Tensor | None = None) -> torch.Tensor:
        if inputs is None:
            raise ValueError("FarthestSlots start from the inputs: pass inputs [B, N, D_in]")
        k = self.num_slots if num_slots is None else num_slots
        picked = farthest_points(inputs, k)  # [B, K]
        seeds = inputs.gather(1, picked[..., None].expand(-1, -1, inputs.shape[-1]))
        return self.project(seeds)  # [B, K, D]


@torch.no_grad()
def farthest_points(inputs: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [B, k] of farthest-point seeding over inputs [B, N, D] (layer-normalised, so
    the distance does not depend on the features' scale)."""
    x = nn.functional.layer_norm(inputs.float(), inputs.shape[-1:])  # [B, N, D]
    distance = (x - x.mean(dim=1, keepdim=True)).square().sum(-1)  # [B, N] to the mean
    picked = []
    for _ in range(k):
        index = distance.argmax(dim=1)  # [B]
        picked.append(index)
        seed = x[torch.arange(x.shape[0]), index]  # [B, D]
        new = (x - seed[:, None]).square().sum(-1)  # [B, N]
        distance = new if len(picked) == 1 else torch.minimum(distance, new)
    return torch.stack(picked, dim=1)


def make_slot_init(kind: str, num_slots: int, slot_size: int,
                   input_size: int | None = None) -> GaussianSlots | LearnedSlots | FarthestSlots:
    """The initialiser named by a model config's `slot_init`."""
    if kind == "gaussian":
        return GaussianSlots(num_slots, slot_size)
    if kind == "learned":
        return LearnedSlots(num_slots, slot_size)
    if kind == "farthest":
        return FarthestSlots(num_slots, slot_size, input_size)
    raise ValueError(f"slot_init must be 'gaussian', 'learned' or 'farthest', got {kind!r}")
