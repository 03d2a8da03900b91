"""TFRecord files read and written without TensorFlow.

TFRecord framing (one record after another, nothing else in the stream)::

    uint64 LE  length                 payload size in bytes
    uint32 LE  masked CRC32C(length bytes)
    bytes      payload                one serialized proto (e.g. a tf.train.Example)
    uint32 LE  masked CRC32C(payload)

with the masked CRC32C of `slotlab.tf_formats.crc`. A file may be GZIP-compressed as a whole
(detected by the gzip magic bytes `1f 8b`; concatenated gzip members are accepted); it is
inflated as a stream, never at once. Payloads are parsed with `slotlab.tf_formats.example`.

Every problem with the input raises `slotlab.errors.DataError` with one sentence that names the
file and what is wrong.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from slotlab.errors import DataError
from slotlab.io import atomic_write
from slotlab.tf_formats.crc import masked_crc32c
from slotlab.tf_formats.example import encode_example

__all__ = [
    "MAX_GZIP_RECORD_BYTES",
    "index_records",
    "is_gzip",
    "iter_records",
    "read_record_at",
    "write_tfrecord",
]

GZIP_MAGIC = b"\x1f\x8b"
MAX_GZIP_RECORD_BYTES = 1 << 30  # a record length above this in a gzip stream is corrupt
_CHUNK = 64 << 20  # large payloads are read in chunks, so a lying length cannot over-allocate


def is_gzip(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with the gzip magic bytes (the whole stream is compressed)."""
    with _open(Path(path)) as f:
        return f.read(2) == GZIP_MAGIC


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a TFRecord file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be opened ({exc.strerror or exc})") from None


class _Stream:
    """Reads exact byte counts from a plain or gzip file, turning I/O errors into DataError."""

    def __init__(self, path: Path, raw: BinaryIO) -> None:
        self.path = path
        self.raw = raw
        self.gzip = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        self.size = os.fstat(raw.fileno()).st_size
        self.f: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if self.gzip else raw

    def tell(self) -> int:
        return self.f.tell()

    def read(self, n: int) -> bytes:
        """Up to n bytes (fewer only at the end of the stream)."""
        try:
            if n <= _CHUNK:
                return self.f.read(n)
            parts = []
            left = n
            while left > 0:
                part = self.f.read(min(left, _CHUNK))
                if not part:
                    break
                parts.append(part)
                left -= len(part)
            return b"".join(parts)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(
                f"{self.path}: the gzip stream is corrupt or truncated ({exc})"
            ) from None
        except OSError as exc:
            raise DataError(f"{self.path}: read failed ({exc.strerror or exc})") from None

    def max_payload(self, offset_after_header: int) -> int:
        """The largest payload length that can be genuine at this point of the stream."""
        if self.gzip:
            return MAX_GZIP_RECORD_BYTES
        return max(0, self.size - offset_after_header - 4)


def _read_header(stream: _Stream, index: int) -> int | None:
    """Read and check one record header; return the payload length, or None at a clean end."""
    header = stream.read(12)
    if not header:
        return None
    if len(header) < 12:
        raise DataError(
            f"{stream.path}: record {index} is truncated: its 12-byte header has only "
            f"{len(header)} bytes"
        )
    length = int.from_bytes(header[:8], "little")
    if masked_crc32c(header[:8]) != int.from_bytes(header[8:], "little"):
        raise DataError(
            f"{stream.path}: record {index} has a length field that fails its CRC32C check "
            "(corrupt file, or not a TFRecord file)"
        )
    limit = stream.max_payload(stream.tell())
    if length > limit:
        if stream.gzip:
            raise DataError(
                f"{stream.path}: record {index} declares a payload of {length} bytes, more than "
                f"the {limit} byte limit (corrupt length field)"
            )
        raise DataError(
            f"{stream.path}: record {index} declares a payload of {length} bytes but only "
            f"{limit} payload bytes can follow (truncated file or corrupt length field)"
        )
    return length


