"""Slot Attention (Locatello et al. 2020, Algorithm 1), exactly as the official TF2 code.

    inputs = LayerNorm(inputs); k, v = k(inputs), v(inputs)    # [B, N, D]
    for t in 1..T:
        slots_prev = slots                                     # [B, K, D]
        q = q(LayerNorm(slots)) / sqrt(D)
        attn = softmax(q k^T, over slots) + epsilon            # [B, K, N]
        attn = attn / sum over inputs                          # weighted mean
        updates = attn v                                       # [B, K, D]
        slots = GRU(updates, slots_prev)
        slots = slots + MLP(LayerNorm(slots))

The starting slots are the caller's (`slotlab.nn.slot_init`: Gaussian, the paper's, or learned
queries). Official details: no bias in q/k/v; epsilon added after the softmax; Keras LayerNorm
epsilon 1e-3; a GRU with the reset gate applied after the recurrent matmul (Keras
`reset_after=True`, which is also PyTorch's `GRUCell`).

Variants are small pieces, off by default:
- implicit differentiation (Chang et al. 2022): the slots are detached before the last
  iteration, so gradients flow only through it; with `straight_through` (BO-QSA's learned
  queries) the starting slots receive that gradient unchanged.
- `attention_bias`: a module mapping the previous iteration's attention [B, K, N] to a term added
  to the logits (`slotlab.nn.locality.LocalityBias`).
- a call's `logit_bias` [B, K, N] (or [B, K, 1] for every input alike): a fixed term added to
  the logits (`SLOT_OFF` switches a slot off: it takes no part in the softmax over slots).
- `duplicates`: a module mapping the attention [B, K, N] and the slots already off to the slots
  off from then on (`slotlab.nn.duplicates.DuplicateSlots`), called from the second iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from slotlab.nn.layers import dense

SLOT_OFF = -1e9  # the logit of a switched-off slot: no share in any softmax over slots


def off_bias(off: torch.Tensor) -> torch.Tensor:
    """Slots off [B, K] (bool) -> a term for logits [B, K, 1]: SLOT_OFF where off, else 0."""
    return torch.where(off, SLOT_OFF, 0.0)[:, :, None]


def _sum(*terms: torch.Tensor | None) -> torch.Tensor | None:
    """The sum of the terms that are not None (None if all are)."""
    present = [t for t in terms if t is not None]
    return None if not present else sum(present[1:], present[0])


@dataclass
class SlotAttentionOutput:
    """What every Slot Attention variant returns."""

    slots: torch.Tensor  # [B, K, D]
    attention: torch.Tensor  # [B, K, N] last iteration, softmax over slots
    attention_per_iteration: list[torch.Tensor] | None = None  # T x [B, K, N], if asked
    positions: torch.Tensor | None = None  # [B, K, 2] slot frames (Invariant Slot Attention)
    scales: torch.Tensor | None = None  # [B, K, 2]
    off: torch.Tensor | None = None  # [B, K] slots switched off as duplicates, if any


class SlotAttention(nn.Module):
    """Slot Attention: inputs [B, N, D_in] and starting slots [B, K, D] -> slots [B, K, D].

    `test_iterations` (None: T) are the iterations in eval mode; a call's `num_iterations`
    overrides both. `norm_epsilon` is the LayerNorms' epsilon (Keras 1e-3; Flax, as in SAVi,
    1e-6); `mlp_hidden_size=None` leaves out the residual MLP (SAVi's corrector).
    """

    def __init__(
        self,
        num_iterations: int,
        slot_size: int,
        mlp_hidden_size: int | None,
        input_size: int | None = None,
        epsilon: float = 1e-8,
        test_iterations: int | None = None,
        implicit_differentiation: bool = False,
        straight_through: bool = False,
        attention_bias: nn.Module | None = None,
        norm_epsilon: float = 1e-3,
        duplicates: nn.Module | None = None,
    ):
        super().__init__()
        input_size = slot_size if input_size is None else input_size
        self.num_iterations, self.test_iterations = num_iterations, test_iterations
        self.slot_size, self.epsilon = slot_size, epsilon
        self.implicit_differentiation = implicit_differentiation or straight_through
        self.straight_through = straight_through

        self.norm_inputs = nn.LayerNorm(input_size, eps=norm_epsilon)
        self.norm_slots = nn.LayerNorm(slot_size, eps=norm_epsilon)
        self.norm_mlp = None if mlp_hidden_size is None else nn.LayerNorm(slot_size,
                                                                          eps=norm_epsilon)
        self.project_q = dense(slot_size, slot_size, bias=False)
        self.project_k = dense(input_size, slot_size, bias=False)
        self.project_v = dense(input_size, slot_size, bias=False)
        self.gru = nn.GRUCell(slot_size, slot_size)
        nn.init.xavier_uniform_(self.gru.weight_ih)
        nn.init.orthogonal_(self.gru.weight_hh)  # Keras: orthogonal recurrent kernel
        nn.init.zeros_(self.gru.bias_ih)
        nn.init.zeros_(self.gru.bias_hh)
        self.mlp = None if mlp_hidden_size is None else nn.Sequential(
            dense(slot_size, mlp_hidden_size), nn.ReLU(), dense(mlp_hidden_size, slot_size))
        self.attention_bias = attention_bias
        self.duplicates = duplicates

    def forward(self, inputs: torch.Tensor, slots: torch.Tensor, num_iterations: int | None = None,
                return_all_attention: bool = False,
                logit_bias: torch.Tensor | None = None) -> SlotAttentionOutput:
        init = slots  # [B, K, D]
        fixed = None if logit_bias is None else logit_bias.float()  # [B, K, N or 1]
        iterations = self.iterations(num_iterations)
        inputs = self.norm_inputs(inputs)  # [B, N, D_in]
        # k, v [B, N, D] from one matmul with both weights (one pass over the inputs), in float32
        # once for every iteration (the attention's precision, below)
        kv = F.linear(inputs, torch.cat([self.project_k.weight, self.project_v.weight]))
        k, v = kv.float().split(self.slot_size, dim=-1)  # views of [B, N, 2D]
        attention, attentions, off = None, [], None
        for t in range(iterations):
            if t == iterations - 1 and t > 0 and self.implicit_differentiation:
                slots, attention = self.first_order(slots, init), attention.detach()
            local = None if self.attention_bias is None or attention is None else (
                self.attention_bias(attention))  # [B, K, N]
            switched_off = None if off is None else off_bias(off)  # [B, K, 1]
            bias = _sum(local, fixed, switched_off)
            slots, attention = self.iteration(slots, k, v, bias)
            attentions.append(attention)
            if self.duplicates is not None and t > 0:
                off = self.duplicates(attention, off)  # [B, K]
        return SlotAttentionOutput(slots, attention,
                                   attentions if return_all_attention else None, off=off)

    def iteration(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One iteration of Algorithm 1: slots [B, K, D], k and v [B, N, D] (and a term [B, K, N]
        added to the logits) -> new slots, attention [B, K, N]. Slots lead the attention's axes:
        the softmax over slots then runs along a [B, K, N] tensor's middle axis, 20x faster on
        the CPU than along a last axis of K = 7 (N = 16,384, one thread)."""
        slots_prev = slots
        q = self.project_q(self.norm_slots(slots)) * self.slot_size**-0.5  # [B, K, D]
        # The attention runs in float32 also under bf16 autocast: an epsilon of 1e-8 does not
        # exist in bf16, and it costs O(N K D), nothing next to the convolutions.
        with torch.autocast(k.device.type, enabled=False):
            logits = torch.einsum("bkd,bnd->bkn", q.float(), k.float())  # [B, K, N]
            if bias is not None:
                logits = logits + bias
            attn = logits.softmax(dim=1)  # over slots
            weights = attn + self.epsilon
            weights = weights / weights.sum(dim=2, keepdim=True)  # weighted mean over inputs
            updates = torch.einsum("bkn,bnd->bkd", weights, v.float())  # [B, K, D]
        slots = self.gru(updates.reshape(-1, self.slot_size),
                         slots_prev.reshape(-1, self.slot_size)).reshape(slots.shape)
        if self.mlp is not None:
            slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attn

    def first_order(self, slots: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
        """The cut before the last iteration: detach the slots (implicit differentiation); with
        `straight_through`, the starting slots get the last iteration's gradient (BO-QSA)."""
        if self.straight_through:
            return slots.detach() + init - init.detach()
        return slots.detach()

    def iterations(self, num_iterations: int | None = None) -> int:
        """`num_iterations` if given, else `test_iterations` in eval mode (when set), else T."""
        if num_iterations is not None:
            return num_iterations
        if not self.training and self.test_iterations is not None:
            return self.test_iterations
        return self.num_iterations

    def final_logits(self, inputs: torch.Tensor, out: SlotAttentionOutput,
                     logit_bias: torch.Tensor | None = None) -> torch.Tensor:
        """The logits one more iteration would attend with, k(inputs) . q(slots) / sqrt(D) (plus
        the attention bias of the last attention, `logit_bias` [B, K, N or 1] and the slots
        switched off as duplicates): inputs
        [B, N, D_in] -> [B, K, N] (float32)."""
        k = self.project_k(self.norm_inputs(inputs))  # [B, N, D]
        q = self.project_q(self.norm_slots(out.slots)) * self.slot_size**-0.5  # [B, K, D]
        with torch.autocast(k.device.type, enabled=False):
            logits = torch.einsum("bnd,bkd->bkn", k.float(), q.float())
        if self.attention_bias is not None:
            logits = logits + self.attention_bias(out.attention)
        if logit_bias is not None:
            logits = logits + logit_bias.float()
        if out.off is not None:
            logits = logits + off_bias(out.off)
        return logits
