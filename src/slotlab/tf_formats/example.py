"""`tf.train.Example` parsing and encoding, without TensorFlow or the protobuf package.

The messages, read with the wire-format reader of `slotlab.tf_formats.wire`::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }      # entries: key = 1, value = 2
    Feature  { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
                       Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed]; }    # packed or unpacked accepted
    Int64List { repeated int64 value = 1 [packed]; }    # plain varint, two's complement

`parse_example` returns `{name: BytesList | float32 ndarray [n] | int64 ndarray [n]}`. A
`BytesList` is a read-only sequence of `bytes`; lists of one-byte strings (how the DeepMind
multi-object datasets store every pixel) are parsed with vectorised numpy code and kept as one
uint8 array (`BytesList.to_uint8()`), so a record with a million such strings parses in a few
milliseconds.

Malformed input raises `slotlab.errors.DataError` with one sentence naming the `where` label
given by the caller and what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

from slotlab.errors import DataError
from slotlab.tf_formats.wire import WireError, encode_varint, iter_field_ranges, length_delimited

__all__ = ["BytesList", "FeatureValue", "encode_example", "parse_example"]


# --------------------------------------------------------------------------------------------
# tf.train.Example values
# --------------------------------------------------------------------------------------------


class BytesList(Sequence[bytes]):
    """The strings of a `bytes_list` feature: a read-only sequence of `bytes`.

    Either a plain list of strings, or (for lists where every string is one byte long) one uint8
    array [n] holding those bytes, which `to_uint8()` returns without any per-item work.
    """

    __slots__ = ("_items", "_one_byte")

    def __init__(self, items: Iterable[bytes | bytearray | memoryview] = ()) -> None:
        self._items: list[bytes] | None = [bytes(x) for x in items]
        self._one_byte: np.ndarray | None = None

    @classmethod
    def from_uint8(cls, values: np.ndarray | Sequence[int]) -> BytesList:
        """One one-byte string per value (values C-order flattened, uint8 [n] kept)."""
        arr = np.asarray(values)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError("from_uint8 needs values in 0..255")
        out = cls()
        out._items = None
        out._one_byte = np.ascontiguousarray(arr, dtype=np.uint8).reshape(-1)
        return out

    def __len__(self) -> int:
        return len(self._one_byte) if self._one_byte is not None else len(self._items or ())

    @overload
    def __getitem__(self, i: int) -> bytes: ...

    @overload
    def __getitem__(self, i: slice) -> BytesList: ...

    def __getitem__(self, i: int | slice) -> bytes | BytesList:
        if self._one_byte is not None:
            if isinstance(i, slice):
                return BytesList.from_uint8(self._one_byte[i])
            return bytes((int(self._one_byte[i]),))
        assert self._items is not None
        if isinstance(i, slice):
            return BytesList(self._items[i])
        return self._items[i]

    def to_uint8(self) -> np.ndarray:
        """uint8 [n] of the strings' bytes; ValueError unless every string is one byte long."""
        if self._one_byte is not None:
            return self._one_byte
        assert self._items is not None
        if any(len(x) != 1 for x in self._items):
            raise ValueError("not every string of this bytes_list is exactly one byte long")
        return np.frombuffer(b"".join(self._items), dtype=np.uint8).copy()

    def tolist(self) -> list[bytes]:
        return list(self)

    def __eq__(self, other: object) -> bool:
        if (
            isinstance(other, BytesList)
            and self._one_byte is not None
            and other._one_byte is not None
        ):
            return bool(np.array_equal(self._one_byte, other._one_byte))
        if isinstance(other, (BytesList, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self._one_byte is not None:
            return f"BytesList.from_uint8({self._one_byte!r})"
        return f"BytesList({self._items!r})"


FeatureValue = BytesList | np.ndarray


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


class _Parser:
    """Wire-format reader over one payload; `where` labels error messages."""

    def __init__(self, buf: bytes, where: str) -> None:
        self.buf = buf
        self.where = where

    def fail(self, what: str) -> DataError:
        return DataError(f"{self.where}: malformed tf.train.Example: {what}")

    def fields(self, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """Yield (field number, wire type, a, b) for each field in [pos, end): for wire type 0
        a is the varint value, otherwise [a, b) is the value's byte range."""
        try:
            yield from iter_field_ranges(self.buf, pos, end)
        except WireError as exc:
            raise self.fail(str(exc)) from None

    def example(self) -> dict[str, FeatureValue]:
        features: dict[str, FeatureValue] = {}
        for field, wire, a, b in self.fields(0, len(self.buf)):
            if field == 1:
                self.expect(wire, 2, "Example.features")
                self.features(a, b, features)
        return features

    def expect(self, wire: int, want: int, name: str) -> None:
        if wire != want:
            raise self.fail(f"{name} has wire type {wire}, expected {want}")

    def features(self, pos: int, end: int, out: dict[str, FeatureValue]) -> None:
        for field, wire, a, b in self.fields(pos, end):
            if field != 1:
                continue
            self.expect(wire, 2, "a Features map entry")
            key = ""
            value: FeatureValue = BytesList()
            for f2, w2, a2, b2 in self.fields(a, b):
                if f2 == 1:
                    self.expect(w2, 2, "a feature name")
                    try:
                        key = self.buf[a2:b2].decode("utf-8")
                    except UnicodeDecodeError:
                        raise self.fail("a feature name is not valid UTF-8") from None
                elif f2 == 2:
                    self.expect(w2, 2, "a Feature")
                    value = self.feature(a2, b2, key)
            out[key] = value  # protobuf map semantics: the last entry of a key wins

    def feature(self, pos: int, end: int, key: str) -> FeatureValue:
        value: FeatureValue = BytesList()  # a Feature with no list set reads as empty
        for field, wire, a, b in self.fields(pos, end):
            if field in (1, 2, 3):
                self.expect(wire, 2, f"feature {key!r}")
                if field == 1:
                    value = self.bytes_list(a, b, key)
                elif field == 2:
                    value = self.float_list(a, b, key)
                else:
                    value = self.int64_list(a, b, key)
        return value

    def bytes_list(self, pos: int, end: int, key: str) -> BytesList:
        n = end - pos
        if n >= 3 and n % 3 == 0:
            # Fast path: every element is tag 0x0a, length 0x01, one byte.
            rows = np.frombuffer(self.buf, dtype=np.uint8, count=n, offset=pos).reshape(-1, 3)
            if (rows[:, 0] == 0x0A).all() and (rows[:, 1] == 0x01).all():
                return BytesList.from_uint8(rows[:, 2].copy())
        items: list[bytes] = []
        for field, wire, a, b in self.fields(pos, end):
            if field == 1:
                self.expect(wire, 2, f"a string of bytes_list feature {key!r}")
                items.append(self.buf[a:b])
        return BytesList(items)

    def float_list(self, pos: int, end: int, key: str) -> np.ndarray:
        n = end - pos
        if n >= 5 and n % 5 == 0:
            # Fast path for the unpacked form: tag 0x0d followed by 4 bytes, repeated.
            rows = np.frombuffer(self.buf, dtype=np.uint8, count=n, offset=pos).reshape(-1, 5)
            if (rows[:, 0] == 0x0D).all():
                return np.ascontiguousarray(rows[:, 1:]).view("<f4").reshape(-1).astype(np.float32)
        parts: list[np.ndarray] = []
        for field, wire, a, b in self.fields(pos, end):
            if field != 1:
                continue
            if wire == 2:
                if (b - a) % 4:
                    raise self.fail(f"packed float_list of feature {key!r} is not a multiple of 4")
                parts.append(np.frombuffer(self.buf, dtype="<f4", count=(b - a) // 4, offset=a))
            elif wire == 5:
                parts.append(np.frombuffer(self.buf, dtype="<f4", count=1, offset=a))
            else:
                raise self.fail(f"float_list of feature {key!r} has wire type {wire}")
        if not parts:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(parts).astype(np.float32)

    def int64_list(self, pos: int, end: int, key: str) -> np.ndarray:
        parts: list[np.ndarray] = []
        singles: list[int] = []
        for field, wire, a, b in self.fields(pos, end):
            if field != 1:
                continue
            if wire == 2:
                if singles:
                    parts.append(np.asarray(singles, dtype=np.uint64))
                    singles = []
                parts.append(self.packed_varints(a, b, key))
            elif wire == 0:
                singles.append(a)
            else:
                raise self.fail(f"int64_list of feature {key!r} has wire type {wire}")
        if singles:
            parts.append(np.asarray(singles, dtype=np.uint64))
        if not parts:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(parts).astype(np.uint64).view(np.int64)

    def packed_varints(self, pos: int, end: int, key: str) -> np.ndarray:
        """Vectorised decoding of back-to-back varints -> uint64 [n]."""
        b = np.frombuffer(self.buf, dtype=np.uint8, count=end - pos, offset=pos)
        if b.size == 0:
            return np.zeros(0, dtype=np.uint64)
        last = np.flatnonzero(b < 0x80)
        if last.size == 0 or last[-1] != b.size - 1:
            raise self.fail(f"packed int64_list of feature {key!r} ends inside a varint")
        first = np.concatenate(([0], last[:-1] + 1))
        lengths = last - first + 1
        if lengths.max() > 10:
            raise self.fail(f"packed int64_list of feature {key!r} has a varint over 10 bytes")
        shift = (np.arange(b.size) - np.repeat(first, lengths)) * 7
        parts = (b & 0x7F).astype(np.uint64) << shift.astype(np.uint64)
        return np.add.reduceat(parts, first)


def parse_example(payload: bytes, where: str = "tf.train.Example") -> dict[str, FeatureValue]:
    """Parse a serialized `tf.train.Example`.

    Returns `{name: value}` where value is a `BytesList` (bytes_list), float32 ndarray [n]
    (float_list, packed or unpacked) or int64 ndarray [n] (int64_list, packed or unpacked).
    Unknown fields are skipped; malformed input raises DataError labelled with `where`.
    """
    if not isinstance(payload, bytes):
        payload = bytes(payload)
    return _Parser(payload, where).example()


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _bytes_body(values: BytesList | Sequence[bytes]) -> bytes:
    if isinstance(values, BytesList) and values._one_byte is not None:
        rows = np.empty((len(values._one_byte), 3), dtype=np.uint8)
        rows[:, 0] = 0x0A
        rows[:, 1] = 0x01
        rows[:, 2] = values._one_byte
        return rows.tobytes()
    return b"".join(length_delimited(1, bytes(v)) for v in values)


def _float_body(values: np.ndarray, packed: bool) -> bytes:
    data = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    if data.size == 0:
        return b""
    if packed:
        return length_delimited(1, data.tobytes())
    rows = np.empty((data.size, 5), dtype=np.uint8)
    rows[:, 0] = 0x0D
    rows[:, 1:] = data.view(np.uint8).reshape(-1, 4)
    return rows.tobytes()


def _int64_body(values: np.ndarray, packed: bool) -> bytes:
    ints = [int(v) for v in np.asarray(values).reshape(-1)]
    if not ints:
        return b""
    if packed:
        return length_delimited(1, b"".join(encode_varint(v) for v in ints))
    return b"".join(b"\x08" + encode_varint(v) for v in ints)


def _encode_feature(key: str, value: Any, packed: bool) -> bytes:
    if isinstance(value, BytesList):
        return length_delimited(1, _bytes_body(value))
    if isinstance(value, (bytes, bytearray, str)):
        value = [value]
    elif isinstance(value, (bool, int, float, np.generic)):
        value = np.asarray([value])
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            return length_delimited(2, _float_body(value, packed))
        if value.dtype.kind in "iub":
            return length_delimited(3, _int64_body(value, packed))
        if value.dtype.kind in "USO":
            value = value.reshape(-1).tolist()
        else:
            raise ValueError(f"feature {key!r}: cannot encode an array of dtype {value.dtype}")
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(
                f"feature {key!r}: an empty list is ambiguous; pass BytesList(), "
                "np.zeros(0, np.float32) or np.zeros(0, np.int64)"
            )
        if all(isinstance(v, (bytes, bytearray, str)) for v in value):
            items = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in value]
            return length_delimited(1, _bytes_body(items))
        arr = np.asarray(value)
        if arr.dtype.kind in "fiub":
            return _encode_feature(key, arr, packed)
    raise ValueError(f"feature {key!r}: cannot encode a value of type {type(value).__name__}")


def encode_example(features: Mapping[str, Any], *, packed: bool = True) -> bytes:
    """Serialize a `tf.train.Example` from `{name: value}`.

    value: `BytesList`, bytes/str or a list of them (bytes_list); a float ndarray or list of
    floats (float_list); an integer/bool ndarray or list of ints (int64_list). Arrays of any
    shape are flattened in C order. `packed=False` writes numeric lists one field per value.
    """
    entries = []
    for key, value in features.items():
        entry = length_delimited(1, key.encode("utf-8")) + length_delimited(
            2, _encode_feature(key, value, packed)
        )
        entries.append(length_delimited(1, entry))
    return length_delimited(1, b"".join(entries))
