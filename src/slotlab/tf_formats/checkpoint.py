"""A pure-Python reader of TensorFlow 2 checkpoints (tensor bundles), without TensorFlow.

A checkpoint `PREFIX` is `PREFIX.index` (a LevelDB-style SSTable mapping each variable name to a
`BundleEntryProto`: dtype, shape, shard, offset, size, masked CRC32C) and the shards
`PREFIX.data-0000i-of-0000n` holding the raw little-endian tensor bytes. A checkpoint directory
written by `tf.train.CheckpointManager` has a text file `checkpoint` naming the latest prefix.

Every problem raises `CheckpointError` with one sentence naming the file.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slotlab.errors import CheckpointError
from slotlab.tf_formats.crc import masked_crc32c
from slotlab.tf_formats.wire import LENGTH_DELIMITED, WireError, iter_fields, read_varint

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5

# TF DataType enum -> numpy dtype (little-endian).
DTYPES = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"),
    5: np.dtype("<i2"), 6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"),
    17: np.dtype("<u2"), 19: np.dtype("<f2"), 22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
DT_STRING = 7


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lives in the data shards."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None


def resolve_prefix(path: str | Path) -> Path:
    """A checkpoint directory (its `checkpoint` file names the latest) or a `ckpt-N` prefix."""
    path = Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if not state.is_file():
            found = sorted(path.glob("*.index"))
            raise CheckpointError(
                f"{path} is a directory without a TF 'checkpoint' file"
                + (f" (pass a prefix such as {found[-1].with_suffix('')})" if found else "")
            )
        text = state.read_text(errors="replace")
        match = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', text, re.MULTILINE)
        if not match:
            raise CheckpointError(f"{state} does not name a model_checkpoint_path")
        prefix = Path(match.group(1))
        path = prefix if prefix.is_absolute() else path / prefix
    if path.suffix == ".index":
        path = path.with_suffix("")
    if not Path(f"{path}.index").is_file():
        raise CheckpointError(f"{path}.index does not exist: not a TF checkpoint prefix")
    return path


def _block(data: bytes, offset: int, size: int, name: Path) -> memoryview:
    end = offset + size
    if offset < 0 or size < 4 or end + BLOCK_TRAILER_SIZE > len(data):
        raise CheckpointError(f"{name} is truncated or corrupt (block out of range)")
    compression = data[end]
    if compression != 0:
        raise CheckpointError(f"{name} uses compressed blocks (type {compression}), unsupported")
    (stored,) = struct.unpack_from("<I", data, end + 1)
    if masked_crc32c(data[offset : end + 1]) != stored:
        raise CheckpointError(f"{name} is corrupt (block checksum mismatch)")
    return memoryview(data)[offset:end]


def _block_entries(block: memoryview, name: Path) -> list[tuple[bytes, memoryview]]:
    """Decode a table block into (key, value) pairs (keys are prefix-compressed)."""
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise CheckpointError(f"{name} is corrupt (bad restart array)")
    entries, key, pos = [], b"", 0
    try:
        while pos < limit:
            shared, pos = read_varint(block, pos, limit)
            unshared, pos = read_varint(block, pos, limit)
            value_len, pos = read_varint(block, pos, limit)
            if shared > len(key) or pos + unshared + value_len > limit:
                raise WireError("entry runs past the block")
            key = key[:shared] + bytes(block[pos : pos + unshared])
            pos += unshared
            entries.append((key, block[pos : pos + value_len]))
            pos += value_len
    except WireError as exc:
        raise CheckpointError(f"{name} is corrupt ({exc})") from None
    return entries


def _handle(value: memoryview) -> tuple[int, int]:
    offset, pos = read_varint(value, 0)
    size, _ = read_varint(value, pos)
    return offset, size


def _parse_entry(name: str, value: memoryview) -> BundleEntry:
    dtype = shard = offset = size = 0
    crc: int | None = None
    shape: list[int] = []
    for field, wire_type, v in iter_fields(value):
        if field in (1, 3, 4, 5, 6) and not isinstance(v, int):
            raise WireError(f"entry {name!r}: field {field} is not a number")
        if field == 1:
            dtype = v
        elif field == 2 and wire_type == LENGTH_DELIMITED:
            for f2, w2, dim in iter_fields(v):
                if f2 == 2 and w2 == LENGTH_DELIMITED:
                    dim_size = next((d for f3, _, d in iter_fields(dim) if f3 == 1), 0)
                    if not isinstance(dim_size, int):
                        raise WireError(f"entry {name!r}: a dimension size is not a number")
                    shape.append(dim_size)
                elif f2 == 3 and v:
                    raise WireError("unknown rank")
        elif field == 3:
            shard = v
        elif field == 4:
            offset = v
        elif field == 5:
            size = v
        elif field == 6:
            crc = v
        elif field == 7:
            raise WireError("partitioned (sliced) variables are not supported")
    return BundleEntry(name, dtype, tuple(shape), shard, offset, size, crc)


class TFCheckpoint:
    """Read-only view of one TF2 checkpoint.

    >>> ckpt = TFCheckpoint("model_dir")          # or "model_dir/ckpt-500"
    >>> ckpt.names()                               # every variable name
    >>> ckpt.read("global_step/.ATTRIBUTES/VARIABLE_VALUE")
    """

    def __init__(self, path: str | Path):
        self.prefix = resolve_prefix(path)
        self.index_path = Path(f"{self.prefix}.index")
        self.entries: dict[str, BundleEntry] = {}
        self.num_shards = 1
        self._shards: dict[int, bytes] = {}
        self._read_index()

    def _read_index(self) -> None:
        name = self.index_path
        data = name.read_bytes()
        if len(data) < FOOTER_SIZE:
            raise CheckpointError(f"{name} is too short to be a TF checkpoint index")
        (magic,) = struct.unpack_from("<Q", data, len(data) - 8)
        if magic != TABLE_MAGIC:
            raise CheckpointError(f"{name} is not a TF checkpoint index (bad magic number)")
        footer = memoryview(data)[len(data) - FOOTER_SIZE :]
        try:
            _, pos = read_varint(footer, 0)  # metaindex handle (unused)
            _, pos = read_varint(footer, pos)
            index_offset, pos = read_varint(footer, pos)
            index_size, pos = read_varint(footer, pos)
            index = _block(data, index_offset, index_size, name)
            for _, handle in _block_entries(index, name):
                offset, size = _handle(handle)
                for key, value in _block_entries(_block(data, offset, size, name), name):
                    if key == b"":
                        self._read_header(value)
                    else:
                        entry_name = key.decode("utf-8", errors="replace")
                        self.entries[entry_name] = _parse_entry(entry_name, value)
        except WireError as exc:
            raise CheckpointError(f"{name} is corrupt ({exc})") from None
        if not self.entries:
            raise CheckpointError(f"{name} holds no tensors")

    def _read_header(self, value: memoryview) -> None:
        for field, _, v in iter_fields(value):
            if field == 1:
                if not isinstance(v, int):
                    raise WireError("the header's shard count is not a number")
                self.num_shards = v
            elif field == 2 and v != 0:
                raise CheckpointError(f"{self.index_path} is big-endian, unsupported")
        if not 1 <= self.num_shards <= 10_000:
            raise CheckpointError(f"{self.index_path} names {self.num_shards} shards")

    def shard_path(self, shard_id: int) -> Path:
        return Path(f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}")

    def _shard(self, shard_id: int) -> bytes:
        if shard_id not in self._shards:
            path = self.shard_path(shard_id)
            if not path.is_file():
                raise CheckpointError(f"{path} is missing (the checkpoint's data shard)")
            self._shards[shard_id] = path.read_bytes()
        return self._shards[shard_id]

    def names(self) -> list[str]:
        return sorted(self.entries)

    def read(self, name: str) -> np.ndarray:
        """The tensor `name` as a numpy array (CRC-checked)."""
        if name not in self.entries:
            raise CheckpointError(f"{self.index_path} has no variable {name!r}")
        e = self.entries[name]
        if e.dtype not in DTYPES:
            raise CheckpointError(f"{self.index_path}: {name!r} has unsupported dtype {e.dtype}")
        if not 0 <= e.shard_id < self.num_shards:
            raise CheckpointError(f"{self.index_path}: {name!r} names shard {e.shard_id}")
        dtype = DTYPES[e.dtype]
        count = math.prod(e.shape)  # exact: a forged shape cannot wrap around int64
        data = self._shard(e.shard_id)
        path = self.shard_path(e.shard_id)
        if count * dtype.itemsize != e.size or e.offset + e.size > len(data):
            raise CheckpointError(
                f"{path} is truncated or does not match its index (variable {name!r})"
            )
        raw = data[e.offset : e.offset + e.size]
        if e.crc32c is not None and masked_crc32c(raw) != e.crc32c:
            raise CheckpointError(f"{path} is corrupt (checksum mismatch for {name!r})")
        return np.frombuffer(raw, dtype=dtype).reshape(e.shape).astype(dtype.newbyteorder("="))