def _read_payload(stream: _Stream, index: int, length: int, verify_crc: bool) -> bytes:
    payload = stream.read(length)
    if len(payload) < length:
        raise DataError(
            f"{stream.path}: record {index} is truncated: its payload has {len(payload)} of "
            f"{length} bytes"
        )
    footer = stream.read(4)
    if len(footer) < 4:
        raise DataError(f"{stream.path}: record {index} is truncated: its payload CRC is missing")
    if verify_crc and masked_crc32c(payload) != int.from_bytes(footer, "little"):
        raise DataError(
            f"{stream.path}: record {index} fails its payload CRC32C check (corrupt data)"
        )
    return payload


def iter_records(
    path: str | os.PathLike[str],
    *,
    start: int = 0,
    stop: int | None = None,
    verify_crc: bool = True,
) -> Iterator[bytes]:
    """Yield the payloads (serialized protos) of records `start:stop` of a TFRecord file.

    Plain and GZIP files are both read as a stream. Records before `start` are still read
    (gzip cannot seek) and CRC-checked but not returned; reading stops after `stop`.
    """
    path = Path(path)
    with _open(path) as raw:
        stream = _Stream(path, raw)
        index = 0
        while stop is None or index < stop:
            length = _read_header(stream, index)
            if length is None:
                return
            payload = _read_payload(stream, index, length, verify_crc)
            if index >= start:
                yield payload
            index += 1


def index_records(path: str | os.PathLike[str]) -> np.ndarray:
    """Offsets of every record of an uncompressed TFRecord file, for random access.

    Returns int64 [N, 2]: (payload offset in the file, payload length). Only the 12-byte headers
    are read (their CRCs checked); payload CRCs are checked later by `read_record_at`.
    """
    path = Path(path)
    rows: list[tuple[int, int]] = []
    with _open(path) as raw:
        stream = _Stream(path, raw)
        if stream.gzip:
            raise DataError(
                f"{path}: is gzip-compressed, so its records cannot be indexed for random access"
            )
        index = 0
        while True:
            length = _read_header(stream, index)
            if length is None:
                break
            offset = raw.tell()
            rows.append((offset, length))
            raw.seek(offset + length + 4)  # the bound check guarantees these bytes exist
            index += 1
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def read_record_at(
    f: BinaryIO,
    offset: int,
    length: int,
    *,
    path: str | os.PathLike[str] = "<file>",
    index: int | str = "?",
    verify_crc: bool = True,
) -> bytes:
    """Read the payload at `offset` (from `index_records`) of an open plain TFRecord file."""
    try:
        f.seek(offset)
        payload = f.read(length)
        footer = f.read(4)
    except OSError as exc:
        raise DataError(f"{path}: read of record {index} failed ({exc.strerror or exc})") from None
    if len(payload) < length or len(footer) < 4:
        raise DataError(f"{path}: record {index} is truncated (the file changed after indexing?)")
    if verify_crc and masked_crc32c(payload) != int.from_bytes(footer, "little"):
        raise DataError(f"{path}: record {index} fails its payload CRC32C check (corrupt data)")
    return payload


def _frame(payload: bytes) -> bytes:
    head = len(payload).to_bytes(8, "little")
    return b"".join(
        (
            head,
            masked_crc32c(head).to_bytes(4, "little"),
            payload,
            masked_crc32c(payload).to_bytes(4, "little"),
        )
    )


def write_tfrecord(
    path: str | os.PathLike[str],
    examples: Iterable[bytes | Mapping[str, Any]],
    gzip: bool = False,
) -> int:
    """Write records (serialized bytes, or feature dicts for `encode_example`) to a TFRecord file.

    With `gzip=True` the whole stream is one gzip member (mtime 0), as TensorFlow's
    `TFRecordWriter(path, "GZIP")` writes it. The file appears atomically (see
    `slotlab.io.atomic_write`). Returns the number of records written.
    """
    count = 0

    def write(raw: BinaryIO) -> None:
        nonlocal count
        out = _gzip_writer(raw) if gzip else raw
        for example in examples:
            payload = example if isinstance(example, bytes) else encode_example(example)
            out.write(_frame(payload))
            count += 1
        if out is not raw:
            out.close()

    atomic_write(path, write)
    return count


def _gzip_writer(raw: BinaryIO) -> gzip.GzipFile:
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0)

