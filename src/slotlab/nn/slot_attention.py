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
- `locality_grid=(h, w)` (not in the literature as such; slotlab's option): from the second
  iteration on, the logits get a locality term -|x_n - mu_k|^2 / (2 s^2), where x_n is input n's
  position on that grid in [-1, 1], mu_k the mean position of slot k's previous attention
  (weighted as its update) and s a learned width (one scalar, starting at 0.5). The paper's
  position embedding is added to the features, so k . q is linear in the position: a slot can
  prefer a side of the image but not a place, and pixels of one colour in two places go to one
  slot. The quadratic term lets a slot prefer the place it found.
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
        test_iterations: iterations in eval mode (`module.eval()`), when they should differ from
            training's (None: T always). A call's `num_iterations` overrides both.
        locality_grid: (h, w) of the inputs' grid (N = h w, row-major) to add the locality term
            (module docstring); None: the paper's attention.
        grid: with `locality_grid`, the inputs' positions [N, 2] in [-1, 1] (default
            `coordinate_grid(locality_grid)`).
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
        test_iterations: int | None = None,
        locality_grid: tuple[int, int] | None = None,
        grid: torch.Tensor | None = None,
    ):
        super().__init__()
        if slot_init not in ("gaussian", "learned"):
            raise ValueError(f"slot_init must be 'gaussian' or 'learned', got {slot_init!r}")
        self.implicit_differentiation = implicit_differentiation
        self.slot_init = slot_init
        self.num_slots = num_slots
        self.num_iterations = num_iterations
        if test_iterations is not None and test_iterations < 1:
            raise ValueError(f"test_iterations must be >= 1, got {test_iterations}")
        self.test_iterations = test_iterations
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

        self.locality = locality_grid is not None
        if self.locality:
            h, w = locality_grid
            if grid is None:
                grid = coordinate_grid((h, w))
            if grid.shape != (h * w, 2):
                raise ValueError(f"grid must be [{h * w}, 2] for locality_grid {locality_grid}, "
                                 f"got {tuple(grid.shape)}")
            self.register_buffer("locality_positions", grid.float(), persistent=False)
            self.locality_log_width = nn.Parameter(torch.tensor(math.log(0.5)))

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
        if slots is None:
            slots = self.start_slots(inputs.shape[0], noise, num_slots)
        init = slots
        iterations = self.iterations(num_iterations)

        inputs = self.norm_inputs(inputs)
        k = self.project_k(inputs)  # [B, N, D]
        v = self.project_v(inputs)  # [B, N, D]
        scale = self.slot_size**-0.5

        attentions = []
        previous = None  # with the locality term: the previous iteration's attention
        for t in range(iterations):
            if t == iterations - 1 and t > 0:
                slots = self.before_last_iteration(slots, init)
                if previous is not None and (self.slot_init == "learned"
                                             or self.implicit_differentiation):
                    previous = previous.detach()  # only the last iteration is differentiated
            bias = None if previous is None else self.locality_bias(previous).transpose(1, 2)
            slots, attn = self.step(slots, k, v, scale, bias)
            if self.locality:
                previous = attn
            attentions.append(attn)
        if return_all_attention:
            return slots, attentions[-1], attentions
        return slots, attentions[-1]

    def locality_bias(self, attention: torch.Tensor) -> torch.Tensor:
        """The locality term that follows an iteration's attention [B, K, N] (softmax over
        slots): -|x_n - mu_k|^2 / (2 s^2), [B, K, N] (float32)."""
        with torch.autocast(attention.device.type, enabled=False):
            weights = attention.float() + self.epsilon
            weights = weights / weights.sum(dim=-1, keepdim=True)  # as the update's mean
            x = self.locality_positions  # [N, 2]
            mu = weights @ x  # [B, K, 2]
            d2 = (x[None, None] - mu[:, :, None]).square().sum(dim=-1)  # [B, K, N]
            return -0.5 * d2 * torch.exp(-2 * self.locality_log_width.float())

    def iterations(self, num_iterations: int | None = None) -> int:
        """The iterations a call runs: `num_iterations` if given, else `test_iterations` in eval
        mode (when set), else T."""
        if num_iterations is not None:
            return num_iterations
        if not self.training and self.test_iterations is not None:
            return self.test_iterations
        return self.num_iterations

    def start_slots(
        self, batch_size: int, noise: torch.Tensor | None, num_slots: int | None
    ) -> torch.Tensor:
        """The initial slots [B, K, D]: K = `num_slots`, else the noise's K, else the model's;
        learned initial slots ignore the noise."""
        k_slots = num_slots or (noise.shape[1] if noise is not None else self.num_slots)
        if self.slot_init == "learned" and num_slots is None:
            k_slots = self.num_slots
        return self.initial_slots(batch_size, k_slots, noise)

    def before_last_iteration(self, slots: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
        """The variants' cut before the last iteration: BO-QSA detaches the slots and passes the
        gradient straight through to the initial queries; implicit differentiation detaches."""
        if self.slot_init == "learned":
            return slots.detach() + init - init.detach()
        if self.implicit_differentiation:
            return slots.detach()
        return slots

    def attention_weights(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [B, N, K] -> the attention (softmax over slots) and the weights of the
        weighted mean over inputs (attention + epsilon, normalised over N), both [B, N, K]."""
        attn = logits.softmax(dim=-1)
        weights = attn + self.epsilon
        return attn, weights / weights.sum(dim=1, keepdim=True)

    def final_logits(self, inputs: torch.Tensor, slots: torch.Tensor,
                     attention: torch.Tensor | None = None) -> torch.Tensor:
        """The attention logits of the final slots over the inputs, k(inputs) . q(slots) /
        sqrt(D), as the next iteration would compute them: inputs [B, N, D_in], slots [B, K, D]
        -> [B, K, N] (float32). With the locality term, `attention` is the last iteration's
        [B, K, N] and the term that follows it is added."""
        k = self.project_k(self.norm_inputs(inputs))  # [B, N, D]
        q = self.project_q(self.norm_slots(slots)) * self.slot_size**-0.5  # [B, K, D]
        with torch.autocast(k.device.type, enabled=False):
            logits = torch.einsum("bnd,bkd->bkn", k.float(), q.float())
        if self.locality:
            if attention is None:
                raise ValueError("with locality_grid, final_logits needs the last attention")
            logits = logits + self.locality_bias(attention)
        return logits

    def step(
        self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
        bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One iteration: slots [B, K, D], k and v [B, N, D] (and an optional term [B, N, K]
        added to the logits) -> new slots, attention [B, K, N]."""
        slots_prev = slots
        q = self.project_q(self.norm_slots(slots)) * scale  # [B, K, D]
        # The attention itself (logits, softmax over slots, +epsilon, weighted mean) always runs
        # in float32, also under bf16 autocast: an epsilon of 1e-8 does not exist in bf16, and
        # it costs O(N K D), nothing next to the convolutions. (No-op casts in float32.)
        with torch.autocast(k.device.type, enabled=False):
            logits = torch.einsum("bnd,bkd->bnk", k.float(), q.float())  # [B, N, K]
            if bias is not None:
                logits = logits + bias
            attn, weights = self.attention_weights(logits)
            updates = torch.einsum("bnk,bnd->bkd", weights, v.float())  # [B, K, D]
        d = self.slot_size
        slots = self.gru(updates.reshape(-1, d), slots_prev.reshape(-1, d)).reshape(slots.shape)
        slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attn.transpose(1, 2)


def grid_from_axes(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Row and column coordinates [h], [w] -> [h * w, 2] (row, col), row-major."""
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)


def coordinate_grid(size: tuple[int, int]) -> torch.Tensor:
    """Pixel-centre coordinates in [-1, 1] of an (h, w) grid, row-major: [h * w, 2] (row, col)."""
    return grid_from_axes(torch.linspace(-1.0, 1.0, size[0]), torch.linspace(-1.0, 1.0, size[1]))


def pixel_coordinates(centres: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel positions (0 = the first pixel's centre, may be fractional) -> the [-1, 1]
    coordinates of `coordinate_grid(size)` at full resolution (pixel j at -1 + 2j / (size - 1))."""
    return centres * (2.0 / max(size - 1, 1)) - 1.0


def relative_grid(
    grid: torch.Tensor, positions: torch.Tensor, scales: torch.Tensor
) -> torch.Tensor:
    """Grid coordinates [N, 2] in each slot's frame, (grid - S_p) / S_s, for positions and scales
    [B, K, 2]: [B, K, N, 2]."""
    return (grid[None, None] - positions[:, :, None]) / scales[:, :, None]


class InvariantSlotAttention(SlotAttention):
    """Invariant Slot Attention, translation + scale (ISA-TS; Biza et al. 2023, "Invariant Slot
    Attention: Object Discovery with Slot-Centric Reference Frames").

    Each slot also carries a position S_p [B, K, 2] and a scale S_s [B, K, 2] in the [-1, 1]
    coordinates of the input grid. The inputs carry no absolute position; instead every slot sees
    the inputs through its own frame:

        rel = (grid - S_p) / S_s                              # [B, K, N, 2]
        k = f(k(inputs) + g(rel)),  v = f(v(inputs) + g(rel))  # [B, K, N, D], f an MLP, g linear
        attn = softmax over slots of k . q(slots)
        updates = weighted mean of v;  S_p = weighted mean of grid
        S_s = weighted standard deviation of grid around S_p   (clipped to [min_scale, 2])
        slots = GRU(updates, slots) + MLP(...)

    What a slot encodes is then independent of where the object is and how large it is, and the
    decoder renders each slot in the same frame: an object's shape is learned once for every
    position. Initial frames: positions uniform in [-1, 1] (learned slot initialisation: one fixed
    draw per slot, kept as a buffer), scales `init_scale`.

    Args (beyond SlotAttention's): grid_size (h, w) of the inputs (N = h * w); grid: the inputs'
    coordinates [N, 2] (default `coordinate_grid(grid_size)`; a model with a strided encoder
    passes its cells' centres in image coordinates, so that positions mean the same in the
    encoder and the decoder); init_scale; min_scale.
    """

    def __init__(
        self,
        num_slots: int,
        num_iterations: int,
        slot_size: int,
        mlp_hidden_size: int,
        grid_size: tuple[int, int],
        epsilon: float = 1e-8,
        input_size: int | None = None,
        implicit_differentiation: bool = False,
        slot_init: str = "gaussian",
        init_scale: float = 0.1,
        min_scale: float = 0.01,
        grid: torch.Tensor | None = None,
        test_iterations: int | None = None,
    ):
        super().__init__(num_slots, num_iterations, slot_size, mlp_hidden_size, epsilon,
                         input_size, implicit_differentiation, slot_init, test_iterations)
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
        if slot_init == "learned":
            self.register_buffer("init_positions", torch.rand(1, num_slots, 2) * 2 - 1)

    def initial_frames(
        self, batch_size: int, num_slots: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial positions [B, K, 2] and scales [B, K, 2]."""
        if self.slot_init == "learned":
            positions = self.init_positions.expand(batch_size, -1, -1)
        else:
            positions = torch.rand(batch_size, num_slots, 2, device=device) * 2 - 1
        scales = torch.full((batch_size, num_slots, 2), self.init_scale, device=device)
        return positions, scales

    def forward(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        slots: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        num_slots: int | None = None,
        return_all_attention: bool = False,
        num_iterations: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """inputs [B, N, D_in] (no position embedding) -> slots [B, K, D], last attention
        [B, K, N], the T attention maps (empty unless asked), positions [B, K, 2], scales
        [B, K, 2]."""
        b = inputs.shape[0]
        if slots is None:
            slots = self.start_slots(b, noise, num_slots)
        init = slots
        positions, scales = self.initial_frames(b, slots.shape[1], inputs.device)
        iterations = self.iterations(num_iterations)

        inputs = self.norm_inputs(inputs)
        k_in = self.project_k(inputs)[:, None]  # [B, 1, N, D]
        v_in = self.project_v(inputs)[:, None]
        scale = self.slot_size**-0.5

        attentions = []
        for t in range(iterations):
            if t == iterations - 1 and t > 0:
                slots = self.before_last_iteration(slots, init)
                if self.slot_init == "learned" or self.implicit_differentiation:
                    positions, scales = positions.detach(), scales.detach()
            slots, attn, positions, scales = self.frame_step(
                slots, positions, scales, k_in, v_in, scale)
            attentions.append(attn)
        return slots, attentions[-1], attentions if return_all_attention else [], positions, scales

    def final_logits(  # type: ignore[override]
        self, inputs: torch.Tensor, slots: torch.Tensor, positions: torch.Tensor,
        scales: torch.Tensor,
    ) -> torch.Tensor:
        """`SlotAttention.final_logits` with the keys seen in each slot's final frame
        (positions, scales [B, K, 2]): [B, K, N] (float32)."""
        k_in = self.project_k(self.norm_inputs(inputs))[:, None]  # [B, 1, N, D]
        rel = relative_grid(self.grid, positions, scales)  # [B, K, N, 2]
        k = self.frame_mlp(k_in + self.project_grid(rel.to(k_in.dtype)))  # [B, K, N, D]
        q = self.project_q(self.norm_slots(slots)) * self.slot_size**-0.5  # [B, K, D]
        with torch.autocast(k.device.type, enabled=False):
            return torch.einsum("bknd,bkd->bkn", k.float(), q.float())

    def frame_step(
        self, slots: torch.Tensor, positions: torch.Tensor, scales: torch.Tensor,
        k_in: torch.Tensor, v_in: torch.Tensor, scale: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One iteration in the slots' frames; returns slots, attention [B, K, N], positions,
        scales."""
        slots_prev = slots
        rel = relative_grid(self.grid, positions, scales)  # [B, K, N, 2]
        rel_embed = self.project_grid(rel.to(k_in.dtype))
        k = self.frame_mlp(k_in + rel_embed)  # [B, K, N, D]
        v = self.frame_mlp(v_in + rel_embed)
        q = self.project_q(self.norm_slots(slots)) * scale  # [B, K, D]
        with torch.autocast(k.device.type, enabled=False):
            logits = torch.einsum("bknd,bkd->bnk", k.float(), q.float())  # [B, N, K]
            attn, weights = self.attention_weights(logits)
            updates = torch.einsum("bnk,bknd->bkd", weights, v.float())  # [B, K, D]
            grid = self.grid.float()
            positions = torch.einsum("bnk,nc->bkc", weights, grid)  # [B, K, 2]
            spread = (grid[None, None] - positions[:, :, None]) ** 2  # [B, K, N, 2]
            scales = torch.einsum("bnk,bknc->bkc", weights, spread).clamp_min(1e-12).sqrt()
            scales = scales.clamp(self.min_scale, self.max_scale)
        d = self.slot_size
        slots = self.gru(updates.reshape(-1, d), slots_prev.reshape(-1, d)).reshape(slots.shape)
        slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attn.transpose(1, 2), positions, scales
