"""Load the official SAVi checkpoints (JAX/Flax, google-research/slot-attention-video) into
`slotlab.models.savi.SAVi`, without JAX, Flax or TensorFlow.

Inputs: a clu checkpoint directory (`workdir/checkpoints-0/`, newest `ckpt-N.flax`), a
`ckpt-N.flax` file (a TrainState: the parameters are `optimizer/target`) or a bare params msgpack
(`flax.serialization.to_bytes(params)`); see `slotlab.tf_formats.flax_msgpack`.

The architecture is read off the parameter shapes: the encoder and decoder CNNs (layer count,
channels, kernel size), the two stored position grids (`pos_embedding` [1, H, W, 2] of the
encoder gives the resolution, [1, h, w, 2] of the decoder the broadcast size: the decoder's first
log2(H / h) layers are the stride-2 transposed ones, as in every official config), the initializer
(`CoordinateEncoderStateInit_0` with a [4, ...] kernel: boxes, [2, ...]: points;
`ParamStateInit_0`: learned, which also gives K; neither: Gaussian), the slot size, the predictor's
heads and MLP width and the readout's channels. Not stored, so taken from the caller: the number of
Slot Attention iterations (official 1), K for the box/point and Gaussian initializers (the
data decides; default SAVi-S's 24) and whether the readout is flow or frames (default flow).

Name and layout map (flax -> PyTorch): Dense kernel [in, out] -> weight [out, in]; DenseGeneral
kernels [in, heads, hd] / [heads, hd, out] -> flattened, transposed; Conv kernel HWIO -> OIHW;
ConvTranspose kernel [kh, kw, in, out] -> spatially flipped [in, out, kh, kw]; LayerNorm
scale / bias -> weight / bias; GRUCell (ir, iz, in) -> weight_ih / bias_ih blocks (r, z, n),
(hr, hz, hn) -> weight_hh blocks, hn's bias -> bias_hh[2D:], bias_hh[:2D] = 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slotlab.errors import CheckpointError, ConfigError
from slotlab.models.config import SAViConfig
from slotlab.models.savi import SAVi
from slotlab.schema import from_dict
from slotlab.tf_formats.flax_msgpack import checkpoint_file, flax_params, read_flax_msgpack

__all__ = [
    "infer_savi_config",
    "load_savi_checkpoint",
    "read_savi_params",
    "savi_state_dict",
    "state_dict_to_flax",
]

ENC = "FrameEncoder_0"
ENC_PE = f"{ENC}/PositionEmbedding_0"
BOXES = "CoordinateEncoderStateInit_0/MLP_0"
LEARNED = "ParamStateInit_0/state_init"
SA = "SlotAttention_0"
GRU = f"{SA}/GRU_0/GRUCell_0"
PRED = "TransformerBlock_0"
MHA = f"{PRED}/MultiHeadDotProductAttention_0"
DEC = "SpatialBroadcastDecoder_0"


@dataclass(frozen=True)
class Leaf:
    """One official parameter: where it goes in the PyTorch state dict and how."""

    flax: str  # '/'-joined flax path
    torch: str  # state-dict key
    kind: str  # layout transform: same, dense, dense_in, dense_out, flatten, conv, deconv, batch
    rows: tuple[int, int] | None = None  # the rows of the torch tensor it fills (GRU gates)


def _to_torch(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == "dense":
        return value.T
    if kind == "dense_in":  # [in, heads, hd] -> [heads*hd, in]
        return value.reshape(value.shape[0], -1).T
    if kind == "dense_out":  # [heads, hd, out] -> [out, heads*hd]
        return value.reshape(-1, value.shape[-1]).T
    if kind == "flatten":
        return value.reshape(-1)
    if kind == "conv":  # HWIO -> OIHW
        return value.transpose(3, 2, 0, 1)
    if kind == "deconv":  # [kh, kw, in, out] -> flipped [in, out, kh, kw]
        return value[::-1, ::-1].transpose(2, 3, 0, 1)
    if kind == "batch":  # [K, D] -> [1, K, D]
        return value[None]
    return value


def _to_flax(value: np.ndarray, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "dense":
        return value.T
    if kind in ("dense_in", "dense_out"):
        return value.T.reshape(shape)
    if kind == "flatten":
        return value.reshape(shape)
    if kind == "conv":
        return value.transpose(2, 3, 1, 0)
    if kind == "deconv":
        return value.transpose(2, 3, 0, 1)[::-1, ::-1]
    if kind == "batch":
        return value[0]
    return value


def _dense_leaves(flax: str, torch_name: str, kind: str = "dense") -> list[Leaf]:
    return [Leaf(f"{flax}/kernel", f"{torch_name}.weight", kind),
            Leaf(f"{flax}/bias", f"{torch_name}.bias", "same")]


def _norm_leaves(flax: str, torch_name: str) -> list[Leaf]:
    return [Leaf(f"{flax}/scale", f"{torch_name}.weight", "same"),
            Leaf(f"{flax}/bias", f"{torch_name}.bias", "same")]


def savi_leaves(config: SAViConfig) -> list[Leaf]:
    """Every official parameter of the SAVi model `config` describes, with its PyTorch place."""
    leaves: list[Leaf] = []
    for i in range(len(config.encoder_channels)):
        leaves += [Leaf(f"{ENC}/CNN_0/conv_{i}/kernel", f"encoder.cnn.{i}.weight", "conv"),
                   Leaf(f"{ENC}/CNN_0/conv_{i}/bias", f"encoder.cnn.{i}.bias", "same")]
    leaves += [Leaf(f"{ENC_PE}/pos_embedding", "encoder.grid", "same"),
               *_dense_leaves(f"{ENC_PE}/dense_pe_0", "encoder.position"),
               *_norm_leaves(f"{ENC_PE}/MLP_0/LayerNorm_0", "encoder.norm"),
               *_dense_leaves(f"{ENC_PE}/MLP_0/dense_mlp_0", "encoder.mlp.0"),
               *_dense_leaves(f"{ENC_PE}/MLP_0/dense_mlp_1", "encoder.mlp.2")]
    if config.initializer in ("boxes", "points"):
        leaves += [*_dense_leaves(f"{BOXES}/dense_mlp_0", "initializer.mlp.0"),
                   *_dense_leaves(f"{BOXES}/dense_mlp_1", "initializer.mlp.2")]
    elif config.initializer == "learned":
        leaves.append(Leaf(LEARNED, "initializer.slots_queries", "batch"))
    d = config.slot_size
    leaves += [*_norm_leaves(f"{SA}/LayerNorm_0", "corrector.norm_slots"),
               *_norm_leaves(f"{SA}/LayerNorm_1", "corrector.norm_inputs")]
    for name in ("q", "k", "v"):
        leaves.append(Leaf(f"{SA}/general_dense_{name}_0/kernel",
                           f"corrector.project_{name}.weight", "dense_in"))
    for gate, (i, h) in enumerate((("ir", "hr"), ("iz", "hz"), ("in", "hn"))):
        rows = (gate * d, (gate + 1) * d)
        leaves += [Leaf(f"{GRU}/{i}/kernel", "corrector.gru.weight_ih", "dense", rows),
                   Leaf(f"{GRU}/{i}/bias", "corrector.gru.bias_ih", "same", rows),
                   Leaf(f"{GRU}/{h}/kernel", "corrector.gru.weight_hh", "dense", rows)]
    leaves.append(Leaf(f"{GRU}/hn/bias", "corrector.gru.bias_hh", "same", (2 * d, 3 * d)))
    for name in ("query", "key", "value"):
        leaves += [Leaf(f"{MHA}/{name}/kernel", f"predictor.{name}.weight", "dense_in"),
                   Leaf(f"{MHA}/{name}/bias", f"predictor.{name}.bias", "flatten")]
    leaves += [Leaf(f"{MHA}/out/kernel", "predictor.out.weight", "dense_out"),
               Leaf(f"{MHA}/out/bias", "predictor.out.bias", "same"),
               *_norm_leaves(f"{PRED}/LayerNorm_0", "predictor.norm_attention"),
               *_norm_leaves(f"{PRED}/LayerNorm_1", "predictor.norm_mlp"),
               *_dense_leaves(f"{PRED}/MLP_0/dense_mlp_0", "predictor.mlp.0"),
               *_dense_leaves(f"{PRED}/MLP_0/dense_mlp_1", "predictor.mlp.2"),
               Leaf(f"{DEC}/PositionEmbedding_0/pos_embedding", "decoder.grid", "same"),
               *_dense_leaves(f"{DEC}/PositionEmbedding_0/dense_pe_0", "decoder.position")]
    for i, stride in enumerate(config.decoder_strides):
        leaves += [Leaf(f"{DEC}/CNN_0/conv_{i}/kernel", f"decoder.cnn.{i}.weight",
                        "deconv" if stride > 1 else "conv"),
                   Leaf(f"{DEC}/CNN_0/conv_{i}/bias", f"decoder.cnn.{i}.bias", "same")]
    leaves += [*_dense_leaves(f"{DEC}/alpha_logits", "decoder.alpha"),
               *_dense_leaves(f"{DEC}/Readout_0/Dense_0/Dense_0", "decoder.readout")]
    return leaves


def _numbered(params: Mapping[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    """Kernels prefix/conv_0/kernel, conv_1/kernel, ... in order (stops at the first gap)."""
    kernels = []
    while f"{prefix}/conv_{len(kernels)}/kernel" in params:
        kernels.append(params[f"{prefix}/conv_{len(kernels)}/kernel"])
    return kernels


def infer_savi_config(params: Mapping[str, np.ndarray], where: str | Path = "the checkpoint",
                      **overrides: Any) -> SAViConfig:
    """The `SAViConfig` of official SAVi parameters (flat flax paths), from their shapes;
    `overrides` set what the parameters do not store (num_iterations, num_slots, target)."""
    def shape(name: str, ndim: int) -> tuple[int, ...]:
        if name not in params:
            raise CheckpointError(f"{where} is not an official SAVi checkpoint of a supported "
                                  f"architecture: it lacks {name!r}")
        value = params[name]
        if value.ndim != ndim:
            raise CheckpointError(f"{where}: {name!r} has shape {value.shape}, expected "
                                  f"{ndim} dimensions")
        return value.shape

    if not any(k.startswith(ENC + "/") for k in params):
        modules = ", ".join(sorted({k.split("/")[0] for k in params}))
        raise CheckpointError(f"{where} holds no SAVi parameters (no {ENC}; its top-level "
                              f"modules are {modules})")
    encoder = _numbered(params, f"{ENC}/CNN_0")
    decoder = _numbered(params, f"{DEC}/CNN_0")
    if not encoder or not decoder:
        raise CheckpointError(f"{where} is not a SAVi checkpoint with CNN encoder and decoder "
                              f"(no {ENC}/CNN_0/conv_0 or {DEC}/CNN_0/conv_0; ResNet encoders "
                              f"are not supported)")
    for kernels, what in ((encoder, "encoder"), (decoder, "decoder")):
        if any(k.ndim != 4 or k.shape[0] != k.shape[1] or k.shape[0] != kernels[0].shape[0]
               for k in kernels):
            raise CheckpointError(f"{where}: the {what} kernels {[k.shape for k in kernels]} are "
                                  f"not square kernels of one size")
    _, height, width, _ = shape(f"{ENC_PE}/pos_embedding", 4)
    _, h, w, _ = shape(f"{DEC}/PositionEmbedding_0/pos_embedding", 4)
    up = height // h
    if height % h or width % w or width // w != up or up & (up - 1):
        raise CheckpointError(f"{where}: the decoder grid {h}x{w} does not upsample to the "
                              f"encoder grid {height}x{width} by a power of 2")
    n_up = int(math.log2(up))
    if n_up > len(decoder):
        raise CheckpointError(f"{where}: {len(decoder)} decoder layers cannot upsample x{up}")
    values: dict[str, Any] = {
        "resolution": (height, width),
        "num_channels": int(encoder[0].shape[2]),
        "encoder_channels": tuple(int(k.shape[3]) for k in encoder),
        "encoder_kernel_size": int(encoder[0].shape[0]),
        "encoder_mlp_hidden_size": shape(f"{ENC_PE}/MLP_0/dense_mlp_0/kernel", 2)[1],
        "slot_size": shape(f"{SA}/LayerNorm_0/scale", 1)[0],
        "predictor_heads": shape(f"{MHA}/query/kernel", 3)[1],
        "predictor_mlp_size": shape(f"{PRED}/MLP_0/dense_mlp_0/kernel", 2)[1],
        "decoder_channels": tuple(int(k.shape[3]) for k in decoder),
        "decoder_strides": (2,) * n_up + (1,) * (len(decoder) - n_up),
        "decoder_kernel_size": int(decoder[0].shape[0]),
        "target_channels": shape(f"{DEC}/Readout_0/Dense_0/Dense_0/kernel", 2)[1],
    }
    if f"{BOXES}/dense_mlp_0/kernel" in params:
        coordinates, hidden = shape(f"{BOXES}/dense_mlp_0/kernel", 2)
        if coordinates not in (2, 4):
            raise CheckpointError(f"{where}: the initializer's input has {coordinates} "
                                  f"coordinates; expected 4 (boxes) or 2 (points)")
        values["initializer"] = "boxes" if coordinates == 4 else "points"
        values["initializer_hidden_size"] = hidden
    elif LEARNED in params:
        values["initializer"] = "learned"
        values["num_slots"] = shape(LEARNED, 2)[0]
    else:
        values["initializer"] = "gaussian"
    values = {k: int(v) if isinstance(v, np.integer) else v for k, v in values.items()}
    if "num_slots" in values and overrides.get("num_slots") not in (None, values["num_slots"]):
        raise CheckpointError(f"{where} has {values['num_slots']} learned initial slots; "
                              f"num_slots={overrides['num_slots']} does not fit")
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return from_dict(SAViConfig, values, where="SAViConfig")
    except ConfigError as exc:
        raise CheckpointError(f"{where}: the inferred architecture is invalid ({exc})") from None


def savi_state_dict(params: Mapping[str, np.ndarray], model: SAVi,
                    where: str | Path = "the checkpoint") -> dict[str, torch.Tensor]:
    """The state dict of `model` filled from official parameters (flat flax paths)."""
    leaves = savi_leaves(model.config)
    known = {leaf.flax for leaf in leaves}
    unknown = sorted(set(params) - known)
    if unknown:
        raise CheckpointError(f"{where} has a parameter {unknown[0]!r} that this SAVi port does "
                              f"not have" + (f" (and {len(unknown) - 1} more)"
                                             if len(unknown) > 1 else ""))
    target = model.state_dict()
    state = {key: torch.zeros_like(value) for key, value in target.items()
             if key == "corrector.gru.bias_hh"}  # flax has no recurrent r/z biases: 0
    for leaf in leaves:
        if leaf.flax not in params:
            raise CheckpointError(f"{where} lacks the parameter {leaf.flax!r}")
        value = np.ascontiguousarray(_to_torch(np.asarray(params[leaf.flax]), leaf.kind))
        value = torch.from_numpy(value.astype(np.float32, copy=False))
        expected = target[leaf.torch]
        if leaf.rows is not None:
            piece = expected[leaf.rows[0]:leaf.rows[1]]
            if tuple(value.shape) != tuple(piece.shape):
                raise CheckpointError(f"{where}: {leaf.flax!r} has shape {params[leaf.flax].shape}"
                                      f", the model expects {tuple(piece.shape)} after conversion")
            state.setdefault(leaf.torch, torch.zeros_like(expected))
            state[leaf.torch][leaf.rows[0]:leaf.rows[1]] = value
            continue
        if tuple(value.shape) != tuple(expected.shape):
            raise CheckpointError(f"{where}: {leaf.flax!r} has shape {params[leaf.flax].shape}, "
                                  f"the model expects {tuple(expected.shape)} after conversion")
        state[leaf.torch] = value
    missing = sorted(set(target) - set(state))
    if missing:
        raise CheckpointError(f"{where} gives no values for {', '.join(missing[:3])}")
    return state


def state_dict_to_flax(state: Mapping[str, torch.Tensor],
                       config: SAViConfig) -> dict[str, np.ndarray]:
    """The inverse map: a SAVi state dict (or its gradients, keyed alike) -> flat flax paths,
    in the official layouts (PyTorch's recurrent r/z GRU biases have no official place)."""
    shapes = _flax_shapes(config)
    out = {}
    for leaf in savi_leaves(config):
        value = state[leaf.torch].detach().cpu().numpy()
        if leaf.rows is not None:
            value = value[leaf.rows[0]:leaf.rows[1]]
        out[leaf.flax] = np.ascontiguousarray(_to_flax(value, leaf.kind, shapes[leaf.flax]))
    return out


def _flax_shapes(config: SAViConfig) -> dict[str, tuple[int, ...]]:
    """Official shapes of the reshaped leaves (DenseGeneral kernels and biases)."""
    d, heads = config.slot_size, config.predictor_heads
    shapes = {f"{SA}/general_dense_{n}_0/kernel": (c, 1, d)
              for n, c in (("q", d), ("k", config.encoder_channels[-1]),
                           ("v", config.encoder_channels[-1]))}
    for name in ("query", "key", "value"):
        shapes[f"{MHA}/{name}/kernel"] = (d, heads, d // heads)
        shapes[f"{MHA}/{name}/bias"] = (heads, d // heads)
    shapes[f"{MHA}/out/kernel"] = (heads, d // heads, d)
    return {leaf.flax: shapes.get(leaf.flax, ()) for leaf in savi_leaves(config)}


def read_savi_params(path: str | Path) -> tuple[Path, dict[str, np.ndarray]]:
    """(the msgpack file, its flat parameters) of a checkpoint directory or file."""
    file = checkpoint_file(path)
    return file, flax_params(read_flax_msgpack(file), file)


_OVERRIDES = re.compile(r"^(num_slots|num_iterations|target)$")


def load_savi_checkpoint(path: str | Path, **overrides: Any) -> SAVi:
    """An official SAVi checkpoint (directory, `ckpt-N.flax` or params msgpack) as a `SAVi`
    model in eval mode. `overrides`: num_iterations (official 1), num_slots (box/point and
    Gaussian initializers; default 24), target ("flow" or "frames")."""
    bad = [k for k in overrides if not _OVERRIDES.match(k)]
    if bad:
        raise ConfigError(f"unknown option {bad[0]!r} for a SAVi checkpoint; expected "
                          f"num_slots, num_iterations or target")
    file, params = read_savi_params(path)
    config = infer_savi_config(params, file, **overrides)
    model = SAVi(config)
    model.load_state_dict(savi_state_dict(params, model, file))
    return model.eval()
