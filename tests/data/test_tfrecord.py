"""TF-free TFRecord framing and tf.train.Example parsing/encoding."""

import gzip
import json
import tracemalloc
from pathlib import Path

import google_crc32c
import numpy as np
import pytest

from slotlab.errors import DataError
from slotlab.tf_formats.crc import masked_crc32c
from slotlab.tf_formats.example import BytesList, encode_example, parse_example
from slotlab.tf_formats.tfrecord import (
    MAX_GZIP_RECORD_BYTES,
    index_records,
    is_gzip,
    iter_records,
    read_record_at,
    write_tfrecord,
)

FORMATS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "formats"
needs_ref = pytest.mark.skipif(not FORMATS.is_dir(), reason="../shared/reference is absent")
MULTI_OBJECT = sorted((FORMATS / "multi_object").glob("*.tfrecords")) if FORMATS.is_dir() else []


def sample_examples() -> list[dict]:
    return [
        {
            "pixels": BytesList.from_uint8(np.arange(300) % 256),
            "names": [b"alpha", "beta", b""],
            "floats": np.array([0.5, -1.25, 3e38, np.inf], dtype=np.float32),
            "ints": np.array([0, 1, -1, 2**63 - 1, -(2**63), 300], dtype=np.int64),
            "empty_floats": np.zeros(0, np.float32),
            "empty_ints": np.zeros(0, np.int64),
            "empty_bytes": BytesList(),
        },
        {"pixels": BytesList.from_uint8([7]), "names": "single", "floats": [1.0], "ints": [5]},
    ]


def assert_parsed_equal(parsed: dict, original: dict) -> None:
    assert set(parsed) == set(original)
    for key, value in original.items():
        got = parsed[key]
        if isinstance(value, BytesList):
            assert isinstance(got, BytesList) and got == value
        elif isinstance(value, (str, bytes)) or (
            isinstance(value, list) and value and isinstance(value[0], (str, bytes))
        ):
            items = [value] if isinstance(value, (str, bytes)) else value
            assert got == [v.encode() if isinstance(v, str) else v for v in items]
        else:
            want = np.asarray(value)
            dtype = np.float32 if want.dtype.kind == "f" else np.int64
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, want.astype(dtype))


def test_crc32c_and_mask():
    assert google_crc32c.value(b"123456789") == 0xE3069283
    crc = 0xE3069283
    want = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    assert masked_crc32c(b"123456789") == want


@needs_ref
@pytest.mark.parametrize("path", MULTI_OBJECT, ids=lambda p: p.stem)
def test_frame_walk_matches_manifest(path):
    manifest = json.loads(path.with_suffix(".manifest.json").read_text())
    assert is_gzip(path)
    lengths = [len(p) for p in iter_records(path)]
    assert lengths == [r["serialized_example_bytes"] for r in manifest["records"]]
    assert sum(n + 16 for n in lengths) == manifest["uncompressed_tfrecord_bytes"]


@needs_ref
def test_tfds_shards_index_and_random_access():
    builder = FORMATS / "tfds_clevr" / "clevr" / "3.1.0"
    shards = sorted(builder.glob("clevr-*.tfrecord-*"))
    assert shards
    for shard in shards:
        assert not is_gzip(shard)
        index = index_records(shard)
        assert index[:, 1].sum() + 16 * len(index) == shard.stat().st_size
        payloads = list(iter_records(shard))
        with open(shard, "rb") as f:
            for (offset, length), payload in zip(index[::-1], payloads[::-1]):
                assert read_record_at(f, int(offset), int(length), path=shard) == payload


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
def test_round_trip(tmp_path, compress, packed):
    examples = sample_examples()
    path = tmp_path / "rt.tfrecord"
    payloads = [encode_example(e, packed=packed) for e in examples]
    assert write_tfrecord(path, payloads, gzip=compress) == len(examples)
    assert is_gzip(path) == compress
    got = list(iter_records(path))
    assert got == payloads
    for payload, example in zip(got, examples):
        assert_parsed_equal(parse_example(payload), example)
    assert list(iter_records(path, start=1)) == payloads[1:]
    assert list(iter_records(path, stop=1)) == payloads[:1]


def test_write_accepts_feature_dicts_and_strings(tmp_path):
    path = tmp_path / "dicts.tfrecord"
    write_tfrecord(path, [{"a": [1, 2, 3]}, {"b": ["x", "y"], "c": 2.5}])
    first, second = (parse_example(p) for p in iter_records(path))
    np.testing.assert_array_equal(first["a"], [1, 2, 3])
    assert second["b"] == [b"x", b"y"]
    assert second["c"].dtype == np.float32 and second["c"].tolist() == [2.5]
    with pytest.raises(ValueError, match="ambiguous"):
        encode_example({"e": []})


