"""Invariant Slot Attention, translation + scale (ISA-TS; Biza et al. 2023, "Invariant Slot
Attention: Object Discovery with Slot-Centric Reference Frames").

Each slot also carries a position S_p [B, K, 2] and a scale S_s [B, K, 2] in the [-1, 1]
coordinates of the input grid. The inputs carry no absolute position; every slot sees them
through its own frame:

    rel = (grid - S_p) / S_s                                 # [B, K, N, 2]
    k = f(k(inputs) + g(rel)),  v = f(v(inputs) + g(rel))     # [B, K, N, D], f an MLP, g linear
    attn = softmax over slots of k . q(slots)
    updates = weighted mean of v;  S_p = weighted mean of grid
    S_s = weighted standard deviation of grid around S_p      (clipped to [min_scale, 2])
    slots = GRU(updates, slots) + MLP(...)

What a slot encodes is then independent of where the object is and how large it is. Initial
frames: positions uniform in [-1, 1] (with learned initial slots: one fixed draw per slot, kept
as a buffer), scales `init_scale`.
"""

from __future__ import annotations

import torch
from torch import nn

from slotlab.nn.grid import coordinate_grid, relative_grid
from slotlab.nn.layers import dense, layer_norm
from slotlab.nn.slot_attention import SlotAttention, SlotAttentionOutput


class InvariantSlotAttention(SlotAttention):
    """`SlotAttention` in slot-centric frames. Args beyond SlotAttention's: `grid_size` (h, w) of
    the inputs (N = h w); `grid`, the inputs' coordinates [N, 2] (default
    `coordinate_grid(grid_size)`; a strided encoder passes its cells' centres in image
    coordinates, so that positions mean the same in the encoder and the decoder); `num_slots`
    and `fixed_init_positions` (learned initial slots: one fixed initial position per slot);
    `init_scale`; `min_scale`."""

    def __init__(self, num_iterations: int, slot_size: int, mlp_hidden_size: int,
                 grid_size: tuple[int, int], num_slots: int, fixed_init_positions: bool = False,
                 grid: torch.Tensor | None = None, init_scale: float = 0.1,
                 min_scale: float = 0.01, **kwargs):
        super().__init__(num_iterations, slot_size, mlp_hidden_size, **kwargs)
        self.init_scale, self.min_scale, self.max_scale = init_scale, min_scale, 2.0
        if grid is None:
            grid = coordinate_grid(tuple(grid_size))
        if grid.shape != (grid_size[0] * grid_size[1], 2):
            raise ValueError(f"grid {tuple(grid.shape)} does not match grid_size {grid_size}")
        self.register_buffer("grid", grid.float(), persistent=False)
        self.project_grid = dense(2, slot_size)  # g
        self.frame_mlp = nn.Sequential(  # f, shared by keys and values
            layer_norm(slot_size), dense(slot_size, slot_size), nn.ReLU(),
            dense(slot_size, slot_size))
        self.fixed_init_positions = fixed_init_positions
        if fixed_init_positions:
            self.register_buffer("init_positions", torch.rand(1, num_slots, 2) * 2 - 1)

    def initial_frames(self, batch_size: int, num_slots: int,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial positions [B, K, 2] and scales [B, K, 2]."""
        if self.fixed_init_positions:
            positions = self.init_positions.expand(batch_size, -1, -1)
        else:
            positions = torch.rand(batch_size, num_slots, 2, device=device) * 2 - 1
        scales = torch.full((batch_size, num_slots, 2), self.init_scale, device=device)
        return positions, scales

    def forward(self, inputs: torch.Tensor, slots: torch.Tensor, num_iterations: int | None = None,
                return_all_attention: bool = False) -> SlotAttentionOutput:
        """inputs [B, N, D_in] (no position embedding), slots [B, K, D]."""
        init = slots
        positions, scales = self.initial_frames(inputs.shape[0], slots.shape[1], inputs.device)
        iterations = self.iterations(num_iterations)
        inputs = self.norm_inputs(inputs)
        k_in = self.project_k(inputs)[:, None]  # [B, 1, N, D]
        v_in = self.project_v(inputs)[:, None]
        attentions = []
        for t in range(iterations):
            if t == iterations - 1 and t > 0 and self.implicit_differentiation:
                slots = self.first_order(slots, init)
                positions, scales = positions.detach(), scales.detach()
            slots, attention, positions, scales = self.frame_iteration(
                slots, positions, scales, k_in, v_in)
            attentions.append(attention)
        return SlotAttentionOutput(slots, attention, attentions if return_all_attention else None,
                                   positions, scales)

    def frame_keys(self, k_in: torch.Tensor, positions: torch.Tensor,
                   scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys [B, 1, N, D] seen in each slot's frame -> [B, K, N, D], and g(rel)."""
        rel = relative_grid(self.grid, positions, scales)  # [B, K, N, 2]
        rel_embed = self.project_grid(rel.to(k_in.dtype))
        return self.frame_mlp(k_in + rel_embed), rel_embed

    def frame_iteration(
        self, slots: torch.Tensor, positions: torch.Tensor, scales: torch.Tensor,
        k_in: torch.Tensor, v_in: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One iteration in the slots' frames -> slots, attention [B, K, N], positions, scales."""
        slots_prev = slots
        k, rel_embed = self.frame_keys(k_in, positions, scales)  # [B, K, N, D]
        v = self.frame_mlp(v_in + rel_embed)
        q = self.project_q(self.norm_slots(slots)) * self.slot_size**-0.5  # [B, K, D]
        with torch.autocast(k.device.type, enabled=False):
            logits = torch.einsum("bknd,bkd->bkn", k.float(), q.float())  # [B, K, N]
            attn = logits.softmax(dim=1)  # over slots (the middle axis: `SlotAttention`)
            weights = attn + self.epsilon
            weights = weights / weights.sum(dim=2, keepdim=True)  # weighted mean over inputs
            updates = torch.einsum("bkn,bknd->bkd", weights, v.float())  # [B, K, D]
            grid = self.grid.float()
            positions = torch.einsum("bkn,nc->bkc", weights, grid)  # [B, K, 2]
            spread = (grid[None, None] - positions[:, :, None]) ** 2  # [B, K, N, 2]
            scales = torch.einsum("bkn,bknc->bkc", weights, spread).clamp_min(1e-12).sqrt()
            scales = scales.clamp(self.min_scale, self.max_scale)
        d = self.slot_size
        slots = self.gru(updates.reshape(-1, d), slots_prev.reshape(-1, d)).reshape(slots.shape)
        slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attn, positions, scales

    def final_logits(self, inputs: torch.Tensor, out: SlotAttentionOutput) -> torch.Tensor:
        """`SlotAttention.final_logits` with the keys seen in each slot's final frame."""
        k_in = self.project_k(self.norm_inputs(inputs))[:, None]  # [B, 1, N, D]
        k, _ = self.frame_keys(k_in, out.positions, out.scales)  # [B, K, N, D]
        q = self.project_q(self.norm_slots(out.slots)) * self.slot_size**-0.5  # [B, K, D]
        with torch.autocast(k.device.type, enabled=False):
            return torch.einsum("bknd,bkd->bkn", k.float(), q.float())
