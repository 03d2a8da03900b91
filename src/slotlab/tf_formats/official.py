"""Load the official Slot Attention TF checkpoints into the PyTorch models.

Checkpoint keys follow the Python attribute names of the official `model.py`:
`network/layer_with_weights-0/<attr>/.../<var>/.ATTRIBUTES/VARIABLE_VALUE`, where Keras
`Sequential` children are numbered `layer_with_weights-i` (counting only layers with weights).
Our models use the same attribute names, so the mapping is a walk down the module tree.
Optimizer slots (`.OPTIMIZER_SLOT`), the optimizer and bookkeeping entries are skipped.

Layouts: Dense kernel [in, out] -> Linear weight [out, in]; Conv2D kernel [kh, kw, in, out] and
Conv2DTranspose kernel [kh, kw, out, in] -> permute (3, 2, 0, 1); LayerNorm gamma/beta ->
weight/bias; Keras GRU gates are ordered (z, r, h), PyTorch's (r, z, n): the first two blocks are
swapped; GRU bias row 0 -> bias_ih, row 1 -> bias_hh.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slotlab.errors import CheckpointError
from slotlab.models import build_model
from slotlab.tf_formats.checkpoint import TFCheckpoint

NETWORK_PREFIX = "network/layer_with_weights-0/"
VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
TASK_MARKERS = {"object_discovery": "decoder_cnn/", "set_prediction": "mlp_classifier/"}


def network_weight_names(ckpt: TFCheckpoint) -> list[str]:
    """Network-weight entry names without prefix and suffix (e.g. `layer_norm/gamma`)."""
    names = []
    for name in ckpt.names():
        if (
            name.startswith(NETWORK_PREFIX)
            and name.endswith(VALUE_SUFFIX)
            and ".OPTIMIZER_SLOT" not in name
        ):
            names.append(name[len(NETWORK_PREFIX) : -len(VALUE_SUFFIX)])
    return names


def _weighted_child(module: nn.Module, index: int) -> nn.Module:
    """The `index`-th child of a container that has parameters (Keras `layer_with_weights-i`)."""
    weighted = [c for c in module.children() if any(True for _ in c.parameters())]
    if index >= len(weighted):
        raise KeyError(f"layer_with_weights-{index}")
    return weighted[index]


def _swap_gru_gates(x: np.ndarray, axis: int) -> np.ndarray:
    """Keras gate blocks (z, r, h) -> PyTorch (r, z, n) along `axis`."""
    z, r, h = np.split(x, 3, axis=axis)
    return np.concatenate([r, z, h], axis=axis)


# Official names whose module differs here: the Gaussian initial slots are Slot Attention
# variables in the official code and the slot initialiser's (`model.slot_init`) here.
RENAMED = {
    "slot_attention/slots_mu": "slot_init/slots_mu",
    "slot_attention/slots_log_sigma": "slot_init/slots_log_sigma",
}


def _target(model: nn.Module, tf_name: str) -> tuple[nn.Module, str, str]:
    """Map `a/b/layer_with_weights-1/kernel` to (module, parameter name, layout kind)."""
    *path, var = RENAMED.get(tf_name, tf_name).split("/")
    module = model
    for part in path:
        match = re.fullmatch(r"layer_with_weights-(\d+)", part)
        module = _weighted_child(module, int(match.group(1))) if match else getattr(module, part)
    if isinstance(module, nn.GRUCell):
        return module, {"kernel": "weight_ih", "recurrent_kernel": "weight_hh"}.get(var, var), "gru"
    if var in ("slots_mu", "slots_log_sigma"):
        return module, var, "same"
    param = {"kernel": "weight", "gamma": "weight", "beta": "bias", "bias": "bias"}[var]
    return module, param, "kernel" if var == "kernel" else "same"


def _convert(value: np.ndarray, kind: str, param: str) -> list[tuple[str, np.ndarray]]:
    if kind == "kernel":
        return [(param, value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T)]
    if kind == "gru":
        if param == "bias":  # [2, 3D]: input bias row, recurrent bias row
            return [("bias_ih", _swap_gru_gates(value[0], 0)),
                    ("bias_hh", _swap_gru_gates(value[1], 0))]
        return [(param, _swap_gru_gates(value.T, 0))]
    return [(param, value)]


def tf_state_dict(ckpt: TFCheckpoint, model: nn.Module, task: str) -> dict[str, torch.Tensor]:
    """The PyTorch state dict of `model` filled from the official checkpoint `ckpt`."""
    names = network_weight_names(ckpt)
    where = ckpt.index_path
    if not names:
        raise CheckpointError(f"{where} holds no Slot Attention network weights")
    marker = TASK_MARKERS[task]
    if not any(n.startswith(marker) for n in names):
        other = next((t for t, m in TASK_MARKERS.items() if any(n.startswith(m) for n in names)),
                     None)
        raise CheckpointError(
            f"{where} is not a {task} checkpoint"
            + (f" (it holds {other} weights)" if other else f" (no {marker} weights)")
        )
    qualified = {id(p): n for n, p in model.named_parameters()}
    state: dict[str, torch.Tensor] = {}
    for tf_name in names:
        try:
            module, param, kind = _target(model, tf_name)
        except (AttributeError, KeyError):
            raise CheckpointError(
                f"{where} has a weight {tf_name!r} that the {task} model does not have"
            ) from None
        for torch_param, value in _convert(ckpt.read(NETWORK_PREFIX + tf_name + VALUE_SUFFIX),
                                           kind, param):
            target = getattr(module, torch_param)
            if tuple(target.shape) != value.shape:
                raise CheckpointError(
                    f"{where}: weight {tf_name!r} has shape {value.shape} after conversion, "
                    f"the model expects {tuple(target.shape)}"
                )
            state[qualified[id(target)]] = torch.from_numpy(np.ascontiguousarray(value))
    missing = sorted(set(qualified.values()) - set(state))
    if missing:
        raise CheckpointError(f"{where} lacks weights for {', '.join(missing[:3])}")
    return state


def load_tf_checkpoint(path: str | Path, task: str, **config: Any) -> nn.Module:
    """Load an official TF checkpoint into a slotlab model (eval mode).

    Args:
        path: a checkpoint directory (its `checkpoint` file names the latest) or a `ckpt-N` prefix.
        task: "object_discovery" or "set_prediction".
        config: model arguments that the checkpoint does not store (`resolution`, `num_slots`,
            `num_iterations`); defaults are the official ones.
    """
    task = task.replace("-", "_")
    if task not in TASK_MARKERS:
        raise CheckpointError(f"unknown task {task!r}; expected one of {', '.join(TASK_MARKERS)}")
    ckpt = TFCheckpoint(path)
    model = build_model(task, **config)
    model.load_state_dict(tf_state_dict(ckpt, model, task))
    return model.eval()
