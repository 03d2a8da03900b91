"""Fuzzing the checkpoint readers: TF tensor bundles and slotlab's own training checkpoints.

`TFCheckpoint(prefix)` + `.read(name)` and `load_tf_checkpoint(path, task)` must raise only
`CheckpointError` on mutated copies of ../shared/reference/official_tf/*/ckpt-1.*: raw byte
mutations and truncations, random bytes, and (to get past the block checksums) index tables
rebuilt with valid checksums around forged `BundleEntryProto`s: forged dtypes, shapes, shard
ids, offsets, sizes and CRCs, wrong wire types, renamed / dropped / duplicated entries.
`load_checkpoint(path)` must raise only `CheckpointError` on mutated `torch.save` files.
"""

from __future__ import annotations

import functools
import shutil
import struct
import tracemalloc
from pathlib import Path

import google_crc32c
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from slotlab.errors import CheckpointError
from slotlab.tf_formats.checkpoint import TFCheckpoint
from slotlab.tf_formats.official import load_tf_checkpoint
from slotlab.train.checkpoint import load_checkpoint
from tests.fuzz import (
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

TASKS = ("set_prediction", "object_discovery")  # the smaller checkpoint first
TABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)
DATA_SUFFIX = ".data-00000-of-00001"


# --------------------------------------------------------------------------------------------
# Test-side SSTable reading and writing (independent of the code under test)
# --------------------------------------------------------------------------------------------


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def block_items(block: bytes) -> list[tuple[bytes, bytes]]:
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * restarts
    items, key, pos = [], b"", 0
    while pos < limit:
        shared, pos = uvarint(block, pos)
        unshared, pos = uvarint(block, pos)
        size, pos = uvarint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        items.append((key, block[pos : pos + size]))
        pos += size
    return items


def read_table(data: bytes) -> list[tuple[bytes, bytes]]:
    """(key, value) of every entry of a genuine (trusted) index file."""
    footer, pos, handles = data[-48:], 0, []
    for _ in range(4):
        value, pos = uvarint(footer, pos)
        handles.append(value)
    index_offset, index_size = handles[2], handles[3]
    entries = []
    for _, handle in block_items(data[index_offset : index_offset + index_size]):
        offset, pos = uvarint(handle, 0)
        size, _ = uvarint(handle, pos)
        entries += block_items(data[offset : offset + size])
    return entries


def encode_block(items: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in items)
    return body + struct.pack("<II", 0, 1)  # one restart point at offset 0


def write_table(entries: list[tuple[bytes, bytes]], per_block: int) -> bytes:
    """An index file holding `entries`, with valid block checksums and footer."""
    out = bytearray()

    def put(block: bytes) -> bytes:
        handle = varint(len(out)) + varint(len(block))
        out.extend(block + b"\0" + struct.pack("<I", masked_crc(block + b"\0")))
        return handle

    index = []
    for start in range(0, max(len(entries), 1), per_block):
        chunk = entries[start : start + per_block]
        index.append((chunk[-1][0] if chunk else b"", put(encode_block(chunk))))
    meta = put(encode_block([]))
    handles = meta + put(encode_block(index))
    return bytes(out) + handles.ljust(40, b"\0") + TABLE_MAGIC


# --------------------------------------------------------------------------------------------
# Test-side protobuf fields of BundleEntryProto / BundleHeaderProto
# --------------------------------------------------------------------------------------------


def decode_fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = uvarint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = uvarint(buf, pos)
        elif wire == 2:
            size, pos = uvarint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(buf[pos : pos + size], "little"), pos + size
        fields.append((number, wire, value))
    return fields


def encode_field(number: int, wire: int, value: int | bytes) -> bytes:
    key = varint((number << 3) | wire)
    if wire == 0:
        return key + varint(value if isinstance(value, int) else len(value))
    if wire == 2:
        blob = value if isinstance(value, bytes) else varint(value)
        return key + varint(len(blob)) + blob
    size = 8 if wire == 1 else 4
    if isinstance(value, bytes):
        return key + value[:size].ljust(size, b"\0")
    return key + (value % (1 << (8 * size))).to_bytes(size, "little")


def encode_fields(fields: list[tuple[int, int, int | bytes]]) -> bytes:
    return b"".join(encode_field(*f) for f in fields)


def shape_proto(dims: list[int], unknown_rank: bool, named: bool) -> bytes:
    body = b"".join(
        encode_field(2, 2, encode_field(1, 0, d) + (encode_field(2, 2, b"x") if named else b""))
        for d in dims
    )
    return body + (encode_field(3, 0, 1) if unknown_rank else b"")


# Sizes a forged shape dimension takes: small, huge, and products that wrap around 2**64.
DIMS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 4, 64, 2**31, 2**32, 2**33, 2**62, 2**63, 2**64 - 1, 2**69]),
    st.integers(0, 2**70 - 1),
)

