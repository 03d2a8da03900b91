"""Flax msgpack files (`flax.serialization.to_bytes`), read without JAX or Flax.

A Flax state (a params tree, or a whole TrainState as clu's checkpoints `ckpt-N.flax` hold it)
is one msgpack map of nested maps keyed by module names. Arrays are msgpack extension types:

    code 1 (ndarray)         msgpack([shape list, dtype name e.g. "float32", raw C-order bytes])
    code 2 (native complex)  msgpack([real, imag])
    code 3 (numpy scalar)    msgpack([shape list (empty), dtype name, raw bytes])

An array larger than 2**30 bytes is split into a map {"__msgpack_chunked_array__": True, "shape":
{"0": d0, ...}, "chunks": {"0": flat chunk, ...}}; it is put back together here.

    tree = read_flax_msgpack("checkpoints-0/ckpt-3.flax")     # nested dicts of numpy arrays
    params = flax_params(tree)                                 # {"FrameEncoder_0/CNN_0/...": ...}

Only numeric dtypes are accepted (no object arrays); every problem is a `CheckpointError` with
one sentence naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from slotlab.errors import CheckpointError

__all__ = [
    "checkpoint_file",
    "flatten_tree",
    "flax_params",
    "read_flax_msgpack",
]

EXT_NDARRAY, EXT_COMPLEX, EXT_SCALAR = 1, 2, 3
CHUNKED = "__msgpack_chunked_array__"
DTYPES = {
    name: np.dtype(name)
    for name in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64", "complex64", "complex128")
}
CKPT_PATTERN = re.compile(r"^ckpt-(\d+)\.flax$")


class _FormatError(ValueError):
    """Raised inside the msgpack hooks; turned into one CheckpointError line."""


def _decode_array(data: bytes) -> np.ndarray:
    import msgpack

    fields = msgpack.unpackb(data, raw=False)
    if not isinstance(fields, list | tuple) or len(fields) != 3:
        raise _FormatError("an array extension does not hold [shape, dtype, bytes]")
    shape, name, raw = fields
    if not isinstance(shape, list | tuple) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise _FormatError(f"an array has an invalid shape {shape!r}")
    if not isinstance(name, str) or name not in DTYPES:
        raise _FormatError(f"an array has an unsupported dtype {name!r}")
    if not isinstance(raw, bytes):
        raise _FormatError("an array's data is not a byte string")
    dtype = DTYPES[name]
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count * dtype.itemsize != len(raw):
        raise _FormatError(f"an array of shape {tuple(shape)} {name} holds {len(raw)} bytes, "
                           f"not {count * dtype.itemsize}")
    # msgpack arrays are little-endian C-order (numpy's native byte order on the writers' hosts).
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def _ext_hook(code: int, data: bytes) -> Any:
    import msgpack

    if code in (EXT_NDARRAY, EXT_SCALAR):
        array = _decode_array(data)
        return array if code == EXT_NDARRAY else array.reshape(())[()]
    if code == EXT_COMPLEX:
        parts = msgpack.unpackb(data, raw=False)
        if not isinstance(parts, list | tuple) or len(parts) != 2:
            raise _FormatError("a complex number extension does not hold [real, imag]")
        return complex(parts[0], parts[1])
    raise _FormatError(f"unknown msgpack extension type {code}")


def _unchunk(tree: Any) -> Any:
    """Reassemble chunked arrays (and recurse into maps)."""
    if not isinstance(tree, dict):
        return tree
    if tree.get(CHUNKED) is True:
        try:
            shape = tuple(int(tree["shape"][str(i)]) for i in range(len(tree["shape"])))
            chunks = [np.asarray(tree["chunks"][str(i)]) for i in range(len(tree["chunks"]))]
            flat = np.concatenate(chunks) if chunks else np.zeros(0)
            return flat.reshape(shape)
        except (KeyError, TypeError, ValueError) as exc:
            raise _FormatError(f"a chunked array is malformed ({exc})") from None
    return {key: _unchunk(value) for key, value in tree.items()}


def read_flax_msgpack(path: str | Path) -> dict[str, Any]:
    """The state tree of a Flax msgpack file: nested dicts of numpy arrays and Python numbers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist (expected a Flax msgpack file)")
    try:
        import msgpack
    except ImportError:  # pragma: no cover - a project dependency
        raise CheckpointError("reading Flax checkpoints needs the Python package 'msgpack' "
                              "(pip install msgpack)") from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read ({exc.strerror})") from None
    try:
        tree = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=True)
        tree = _unchunk(tree)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a valid Flax msgpack file ({detail})") from None
    if not isinstance(tree, dict):
        raise CheckpointError(f"{path} is not a Flax state (its msgpack top level is a "
                              f"{type(tree).__name__}, not a map)")
    return tree


def flatten_tree(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested maps -> {"a/b/c": leaf}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_tree(value, name + "/"))
        else:
            flat[name] = value
    return flat


def flax_params(tree: Mapping[str, Any], where: str | Path = "the file") -> dict[str, np.ndarray]:
    """The model parameters of a Flax state, flattened to '/'-joined paths.

    Accepts a `flax.optim` TrainState as the official SAVi trainer saves it (`optimizer/target`),
    a `flax.training` TrainState (`params`), a variables dict (`params`) or a bare params tree.
    """
    node: Any = tree
    optimizer = tree.get("optimizer")
    if isinstance(optimizer, Mapping) and isinstance(optimizer.get("target"), Mapping):
        node = optimizer["target"]
    elif isinstance(tree.get("params"), Mapping):
        node = tree["params"]
    flat = flatten_tree(node)
    params = {}
    for name, value in flat.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{where}: parameter {name!r} is not an array "
                                  f"({type(value).__name__})")
        params[name] = value
    if not params:
        raise CheckpointError(f"{where} holds no parameters")
    return params


def checkpoint_file(path: str | Path) -> Path:
    """The msgpack file of `path`: a file as given, or the newest `ckpt-N.flax` of a clu
    checkpoint directory (`checkpoints-0/`; a work directory holding `checkpoints*/` works too)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path} does not exist (expected a checkpoint directory, a "
                              f"ckpt-N.flax file or a params msgpack file)")
    for folder in [path, *sorted(p for p in path.glob("checkpoints*") if p.is_dir())]:
        found = [(int(m.group(1)), p) for p in folder.iterdir()
                 if (m := CKPT_PATTERN.match(p.name)) and p.is_file()]
        if found:
            return max(found)[1]
    raise CheckpointError(f"{path} holds no ckpt-N.flax file (expected a clu checkpoint "
                          f"directory such as workdir/checkpoints-0)")
