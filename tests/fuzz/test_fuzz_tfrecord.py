"""Fuzzing the TFRecord / tf.train.Example readers and the two dataset readers built on them.

Every reader must either succeed or raise `DataError`; any other exception is a failure (the
test does not catch it). Inputs: random bytes, mutations of the genuine fixture files in
../shared/reference/formats (at the gzip, framing and payload level: payload mutations are
re-framed with valid CRCs so that they reach the protobuf parser), grammar-built Examples with
wrong wire types and forged lengths, and forged 64-bit record lengths with valid header CRCs.
"""

from __future__ import annotations

import functools
import gzip
import json
import shutil
import tracemalloc
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from slotlab.data.multi_object import read_multi_object_tfrecord
from slotlab.data.tfds_clevr import TFDSClevrDataset, read_tfds_clevr
from slotlab.errors import DataError
from slotlab.tf_formats.example import BytesList, encode_example, parse_example
from slotlab.tf_formats.tfrecord import (
    MAX_GZIP_RECORD_BYTES,
    index_records,
    iter_records,
    read_record_at,
)
from tests.fuzz import (
    EXAMPLES,
    counted,
    forged_ints,
    fuzz_settings,
    mutate,
    outcome,
    reference,
    report_fuzz_counts,  # noqa: F401  (autouse: prints the example counts)
    varint,
)

pytestmark = pytest.mark.timeout(300)  # a hard stop for a real hang (deadlines only measure)

# Small files first: hypothesis shrinks towards the first choice.
MULTI_OBJECT = (
    "tetrominoes",
    "multi_dsprites_binarized",
    "multi_dsprites_colored_on_colored",
    "multi_dsprites_colored_on_grayscale",
    "objects_room_train",
    "clevr_with_masks",
)


# --------------------------------------------------------------------------------------------
# Test-side framing (independent of the code under test)
# --------------------------------------------------------------------------------------------


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def header(length: int) -> bytes:
    head = length.to_bytes(8, "little")
    return head + masked_crc(head).to_bytes(4, "little")


def frame(payloads: list[bytes]) -> bytes:
    return b"".join(header(len(p)) + p + masked_crc(p).to_bytes(4, "little") for p in payloads)


def split_frames(stream: bytes) -> list[bytes]:
    """Payloads of a trusted (genuine) TFRecord stream."""
    out, pos = [], 0
    while pos < len(stream):
        length = int.from_bytes(stream[pos : pos + 8], "little")
        out.append(stream[pos + 12 : pos + 12 + length])
        pos += 16 + length
    return out


@functools.cache
def genuine(name: str) -> tuple[bytes, bytes, tuple[bytes, ...]]:
    """(gzip file bytes, plain TFRecord stream, payloads) of a multi_object fixture."""
    raw = reference("formats", "multi_object", f"{name}.tfrecords").read_bytes()
    stream = gzip.decompress(raw)
    return raw, stream, tuple(split_frames(stream))


def read_all(path: Path, verify_crc: bool = True) -> None:
    """Every public reading path over one TFRecord file; returns normally or raises DataError."""
    for payload in iter_records(path, verify_crc=verify_crc):
        check_parsed(parse_example(payload, "fuzz"))
    try:
        rows = index_records(path)
    except DataError:
        return
    assert rows.dtype == np.int64 and rows.ndim == 2 and rows.shape[1] == 2
    with open(path, "rb") as f:
        for i, (offset, length) in enumerate(rows):
            payload = read_record_at(f, int(offset), int(length), path=path, index=i)
            check_parsed(parse_example(payload, "fuzz"))


def check_parsed(features: dict) -> None:
    for key, value in features.items():
        assert isinstance(key, str)
        assert isinstance(value, BytesList) or (
            isinstance(value, np.ndarray) and value.dtype in (np.float32, np.int64)
        ), (key, type(value))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_tfrecord")


# --------------------------------------------------------------------------------------------
# Framing: iter_records / index_records / read_record_at
# --------------------------------------------------------------------------------------------

tick_random = counted("test_records_random_bytes")


@fuzz_settings(max_examples=300)
@given(
    raw=st.binary(max_size=300),
    wrap=st.sampled_from(["plain", "gzip", "gzip-magic", "framed"]),
    verify=st.booleans(),
)
@example(raw=b"", wrap="plain", verify=True)
@example(raw=b"\x1f\x8b", wrap="plain", verify=True)
def test_records_random_bytes(workdir: Path, raw: bytes, wrap: str, verify: bool) -> None:
    tick_random()
    data = {
        "plain": raw,
        "gzip": gzip.compress(raw, compresslevel=1),
        "gzip-magic": b"\x1f\x8b" + raw,
        "framed": frame([raw]),  # valid framing around a random payload
    }[wrap]
    path = workdir / "random.tfrecord"
    path.write_bytes(data)
    outcome(DataError, read_all, path, verify)


