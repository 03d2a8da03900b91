"""Duplicate slots switched off (slotlab's option, not the paper's).

Exchangeable (Gaussian) starting slots outnumber the objects of a sparse scene, and two or three
of them often bind the same object and share its pixels evenly: the decoder draws each at a
fraction of the alpha, and the segmentation (argmax over slots) scatters the object's pixels over
them. After an iteration, two slots that hold the same pixels between them, and little else, are
duplicates: with a_kn slot k's attention on input n (softmax over slots) and m_k = sum_n a_kn,
the overlap of slots i and j is

    overlap_ij = sum_n min(a_in, a_jn) (a_in + a_jn) / max(m_i, m_j)

It is 1 for two slots holding the same pixels half and half between them, 0.67 for 60/40, 0.43
for 70/30 (a pair that no longer splits the argmax), 2/3 for three slots sharing pixels evenly,
2/K for attention spread evenly over all K slots (an untrained model), and near 0 for disjoint
slots or a slot holding next to nothing anywhere. A slot that owns an object of its own and
shares another with a second slot is not the second's duplicate (its mass is larger than what
they share: 1/3 for two objects of one size). Of a pair above the threshold the slot with less
attention is switched off: from then on it takes no share in the softmax over slots, nor in the
decoder's masks, and the surviving slot takes the whole object. Slots that split the background
into disjoint parts, or own different objects, overlap only on their borders and stay.

s slots sharing one object evenly overlap by 2/s: four or more (drawn faintly, each at a quarter
of the alpha or less) pass a threshold of 0.5. With `group_similarity` c, slots whose attention
maps have the same shape count as one group: with u_k = a_k / ||a_k||, the group of slot k is the
active slots i with u_i . u_k > c (k included), and where the group holds less than half of the
inputs (sum of its masses < N / 2: an object, not an untrained model's spread over the image),
the overlap of i and j is multiplied by max(|G_i|, |G_j|) / 2: s slots sharing an object evenly
then overlap by 1 whatever s. Slots of other shapes, or groups as large as the background, are
judged by the overlap alone.
"""

from __future__ import annotations

import torch
from torch import nn


class DuplicateSlots(nn.Module):
    """attention [B, K, N] (softmax over slots) and the slots already off [B, K] -> the slots
    off after this iteration [B, K] (bool). No parameters; no gradient."""

    def __init__(self, threshold: float, group_similarity: float | None = None):
        super().__init__()
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"the duplicate threshold must be in (0, 1], got {threshold}")
        if group_similarity is not None and not 0.0 < group_similarity < 1.0:
            raise ValueError(f"the group similarity must be in (0, 1), got {group_similarity}")
        self.threshold = threshold
        self.group_similarity = group_similarity

    @torch.no_grad()
    def forward(self, attention: torch.Tensor, off: torch.Tensor | None = None) -> torch.Tensor:
        a = attention.float()  # [B, K, N]
        b, k, _ = a.shape
        if off is None:
            off = torch.zeros(b, k, dtype=torch.bool, device=a.device)
        mass = a.sum(dim=-1)  # [B, K]
        pair_min = torch.minimum(a[:, :, None], a[:, None])  # [B, K, K, N]
        shared = (pair_min * (a[:, :, None] + a[:, None])).sum(dim=-1)  # [B, K, K]
        larger = torch.maximum(mass[:, :, None], mass[:, None]).clamp_min(1e-6)
        overlap = shared / larger  # [B, K(i), K(j)]
        if self.group_similarity is not None:
            overlap = overlap * self.group_size(a, mass, off)
        duplicate = overlap > self.threshold
        # slot j goes when an active slot i with more attention (ties: the lower index) is its
        # duplicate
        index = torch.arange(k, device=a.device)
        stronger = (mass[:, :, None] > mass[:, None]) | (
            (mass[:, :, None] == mass[:, None]) & (index[:, None] < index[None, :]))
        beaten = duplicate & stronger & ~off[:, :, None]
        return off | beaten.any(dim=1)

    def group_size(self, a: torch.Tensor, mass: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
        """max(|G_i|, |G_j|) / 2 for each pair [B, K, K] (at least 1), |G_k| counted only where
        slot k's group holds less than half of the N inputs."""
        unit = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # [B, K, N]
        active = ~off
        same = ((unit @ unit.transpose(1, 2) > self.group_similarity)
                & active[:, None, :] & active[:, :, None]).float()  # [B, K, K]
        size = same.sum(dim=-1)  # [B, K], the slot itself included
        held = (same * mass[:, None, :]).sum(dim=-1)  # the group's attention mass
        half = torch.where(held < a.shape[-1] / 2, size / 2, torch.ones_like(size))
        return torch.maximum(half[:, :, None], half[:, None]).clamp_min(1.0)
