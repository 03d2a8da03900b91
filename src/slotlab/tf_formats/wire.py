"""The protobuf wire format: a minimal, bounds-checked reader and the two encoders slotlab needs.

Enough to read and write the few TF messages slotlab handles (tensor-bundle entries,
tf.train.Example) without the protobuf package. Every malformed input raises `WireError`, never
IndexError or a huge allocation: lengths are checked against the bytes that are actually there.
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
MASK64 = (1 << 64) - 1


class WireError(ValueError):
    """Malformed protobuf bytes."""


def read_varint(buf: bytes | memoryview, pos: int, end: int | None = None) -> tuple[int, int]:
    """Decode a base-128 varint at `pos`; returns (value, new position)."""
    end = len(buf) if end is None else end
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError("a varint runs past the end of its message")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("a varint is longer than 10 bytes")


def iter_field_ranges(
    buf: bytes | memoryview, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, int, int, int]]:
    """Yield (field number, wire type, a, b) for each field of the message in [start, end).

    For a varint field `a` is its value (masked to 64 bits, as protobuf does) and `b` the position
    after it; for every other wire type [a, b) is the byte range of the value. Groups (wire types
    3/4) are not supported (TF does not use them).
    """
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise WireError("a field has number 0")
        if wire_type == VARINT:
            value, pos = read_varint(buf, pos, end)
            yield field, VARINT, value & MASK64, pos
            continue
        if wire_type == LENGTH_DELIMITED:
            size, pos = read_varint(buf, pos, end)
            if size > end - pos:
                raise WireError(f"a field of {size} bytes runs past the end of its message")
        elif wire_type in (FIXED64, FIXED32):
            size = 8 if wire_type == FIXED64 else 4
            if size > end - pos:
                raise WireError("a fixed-size field runs past the end of its message")
        elif wire_type in (3, 4):
            raise WireError("it uses the deprecated group encoding")
        else:
            raise WireError(f"invalid wire type {wire_type}")
        yield field, wire_type, pos, pos + size
        pos += size


def iter_fields(
    buf: bytes | memoryview, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield (field number, wire type, value) for each field of one message.

    The value is an int for varint and fixed-size fields and a zero-copy slice of `buf` for
    length-delimited fields.
    """
    buf = buf if isinstance(buf, memoryview) else memoryview(buf)
    for field, wire_type, a, b in iter_field_ranges(buf, start, end):
        if wire_type == VARINT:
            yield field, wire_type, a
        elif wire_type == LENGTH_DELIMITED:
            yield field, wire_type, buf[a:b]
        else:
            yield field, wire_type, int.from_bytes(buf[a:b], "little")


def encode_varint(value: int) -> bytes:
    """Encode an integer as a base-128 varint (negative values as 64-bit two's complement)."""
    value &= MASK64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(field: int, body: bytes) -> bytes:
    """One length-delimited field (wire type 2): key, length, body."""
    return encode_varint((field << 3) | LENGTH_DELIMITED) + encode_varint(len(body)) + body