tick_mutated = counted("test_records_mutated_genuine")


@fuzz_settings(max_examples=250)
@given(
    name=st.sampled_from(MULTI_OBJECT[:5]),
    layer=st.sampled_from(["gzip-file", "stream", "stream-regzipped"]),
    verify=st.booleans(),
    data=st.data(),
)
def test_records_mutated_genuine(
    workdir: Path, name: str, layer: str, verify: bool, data: st.DataObject
) -> None:
    tick_mutated()
    raw, stream, _ = genuine(name)
    if layer == "gzip-file":
        blob = data.draw(mutate(raw))
    else:
        blob = data.draw(mutate(stream))
        if layer == "stream-regzipped":
            blob = gzip.compress(blob, compresslevel=1)
    path = workdir / "mutated.tfrecord"
    path.write_bytes(blob)
    outcome(DataError, read_all, path, verify)


tick_forged = counted("test_forged_record_length")


@fuzz_settings(max_examples=60)
@given(
    length=forged_ints(MAX_GZIP_RECORD_BYTES, MAX_GZIP_RECORD_BYTES + 1),
    record=st.integers(0, 2),
    compressed=st.booleans(),
    tail=st.binary(max_size=32),
)
@example(length=2**60, record=0, compressed=False, tail=b"")
@example(length=2**60, record=0, compressed=True, tail=b"")
@example(length=2**64 - 1, record=1, compressed=True, tail=b"")
def test_forged_record_length(
    workdir: Path, length: int, record: int, compressed: bool, tail: bytes
) -> None:
    """A header whose CRC is valid but whose length is forged: rejected without allocating it.

    The payload bytes really present are far fewer than the forged length, so the reader must
    fail with DataError (or read a genuinely short record) and keep its allocations small: a
    plain file is bounded by its size; a gzip stream is read in bounded chunks.
    """
    tick_forged()
    _, stream, payloads = genuine("tetrominoes")
    record = min(record, len(payloads) - 1)
    forged = frame(list(payloads[:record])) + header(length) + payloads[record][:16] + tail
    blob = gzip.compress(forged, compresslevel=1) if compressed else forged
    path = workdir / "forged.tfrecord"
    path.write_bytes(blob)
    tracemalloc.start()
    try:
        with pytest.raises(DataError):
            for payload in iter_records(path):
                parse_example(payload)
        if not compressed:
            with pytest.raises(DataError):
                index_records(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # gzip payloads are read in chunks of at most 64 MiB; a plain file never past its size.
    budget = (80 << 20) if compressed else (4 << 20)
    assert peak < budget, f"peak {peak} bytes for a forged length of {length}"


# --------------------------------------------------------------------------------------------
# tf.train.Example parsing
# --------------------------------------------------------------------------------------------


def field(number: int, wire: int, body: bytes | int) -> bytes:
    """One protobuf field; `body` is an int for wire type 0, raw bytes otherwise."""
    key = varint((number << 3) | wire)
    if wire == 0:
        return key + varint(body if isinstance(body, int) else len(body))
    if wire == 2:
        blob = body if isinstance(body, bytes) else varint(body)
        return key + varint(len(blob)) + blob
    if wire in (1, 5):
        size = 8 if wire == 1 else 4
        if isinstance(body, int):
            body = (body % (1 << 8 * size)).to_bytes(size, "little")
        return key + body[:size].ljust(size, b"\0")
    return key + (body if isinstance(body, bytes) else b"")  # groups / invalid wire types


WIRES = st.sampled_from([2, 2, 2, 2, 0, 1, 5, 3, 4, 6, 7])


@st.composite
def list_body(draw: st.DrawFn, kind: str) -> bytes:
    """The body of a BytesList / FloatList / Int64List, often malformed."""
    if kind == "bytes":
        if draw(st.booleans()):  # one-byte strings: the vectorised fast path
            values = draw(st.binary(max_size=20))
            body = b"".join(b"\x0a\x01" + bytes([v]) for v in values)
            if body and draw(st.booleans()):  # break one row of the fast path
                pos = draw(st.integers(0, len(body) - 1))
                body = body[:pos] + bytes([draw(st.integers(0, 255))]) + body[pos + 1 :]
            return body
        items = draw(st.lists(st.binary(max_size=6), max_size=4))
        return b"".join(field(1, draw(WIRES), item) for item in items)
    if kind == "float":
        if draw(st.booleans()):  # packed; length maybe not a multiple of 4
            return field(1, draw(WIRES), draw(st.binary(max_size=22)))
        return b"".join(
            field(draw(st.sampled_from([1, 1, 2])), draw(st.sampled_from([5, 5, 1, 0])), v)
            for v in draw(st.lists(st.binary(min_size=4, max_size=4), max_size=5))
        )
    if draw(st.booleans()):  # packed int64: maybe ending inside a varint, maybe 11-byte ones
        return field(1, 2, draw(st.binary(max_size=24)))
    return b"".join(
        field(1, draw(st.sampled_from([0, 0, 2, 5])), draw(forged_ints()))
        for _ in range(draw(st.integers(0, 4)))
    )


@st.composite
def example_messages(draw: st.DrawFn) -> bytes:
    """A tf.train.Example built from the grammar, with wrong wire types and odd lists."""
    entries = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["bytes", "float", "int64", "junk"]))
        number = {"bytes": 1, "float": 2, "int64": 3}.get(kind) or draw(st.integers(1, 9))
        body = draw(st.binary(max_size=16)) if kind == "junk" else draw(list_body(kind))
        feature = field(number, draw(WIRES), body)
        name = draw(st.one_of(st.sampled_from([b"image", b"mask", b""]), st.binary(max_size=6)))
        entry = field(1, draw(WIRES), name) + field(2, draw(WIRES), feature)
        entries.append(field(draw(st.sampled_from([1, 1, 1, 2])), draw(WIRES), entry))
    message = field(1, draw(WIRES), b"".join(entries))
    if draw(st.booleans()):
        message += field(draw(st.integers(1, 2**29 - 1)), draw(WIRES), b"\x01\x02\x03")
    return message