ENTRY_OPS = ("set", "set", "shape", "wire", "drop", "slices", "bytes", "crc")


@st.composite
def mutate_entry(draw: st.DrawFn, value: bytes, shard_size: int) -> bytes:
    """A BundleEntryProto with forged fields (or, for the header entry, a forged header)."""
    fields = decode_fields(value)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(ENTRY_OPS))
        if op == "set":  # dtype / shard_id / offset / size, or num_shards / endianness
            number = draw(st.sampled_from([1, 3, 4, 5, 2]))
            forged = draw(
                st.one_of(forged_ints(shard_size, shard_size - 4), st.sampled_from([7, 19, 23]))
            )
            fields = [f for f in fields if f[0] != number] + [(number, 0, forged)]
        elif op == "shape":
            dims = draw(st.lists(DIMS, max_size=4))
            proto = shape_proto(dims, draw(st.booleans()), draw(st.booleans()))
            fields = [f for f in fields if f[0] != 2] + [(2, 2, proto)]
        elif op == "wire" and fields:  # the same field number with another wire type
            i = draw(st.integers(0, len(fields) - 1))
            wire = draw(st.sampled_from([0, 1, 2, 5]))
            number, _, old = fields[i]
            fields[i] = (number, wire, old if wire != 2 or isinstance(old, bytes) else b"\x01")
        elif op == "drop" and fields:
            del fields[draw(st.integers(0, len(fields) - 1))]
        elif op == "slices":
            fields.append((7, 2, encode_field(1, 0, 0)))
        elif op == "crc":
            fields = [f for f in fields if f[0] != 6]
            if draw(st.booleans()):
                fields.append((6, 5, draw(st.integers(0, 2**32 - 1))))
        elif op == "bytes":
            return draw(mutate(encode_fields(fields), max_ops=2))
    return encode_fields(fields)


@st.composite
def forged_index(draw: st.DrawFn, entries: tuple[tuple[bytes, bytes], ...], shard_size: int):
    """An index file rebuilt with valid checksums around 1..3 forged entries."""
    table = list(entries)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(table) - 1))
        key, value = table[i]
        op = draw(st.sampled_from(["entry", "entry", "entry", "key", "drop", "dup"]))
        if op == "entry":
            table[i] = (key, draw(mutate_entry(value, shard_size)))
        elif op == "key":
            new_key = draw(st.one_of(st.binary(max_size=6), st.just(b"")))
            table[i] = (new_key, value)
        elif op == "drop":
            del table[i]
        else:
            table.insert(i, (key, value))
    per_block = draw(st.sampled_from([len(table) or 1, 1, 7]))
    return write_table(table, per_block)


@functools.cache
def genuine(task: str) -> tuple[bytes, tuple[tuple[bytes, bytes], ...], int]:
    """(index bytes, its (key, value) entries, data shard size) of a reference checkpoint."""
    folder = reference("official_tf", task)
    index = (folder / "ckpt-1.index").read_bytes()
    return index, tuple(read_table(index)), (folder / f"ckpt-1{DATA_SUFFIX}").stat().st_size


