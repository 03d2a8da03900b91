"""Exponential moving average (EMA) of the model weights, an option of the training loop.

With `ema_decay: d` in a config (`--ema-decay d` on `slotlab train`) the loop keeps a copy of
the model whose parameters follow

    ema <- decay_t * ema + (1 - decay_t) * weights,   decay_t = min(d, (1 + t) / (10 + t))

after update t (the warm-up of TensorFlow's `ExponentialMovingAverage(num_updates=t)`, so the
average is not dominated by the random initial weights early in a run). Buffers are copied as
they are. Evaluation, slot pictures and the final `model/` directory then use the average, which
smooths the step-to-step jitter of what the slots bind to; checkpoints hold both.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay used for the `updates`-th update (1-based): min(decay, (1 + t) / (10 + t))."""
    return min(decay, (1 + updates) / (10 + updates))


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy of `model` to hold the average (no gradients, same device and layout)."""
    ema = copy.deepcopy(model)
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter; buffers copied."""
    averaged, current = list(ema.parameters()), list(model.parameters())
    if len(averaged) != len(current):
        raise ValueError("the EMA copy and the model have different parameters")
    torch._foreach_lerp_(averaged, [p.detach() for p in current], 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)