tick_parse_random = counted("test_parse_example_random_bytes")


@fuzz_settings(max_examples=500)
@given(payload=st.binary(max_size=200))
@example(payload=b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")  # 10-byte length varint
@example(payload=b"\x0a" + b"\x80" * 11)  # an 11-byte varint
def test_parse_example_random_bytes(payload: bytes) -> None:
    tick_parse_random()
    check_parsed(outcome(DataError, parse_example, payload) or {})


tick_parse_grammar = counted("test_parse_example_grammar")


@fuzz_settings(max_examples=500)
@given(message=example_messages(), data=st.data())
def test_parse_example_grammar(message: bytes, data: st.DataObject) -> None:
    tick_parse_grammar()
    if data.draw(st.integers(0, 3)) == 0:
        message = data.draw(mutate(message, max_ops=2))
    check_parsed(outcome(DataError, parse_example, message) or {})


tick_parse_genuine = counted("test_parse_example_mutated_genuine")


@fuzz_settings(max_examples=300)
@given(name=st.sampled_from(MULTI_OBJECT[:5]), record=st.integers(0, 2), data=st.data())
def test_parse_example_mutated_genuine(name: str, record: int, data: st.DataObject) -> None:
    tick_parse_genuine()
    payloads = genuine(name)[2]
    payload = data.draw(mutate(payloads[record % len(payloads)]))
    check_parsed(outcome(DataError, parse_example, payload) or {})


# --------------------------------------------------------------------------------------------
# Dataset readers on mutated genuine files
# --------------------------------------------------------------------------------------------


def _resized(value, n: int):
    if isinstance(value, BytesList):
        items = value.tolist()
        return BytesList((items * (n // max(len(items), 1) + 1))[:n] if items else [b"x"] * n)
    reps = n // max(value.size, 1) + 1
    grown = np.tile(value, reps)[:n] if value.size else np.ones(n, value.dtype)
    return grown.astype(value.dtype)


@st.composite
def mutate_features(draw: st.DrawFn, features: dict) -> dict:
    """Feature-level changes that keep the protobuf well formed: a feature dropped, renamed,
    retyped (bytes / float / int64), resized, or given strings that are not one byte long."""
    out = dict(features)
    for _ in range(draw(st.integers(1, 3))):
        if not out:
            break
        key = draw(st.sampled_from(sorted(out)))
        value = out[key]
        op = draw(st.sampled_from(["drop", "rename", "retype", "resize", "strings", "add"]))
        if op == "drop":
            del out[key]
        elif op == "rename":
            out[key + draw(st.sampled_from(["_", "/x", "\u00e9"]))] = out.pop(key)
        elif op == "retype":
            n = len(value)
            kind = draw(st.sampled_from(["bytes", "float", "int64"]))
            if kind == "bytes":
                out[key] = BytesList.from_uint8(np.zeros(n, np.uint8))
            elif kind == "float":
                out[key] = np.zeros(n, np.float32)
            else:
                out[key] = np.zeros(n, np.int64)
        elif op == "resize":
            n = len(value)
            size = draw(st.sampled_from([0, 1, max(n - 1, 0), n + 1, 2 * n, 3 * n + 1]))
            out[key] = _resized(value, size)
        elif op == "strings":
            items = value.tolist() if isinstance(value, BytesList) else [b"\x01"] * len(value)
            if items:
                i = draw(st.integers(0, len(items) - 1))
                items[i] = draw(st.binary(max_size=4))
            out[key] = BytesList(items)
        else:
            out[draw(st.text(max_size=6))] = draw(
                st.sampled_from(
                    [BytesList([b"ab"]), np.zeros(3, np.float32), np.arange(2, dtype=np.int64)]
                )
            )
    return out


def mutated_payload(data: st.DataObject, payload: bytes) -> bytes:
    """A payload changed at the byte level (small records, or a window of a large one) or at
    the feature level (re-encoded, so still a well-formed Example)."""
    if data.draw(st.booleans()):
        return encode_example(data.draw(mutate_features(parse_example(payload))))
    if len(payload) <= 4096:
        return data.draw(mutate(payload))
    start = data.draw(st.integers(0, len(payload) - 1024))
    window = data.draw(mutate(payload[start : start + 1024]))
    return payload[:start] + window + payload[start + 1024 :]


tick_multi = counted("test_read_multi_object_mutated")


@fuzz_settings(max_examples=200)
@given(
    name=st.sampled_from(MULTI_OBJECT),
    layer=st.sampled_from(["payload", "payload", "gzip-file", "stream"]),
    data=st.data(),
)
def test_read_multi_object_mutated(
    workdir: Path, name: str, layer: str, data: st.DataObject
) -> None:
    tick_multi()
    raw, stream, payloads = genuine(name)
    if layer == "payload":  # mutate one Example, re-frame it with valid CRCs, re-gzip
        record = data.draw(st.integers(0, len(payloads) - 1))
        changed = list(payloads)
        changed[record] = mutated_payload(data, changed[record])
        blob = gzip.compress(frame(changed), compresslevel=1)
    elif layer == "gzip-file":
        blob = data.draw(mutate(raw))
    else:
        blob = data.draw(mutate(stream[:4096])) + stream[4096:]
    path = workdir / f"{name}.tfrecords"
    path.write_bytes(blob)
    items = outcome(DataError, lambda: list(read_multi_object_tfrecord(path, name))) or []
    for item in items:
        assert isinstance(item, dict) and "image" in item and "mask" in item


@pytest.fixture(scope="module")
def tfds_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = reference("formats", "tfds_clevr", "clevr", "3.1.0")
    root = tmp_path_factory.mktemp("fuzz_tfds")
    shutil.copytree(source, root / "clevr" / "3.1.0")
    for path in (root / "clevr" / "3.1.0").iterdir():
        path.chmod(0o644)
    return root


TFDS_SHARD = "clevr-validation.tfrecord-00000-of-00001"
tick_tfds = counted("test_read_tfds_clevr_mutated")


@fuzz_settings(max_examples=150)
@given(
    target=st.sampled_from(["payload", "payload", "shard", "info"]),
    task=st.sampled_from(["object_discovery", "set_prediction"]),
    data=st.data(),
)
def test_read_tfds_clevr_mutated(
    tfds_copy: Path, target: str, task: str, data: st.DataObject
) -> None:
    tick_tfds()
    source = reference("formats", "tfds_clevr", "clevr", "3.1.0")
    builder = tfds_copy / "clevr" / "3.1.0"
    shard_bytes = (source / TFDS_SHARD).read_bytes()
    info_text = (source / "dataset_info.json").read_text()
    if target == "payload":
        payloads = split_frames(shard_bytes)
        record = data.draw(st.integers(0, len(payloads) - 1))
        payloads[record] = mutated_payload(data, payloads[record])
        shard_bytes = frame(payloads)
    elif target == "shard":
        shard_bytes = data.draw(mutate(shard_bytes))
    else:
        info_text = data.draw(mutate(info_text.encode())).decode("utf-8", errors="replace")
        if data.draw(st.booleans()):  # a structural change that stays valid JSON
            info = json.loads((source / "dataset_info.json").read_text())
            info["splits"][1]["shardLengths"] = data.draw(
                st.one_of(
                    st.lists(st.integers(-3, 5).map(str), max_size=3),
                    st.just("2"),
                    st.just(None),
                    st.lists(st.text(max_size=3), max_size=2),
                )
            )
            info_text = json.dumps(info)
    (builder / TFDS_SHARD).write_bytes(shard_bytes)
    (builder / "dataset_info.json").write_text(info_text)
    items = outcome(DataError, lambda: list(read_tfds_clevr(tfds_copy, "validation"))) or []
    for item in items:
        assert item["image"].dtype == np.uint8 and item["image"].ndim == 3
    cache = tfds_copy / "cache" / str(EXAMPLES["test_read_tfds_clevr_mutated"])

    def dataset_items() -> None:
        dataset = TFDSClevrDataset(
            tfds_copy, "validation", task=task, cache_dir=cache, progress=False
        )
        for i in range(len(dataset)):
            assert dataset[i]["image"].shape[0] == 3

    outcome(DataError, dataset_items)