@pytest.fixture(scope="module")
def ckpt_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Per task: a directory whose data shard is the genuine one (the index is rewritten)."""
    root = tmp_path_factory.mktemp("fuzz_tf_ckpt")
    dirs = {}
    for task in TASKS:
        source = reference("official_tf", task)
        target = root / task
        target.mkdir()
        shutil.copyfile(source / f"ckpt-1{DATA_SUFFIX}", target / f"ckpt-1{DATA_SUFFIX}")
        dirs[task] = target
    return dirs


def read_every_tensor(prefix: Path) -> int:
    """Open a TF checkpoint and read each of its entries (each may fail on its own)."""
    ckpt = TFCheckpoint(prefix)
    read = 0
    for name in ckpt.names():
        if outcome(CheckpointError, ckpt.read, name) is not None:
            read += 1
    return read


# --------------------------------------------------------------------------------------------
# TFCheckpoint
# --------------------------------------------------------------------------------------------

tick_tf_bytes = counted("test_tf_checkpoint_mutated_bytes")


@fuzz_settings(max_examples=150)
@given(
    task=st.sampled_from(TASKS),
    kind=st.sampled_from(["mutated", "mutated", "random", "random+magic", "truncated"]),
    data=st.data(),
)
def test_tf_checkpoint_mutated_bytes(
    ckpt_dirs: dict[str, Path], task: str, kind: str, data: st.DataObject
) -> None:
    """Raw index bytes: mutated, random, random ending in the table magic, truncated."""
    tick_tf_bytes()
    index = genuine(task)[0]
    if kind == "mutated":
        blob = data.draw(mutate(index))
    elif kind == "random":
        blob = data.draw(st.binary(max_size=200))
    elif kind == "random+magic":
        blob = data.draw(st.binary(max_size=120)) + TABLE_MAGIC
    else:
        blob = index[: data.draw(st.integers(0, len(index) - 1))]
    prefix = ckpt_dirs[task] / "ckpt-1"
    Path(f"{prefix}.index").write_bytes(blob)
    outcome(CheckpointError, read_every_tensor, prefix)


tick_tf_forged = counted("test_tf_checkpoint_forged_entries")


@fuzz_settings(max_examples=400)
@given(task=st.sampled_from(TASKS), data=st.data())
def test_tf_checkpoint_forged_entries(
    ckpt_dirs: dict[str, Path], task: str, data: st.DataObject
) -> None:
    """Valid table checksums around forged entries: the entry fields themselves are checked."""
    tick_tf_forged()
    _, entries, shard_size = genuine(task)
    prefix = ckpt_dirs[task] / "ckpt-1"
    Path(f"{prefix}.index").write_bytes(data.draw(forged_index(entries, shard_size)))
    outcome(CheckpointError, read_every_tensor, prefix)


tick_tf_shard = counted("test_tf_checkpoint_mutated_shard")


@fuzz_settings(max_examples=60)
@given(task=st.sampled_from(TASKS), truncate=st.booleans(), data=st.data())
def test_tf_checkpoint_mutated_shard(
    tmp_path_factory: pytest.TempPathFactory, task: str, truncate: bool, data: st.DataObject
) -> None:
    """The genuine index over a truncated or corrupted data shard: CRC / bounds errors only."""
    tick_tf_shard()
    folder = reference("official_tf", task)
    shard = (folder / f"ckpt-1{DATA_SUFFIX}").read_bytes()
    if truncate:
        shard = shard[: data.draw(st.integers(0, len(shard) - 1))]
    else:
        start = data.draw(st.integers(0, len(shard) - 256))
        shard = shard[:start] + data.draw(mutate(shard[start : start + 256])) + shard[start + 256 :]
    target = tmp_path_factory.getbasetemp() / f"fuzz_shard_{task}"
    target.mkdir(exist_ok=True)
    shutil.copyfile(folder / "ckpt-1.index", target / "ckpt-1.index")
    (target / f"ckpt-1{DATA_SUFFIX}").write_bytes(shard)
    outcome(CheckpointError, read_every_tensor, target / "ckpt-1")


tick_forged_size = counted("test_tf_checkpoint_forged_size_no_allocation")


@fuzz_settings(max_examples=60)
@given(
    size=forged_ints(2**60),
    offset=forged_ints(2**60),
    dims=st.lists(DIMS, min_size=1, max_size=3),
)
@example(size=2**60, offset=0, dims=[2**58])
@example(size=0, offset=0, dims=[2**32, 2**32])
@example(size=0, offset=0, dims=[2**69])
def test_tf_checkpoint_forged_size_no_allocation(
    ckpt_dirs: dict[str, Path], size: int, offset: int, dims: list[int]
) -> None:
    """A float entry claiming a huge size / offset / shape: refused without allocating it."""
    tick_forged_size()
    _, entries, shard_size = genuine("set_prediction")
    entry = (
        encode_field(1, 0, 1)
        + encode_field(2, 2, shape_proto(dims, False, False))
        + encode_field(4, 0, offset)
        + encode_field(5, 0, size)
    )
    table = [entries[0], (b"forged", entry)]
    prefix = ckpt_dirs["set_prediction"] / "ckpt-1"
    Path(f"{prefix}.index").write_bytes(write_table(table, len(table)))
    ckpt = TFCheckpoint(prefix)
    ckpt._shard(0)  # load the genuine 4.6 MB shard outside the measurement
    tracemalloc.start()
    try:
        array = outcome(CheckpointError, ckpt.read, "forged")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if array is not None:  # only a tensor whose bytes are really in the shard may come out
        assert array.nbytes == size <= shard_size
    budget = (1 << 20) + 2 * min(size, shard_size)  # the slice read and its native-order copy
    assert peak < budget, f"peak {peak} bytes for size {size}, offset {offset}, dims {dims}"


def _float_entry(*fields: bytes) -> bytes:
    return encode_field(1, 0, 1) + b"".join(fields)


# Numbers written with the wrong wire type (length-delimited bytes): these reached arithmetic
# as memoryviews (TypeError) before TFCheckpoint checked the field types.
WRONG_WIRE = {
    "dtype": _float_entry(encode_field(1, 2, b"\x01"), encode_field(5, 0, 4)),
    "shard_id": _float_entry(encode_field(3, 2, b"\x01"), encode_field(5, 0, 4)),
    "offset": _float_entry(encode_field(4, 2, b"\x01"), encode_field(5, 0, 4)),
    "size": _float_entry(encode_field(5, 2, b"\x04")),
    "dim": _float_entry(
        encode_field(2, 2, encode_field(2, 2, encode_field(1, 2, b"ab"))), encode_field(5, 0, 4)
    ),
    "num_shards": None,  # the header entry's shard count
}


@pytest.mark.parametrize("what", sorted(WRONG_WIRE))
def test_tf_checkpoint_number_fields_as_bytes(ckpt_dirs: dict[str, Path], what: str) -> None:
    _, entries, _ = genuine("set_prediction")
    entry = WRONG_WIRE[what]
    if entry is None:
        table = [(b"", encode_field(1, 2, b"\x01")), *entries[1:]]
    else:
        table = [entries[0], (b"forged", entry)]
    prefix = ckpt_dirs["set_prediction"] / "ckpt-1"
    Path(f"{prefix}.index").write_bytes(write_table(table, len(table)))
    with pytest.raises(CheckpointError):
        ckpt = TFCheckpoint(prefix)
        ckpt.read("forged")


# --------------------------------------------------------------------------------------------
# load_tf_checkpoint
# --------------------------------------------------------------------------------------------

tick_official = counted("test_load_tf_checkpoint_mutated")


@fuzz_settings(max_examples=80)
@given(
    task=st.sampled_from(TASKS),
    as_task=st.sampled_from(TASKS),
    kind=st.sampled_from(["forged", "forged", "mutated", "state-file"]),
    data=st.data(),
)
def test_load_tf_checkpoint_mutated(
    ckpt_dirs: dict[str, Path], task: str, as_task: str, kind: str, data: st.DataObject
) -> None:
    tick_official()
    index, entries, shard_size = genuine(task)
    folder = ckpt_dirs[task]
    state = folder / "checkpoint"
    state.write_text('model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n')
    if kind == "forged":
        blob = data.draw(forged_index(entries, shard_size))
    elif kind == "mutated":
        blob = data.draw(mutate(index))
    else:
        blob = index
        text = state.read_bytes()
        state.write_bytes(data.draw(mutate(text)))
    (folder / "ckpt-1.index").write_bytes(blob)
    path = folder if data.draw(st.booleans()) else folder / "ckpt-1"
    outcome(CheckpointError, load_tf_checkpoint, path, as_task)


# --------------------------------------------------------------------------------------------
# slotlab training checkpoints (torch.save)
# --------------------------------------------------------------------------------------------


@functools.cache
def training_checkpoints(folder: Path) -> dict[str, bytes]:
    """A small genuine training checkpoint, in torch's zip and legacy formats."""
    torch.manual_seed(0)
    state = {
        "model": {"encoder.weight": torch.randn(4, 3), "encoder.bias": torch.zeros(4)},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-3}]},
        "step": 7,
        "rng": {"torch": torch.get_rng_state()[:64]},
        "config": {"task": "object_discovery", "model": {"num_slots": 7}},
    }
    out = {}
    for name, zipped in (("zip", True), ("legacy", False)):
        path = folder / f"{name}.pt"
        torch.save(state, path, _use_new_zipfile_serialization=zipped)
        out[name] = path.read_bytes()
        assert load_checkpoint(path)["step"] == 7
    return out


