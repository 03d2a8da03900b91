"""Slot Attention (Locatello et al. 2020, Algorithm 1), exactly as the official TF2 code.

    slots ~ N(mu, sigma)                                  # [B, K, D], mu and log sigma learned
    inputs = LayerNorm(inputs); k, v = k(inputs), v(inputs)
    for t in 1..T:
        slots_prev = slots
        q = q(LayerNorm(slots)) / sqrt(D)
        attn = softmax(k q^T, over slots) + epsilon       # [B, N, K]
        attn = attn / sum over inputs                     # weighted mean
        updates = attn^T v                                # [B, K, D]
        slots = GRU(updates, slots_prev)
        slots = slots + MLP(LayerNorm(slots))

Official details kept here: no bias in q/k/v; slots_mu and slots_log_sigma of shape [1, 1, D] with
Keras glorot-uniform ranges (+-sqrt(6 / (1 + D))); epsilon added after the softmax; Keras
LayerNorm epsilon 1e-3; a GRU with the reset gate applied after the recurrent matmul (Keras
`reset_after=True`, which is also PyTorch's `GRUCell`).

Variants found since 2020, off by default (the defaults are the paper's model):
- `implicit_differentiation=True` (Chang et al. 2022, "Object Representations as Fixed Points"):
  the slots are detached before the last iteration, so gradients flow only through the last
  iteration (a first-order implicit gradient); the Gaussian init then gets no gradient.
- `slot_init="learned"` (BO-QSA, Jia et al. 2023): K learned initial slots (queries) instead of
  Gaussian samples, trained bi-level: the slots are detached before the last iteration and the
  queries receive the last iteration's gradient straight through (slots + q - q.detach()).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from slotlab.nn.layers import dense, layer_norm


class SlotAttention(nn.Module):
    """Slot Attention module.

    Args:
        num_slots: K, the default number of slots (can be overridden per call).
        num_iterations: T, the number of attention iterations.
        slot_size: D, the slot dimension.
        mlp_hidden_size: hidden width of the residual slot MLP.
        epsilon: added to the attention weights before the weighted mean.
        input_size: D_in of the inputs (defaults to slot_size).
        implicit_differentiation: detach the slots before the last iteration (Chang et al.).
        slot_init: "gaussian" (official: mu + sigma * noise) or "learned" (BO-QSA queries).
    """

    def __init__(
        self,
        num_slots: int,
        num_iterations: int,
        slot_size: int,
        mlp_hidden_size: int,
        epsilon: float = 1e-8,
        input_size: int | None = None,
        implicit_differentiation: bool = False,
        slot_init: str = "gaussian",
    ):
        super().__init__()
        if slot_init not in ("gaussian", "learned"):
            raise ValueError(f"slot_init must be 'gaussian' or 'learned', got {slot_init!r}")
        self.implicit_differentiation = implicit_differentiation
        self.slot_init = slot_init
        self.num_slots = num_slots
        self.num_iterations = num_iterations
        self.slot_size = slot_size
        self.mlp_hidden_size = mlp_hidden_size
        self.epsilon = epsilon
        input_size = slot_size if input_size is None else input_size

        self.norm_inputs = layer_norm(input_size)
        self.norm_slots = layer_norm(slot_size)
        self.norm_mlp = layer_norm(slot_size)

        # Keras glorot_uniform on a [1, 1, D] weight: fan_in = 1, fan_out = D.
        limit = math.sqrt(6.0 / (1 + slot_size))
        if slot_init == "gaussian":
            self.slots_mu = nn.Parameter(torch.empty(1, 1, slot_size).uniform_(-limit, limit))
            self.slots_log_sigma = nn.Parameter(
                torch.empty(1, 1, slot_size).uniform_(-limit, limit))
        else:  # BO-QSA: one learned query per slot, [1, K, D]
            self.slots_queries = nn.Parameter(
                torch.empty(1, num_slots, slot_size).uniform_(-limit, limit))

        self.project_q = dense(slot_size, slot_size, bias=False)
        self.project_k = dense(input_size, slot_size, bias=False)
        self.project_v = dense(input_size, slot_size, bias=False)

        self.gru = nn.GRUCell(slot_size, slot_size)
        nn.init.xavier_uniform_(self.gru.weight_ih)
        nn.init.orthogonal_(self.gru.weight_hh)  # Keras: orthogonal recurrent kernel
        nn.init.zeros_(self.gru.bias_ih)
        nn.init.zeros_(self.gru.bias_hh)

        self.mlp = nn.Sequential(
            dense(slot_size, mlp_hidden_size), nn.ReLU(), dense(mlp_hidden_size, slot_size)
        )

    def initial_slots(
        self, batch_size: int, num_slots: int, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """slots = mu + exp(log_sigma) * noise, noise ~ N(0, 1) of shape [B, K, D]; with learned
        initial slots, the queries [B, K, D] (noise is not used)."""
        if self.slot_init == "learned":
            if num_slots != self.num_slots:
                raise ValueError(f"learned slot initialisation has {self.num_slots} slots; "
                                 f"{num_slots} were asked for")
            return self.slots_queries.expand(batch_size, -1, -1)
        if noise is None:
            noise = torch.randn(
                batch_size, num_slots, self.slot_size,
                device=self.slots_mu.device, dtype=self.slots_mu.dtype,
            )
        elif noise.shape != (batch_size, num_slots, self.slot_size):
            raise ValueError(
                f"noise must have shape {(batch_size, num_slots, self.slot_size)}, "
                f"got {tuple(noise.shape)}"
            )
        return self.slots_mu + self.slots_log_sigma.exp() * noise

    def forward(
        self,
        inputs: torch.Tensor,
        slots: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        num_slots: int | None = None,
        return_all_attention: bool = False,
        num_iterations: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Run T iterations of slot attention.

        Args:
            inputs: [B, N, D_in] input features.
            slots: optional initial slots [B, K, D] (then `noise` is ignored).
            noise: optional standard-normal slot-initialisation noise [B, K, D].
            num_slots: override of K for this call (Gaussian initialisation only).
            num_iterations: override of T for this call.
            return_all_attention: also return the attention map of every iteration.

        Returns:
            slots [B, K, D], the last attention map [B, K, N] (softmax over slots, before the
            epsilon and the weighted-mean renormalisation), and, if asked, the list of the T maps.
        """
        b = inputs.shape[0]
        if slots is None:
            k_slots = num_slots or (noise.shape[1] if noise is not None else self.num_slots)
            if self.slot_init == "learned" and num_slots is None:
                k_slots = self.num_slots  # noise (if any) is ignored
            slots = self.initial_slots(b, k_slots, noise)
        init = slots
        iterations = self.num_iterations if num_iterations is None else num_iterations

        inputs = self.norm_inputs(inputs)
        k = self.project_k(inputs)  # [B, N, D]
        v = self.project_v(inputs)  # [B, N, D]
        scale = self.slot_size**-0.5

        attentions = []
        for t in range(iterations):
            if t == iterations - 1 and t > 0:
                if self.slot_init == "learned":  # BO-QSA: straight-through to the queries
                    slots = slots.detach() + init - init.detach()
                elif self.implicit_differentiation:
                    slots = slots.detach()
            slots, attn = self.step(slots, k, v, scale)
            attentions.append(attn)
        if return_all_attention:
            return slots, attentions[-1], attentions
        return slots, attentions[-1]

    def step(
        self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One iteration: slots [B, K, D], k and v [B, N, D] -> new slots, attention [B, K, N]."""
        slots_prev = slots
        q = self.project_q(self.norm_slots(slots)) * scale  # [B, K, D]
        # The attention itself (logits, softmax over slots, +epsilon, weighted mean) always runs
        # in float32, also under bf16 autocast: an epsilon of 1e-8 does not exist in bf16, and
        # it costs O(N K D), nothing next to the convolutions. (No-op casts in float32.)
        with torch.autocast(k.device.type, enabled=False):
            logits = torch.einsum("bnd,bkd->bnk", k.float(), q.float())  # [B, N, K]
            attn = logits.softmax(dim=-1)  # softmax over slots
            weights = attn + self.epsilon
            weights = weights / weights.sum(dim=1, keepdim=True)  # weighted mean over inputs
            updates = torch.einsum("bnk,bnd->bkd", weights, v.float())  # [B, K, D]
        d = self.slot_size
        slots = self.gru(updates.reshape(-1, d), slots_prev.reshape(-1, d)).reshape(slots.shape)
        slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attn.transpose(1, 2)