def test_mixed_packed_and_unpacked_fields_concatenate():
    # FloatList with a packed field followed by two unpacked ones, Int64List likewise.
    floats = (
        b"\x0a\x08"
        + np.float32([1, 2]).tobytes()
        + b"".join(b"\x0d" + np.float32([v]).tobytes() for v in (3, 4))
    )
    ints = b"\x0a\x02\x01\x02" + b"\x08\x03" + b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"

    def entry(key: bytes, feature: bytes) -> bytes:
        body = b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([len(feature)]) + feature
        return b"\x0a" + bytes([len(body)]) + body

    f_feature = b"\x12" + bytes([len(floats)]) + floats
    i_feature = b"\x1a" + bytes([len(ints)]) + ints
    features = entry(b"f", f_feature) + entry(b"i", i_feature)
    parsed = parse_example(b"\x0a" + bytes([len(features)]) + features + b"\x10\x05")
    np.testing.assert_array_equal(parsed["f"], np.float32([1, 2, 3, 4]))
    np.testing.assert_array_equal(parsed["i"], np.int64([1, 2, 3, -1]))


def test_bytes_list_with_long_strings_is_not_one_byte():
    parsed = parse_example(encode_example({"s": [b"ab", b"c"]}))
    with pytest.raises(ValueError):
        parsed["s"].to_uint8()
    one = parse_example(encode_example({"s": [b"a", b"b"]}))["s"]
    np.testing.assert_array_equal(one.to_uint8(), np.frombuffer(b"ab", np.uint8))


def test_concatenated_gzip_members(tmp_path):
    plain = tmp_path / "plain.tfrecord"
    payloads = [encode_example(e) for e in sample_examples()] * 3
    write_tfrecord(plain, payloads)
    data = plain.read_bytes()
    cut = len(data) // 3  # members split in the middle of a record: gzip is one byte stream
    joined = tmp_path / "joined.tfrecord.gz"
    joined.write_bytes(gzip.compress(data[:cut]) + gzip.compress(data[cut:]))
    assert list(iter_records(joined)) == payloads


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def write_plain(tmp_path, n=3) -> tuple[Path, bytes]:
    path = tmp_path / "bad.tfrecord"
    write_tfrecord(path, [encode_example({"v": np.arange(50, dtype=np.float32)})] * n)
    return path, path.read_bytes()


def read_all(path):
    return list(iter_records(path))


@pytest.mark.parametrize("cut", [5, 14, 30, -2], ids=["header", "header-crc", "payload", "crc"])
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_truncated_file(tmp_path, cut, compress):
    _, data = write_plain(tmp_path, n=1)
    path = tmp_path / "cut.tfrecord"
    data = data[:cut]
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DataError, match="cut.tfrecord.*truncated"):
        read_all(path)


def test_truncated_gzip_stream(tmp_path):
    _, data = write_plain(tmp_path)
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(data)[:-12])
    with pytest.raises(DataError, match="cut.gz.*gzip"):
        read_all(path)


@pytest.mark.parametrize("where", ["length", "length-crc", "payload", "payload-crc"])
def test_flipped_byte_fails_crc(tmp_path, where):
    path, data = write_plain(tmp_path)
    record = len(data) // 3
    pos = record + {"length": 0, "length-crc": 9, "payload": 20, "payload-crc": record - 1}[where]
    broken = bytearray(data)
    broken[pos] ^= 0x40
    path.write_bytes(bytes(broken))
    with pytest.raises(DataError, match=r"bad.tfrecord: record 1 .*CRC32C"):
        read_all(path)


def forged_header(length: int) -> bytes:
    head = length.to_bytes(8, "little")
    return head + masked_crc32c(head).to_bytes(4, "little")


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_forged_huge_length_does_not_allocate(tmp_path, compress):
    path, data = write_plain(tmp_path, n=1)
    for length in (2**62, MAX_GZIP_RECORD_BYTES - 1):
        forged = data + forged_header(length) + b"\x00" * 100
        path.write_bytes(gzip.compress(forged) if compress else forged)
        tracemalloc.start()
        try:
            with pytest.raises(DataError, match=r"bad.tfrecord: record 1 "):
                read_all(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 256 << 20


def test_not_a_tfrecord_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is plain text, certainly not a TFRecord file\n")
    with pytest.raises(DataError, match="notes.txt: record 0 .*CRC32C"):
        read_all(path)


def test_missing_file_and_gzip_index(tmp_path):
    with pytest.raises(DataError, match="nothing.tfrecord: no such file"):
        read_all(tmp_path / "nothing.tfrecord")
    path = tmp_path / "z.tfrecord"
    write_tfrecord(path, [b"abc"], gzip=True)
    with pytest.raises(DataError, match="z.tfrecord: is gzip-compressed"):
        index_records(path)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x0a\x05\x0a\x03",  # length past the end
        b"\x0a",  # varint missing
        b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # varint over 10 bytes
        b"\x0b",  # group
        b"\x0f",  # wire type 7
        b"\x08\x01",  # Example.features with a varint wire type
    ],
)
def test_malformed_protobuf(payload):
    with pytest.raises(DataError, match="f.tfrecord: record 2: malformed tf.train.Example"):
        parse_example(payload, where="f.tfrecord: record 2")


def test_malformed_packed_values():
    def example(feature: bytes) -> bytes:
        body = b"\x0a\x01k\x12" + bytes([len(feature)]) + feature
        features = b"\x0a" + bytes([len(body)]) + body
        return b"\x0a" + bytes([len(features)]) + features

    with pytest.raises(DataError, match="multiple of 4"):
        parse_example(example(b"\x12\x05\x0a\x03abc"))
    with pytest.raises(DataError, match="ends inside a varint"):
        parse_example(example(b"\x1a\x04\x0a\x02\x01\x80"))
