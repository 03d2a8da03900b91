"""A minimal, bounds-checked reader of the protobuf wire format.

Enough to read the few TF messages slotlab needs (tensor-bundle entries, tf.train.Example)
without the protobuf package. Every malformed input raises `WireError`, never IndexError or a
huge allocation: lengths are checked against the bytes that are actually there.
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """Malformed protobuf bytes."""


def read_varint(buf: bytes | memoryview, pos: int, end: int | None = None) -> tuple[int, int]:
    """Decode a base-128 varint at `pos`; returns (value, new position)."""
    end = len(buf) if end is None else end
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def iter_fields(
    buf: bytes | memoryview, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, int, int | bytes | memoryview]]:
    """Yield (field number, wire type, value) for each field of one message.

    The value is an int for varint/fixed fields and a zero-copy slice of `buf` for
    length-delimited fields. Groups (wire types 3/4) are not supported (TF does not use them).
    """
    buf = memoryview(buf) if not isinstance(buf, memoryview) else buf
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise WireError("field number 0")
        if wire_type == VARINT:
            value, pos = read_varint(buf, pos, end)
        elif wire_type == FIXED64:
            if pos + 8 > end:
                raise WireError("truncated fixed64")
            value = int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire_type == FIXED32:
            if pos + 4 > end:
                raise WireError("truncated fixed32")
            value = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        elif wire_type == LENGTH_DELIMITED:
            length, pos = read_varint(buf, pos, end)
            if length > end - pos:
                raise WireError(f"length {length} runs past the end of the message")
            value = buf[pos : pos + length]
            pos += length
        else:
            raise WireError(f"unsupported wire type {wire_type}")
        yield field, wire_type, value