tick_train = counted("test_load_checkpoint_mutated")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@fuzz_settings(max_examples=300)
@given(
    kind=st.sampled_from(["zip", "zip", "legacy", "random", "truncated"]),
    data=st.data(),
)
def test_load_checkpoint_mutated(
    tmp_path_factory: pytest.TempPathFactory, kind: str, data: st.DataObject
) -> None:
    tick_train()
    folder = tmp_path_factory.getbasetemp() / "fuzz_train_ckpt"
    folder.mkdir(exist_ok=True)
    genuine_files = training_checkpoints(folder)
    if kind in ("zip", "legacy"):
        blob = data.draw(mutate(genuine_files[kind]))
    elif kind == "random":
        blob = data.draw(st.binary(max_size=300))
    else:
        source = genuine_files[data.draw(st.sampled_from(["zip", "legacy"]))]
        blob = source[: data.draw(st.integers(0, len(source) - 1))]
    path = folder / "fuzzed.pt"
    path.write_bytes(blob)
    state = outcome(CheckpointError, load_checkpoint, path)
    if state is not None:
        assert isinstance(state, dict) and "model" in state and "step" in state


@pytest.mark.parametrize("cut", [0, 1, 28, 300])
@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_load_checkpoint_truncated(
    tmp_path_factory: pytest.TempPathFactory, kind: str, cut: int
) -> None:
    """Truncations torch.load answered with IndexError / struct.error before the fix."""
    folder = tmp_path_factory.getbasetemp() / "fuzz_train_ckpt"
    folder.mkdir(exist_ok=True)
    path = folder / f"cut-{kind}-{cut}.pt"
    path.write_bytes(training_checkpoints(folder)[kind][:cut])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
