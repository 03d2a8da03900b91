"""Property-based fuzzing of slotlab's readers of untrusted bytes (hypothesis).

Contract under test: a public reader given arbitrary bytes either returns normally or raises one
of slotlab's own error types (`DataError`, `CheckpointError`); never another exception (the
internal `slotlab.tf_formats.wire.WireError` included), never a hang, never a huge allocation
driven by a forged length field.

Shared pieces live here: the reference-data location, the common hypothesis settings (fixed
seed via `derandomize=True`, a per-example deadline to catch near-hangs), byte-mutation
strategies, and an example counter that each fuzz module reports at its end.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"

# Values a forged length / offset / size field is set to.
INTERESTING_INTS = (
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    127,
    128,
    255,
    256,
    2**16,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**40,
    2**60,
    2**63 - 1,
    2**63,
    2**64 - 1,
)


def fuzz_settings(max_examples: int, deadline_ms: int = 2000) -> settings:
    """Reproducible settings: fixed derandomized seed, no example database, a deadline."""
    return settings(
        max_examples=max_examples,
        deadline=deadline_ms,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],
    )


def reference(*parts: str) -> Path:
    """A path under ../shared/reference; skips the test cleanly when it is absent."""
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not found: {path}")
    return path


# --------------------------------------------------------------------------------------------
# Example counting (reported at the end of each fuzz module)
# --------------------------------------------------------------------------------------------

EXAMPLES: Counter[str] = Counter()
SECONDS: Counter[str] = Counter()


def counted(name: str) -> Callable[[], None]:
    """A zero-argument callable to call once per example of the test `name`."""

    def tick() -> None:
        EXAMPLES[name] += 1

    return tick


@pytest.fixture(scope="module", autouse=True)
def report_fuzz_counts(request: pytest.FixtureRequest):
    """Print, after the module's tests, how many examples each fuzz test ran and its time."""
    start = time.perf_counter()
    before = dict(EXAMPLES)
    yield
    module = request.module.__name__.rsplit(".", 1)[-1]
    ran = {k: v - before.get(k, 0) for k, v in EXAMPLES.items() if v - before.get(k, 0)}
    lines = [f"{name}: {count} examples" for name, count in sorted(ran.items())]
    lines.append(f"{module}: {sum(ran.values())} examples in {time.perf_counter() - start:.1f} s")
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:  # pragma: no cover - unusual pytest setups
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(f"[fuzz] {line}")


# --------------------------------------------------------------------------------------------
# Byte strategies
# --------------------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """Base-128 varint of a non-negative int of any size (more than 10 bytes if it is huge)."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def forged_ints(*extra: int) -> st.SearchStrategy[int]:
    """Interesting field values, the `extra` ones (e.g. the file size), and arbitrary u64s."""
    values = sorted(set(INTERESTING_INTS) | {v for v in extra if v >= 0})
    return st.one_of(st.sampled_from(values), st.integers(0, 2**64 - 1))


_OPS = ("flip", "set", "insert", "delete", "truncate", "u64", "u32", "varint", "splice", "zero")


@st.composite
def mutate(draw: st.DrawFn, original: bytes, max_ops: int = 4) -> bytes:
    """`original` with 1..max_ops mutations: bit flips, overwritten / inserted / deleted bytes,
    truncation, forged little-endian 32/64-bit lengths, forged varints, duplicated ranges."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(_OPS))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[pos:]
        elif op in ("u64", "u32"):
            size = 8 if op == "u64" else 4
            value = draw(forged_ints(len(original))) % (1 << (8 * size))
            data[pos : pos + size] = value.to_bytes(size, "little")
        elif op == "varint":
            value = draw(st.one_of(forged_ints(len(original)), st.integers(0, 2**70 - 1)))
            encoded = varint(value)
            data[pos : pos + len(encoded)] = encoded
        elif op == "splice" and data:
            start = draw(st.integers(0, len(data) - 1))
            chunk = data[start : start + draw(st.integers(1, 64))]
            data[pos:pos] = chunk
        elif op == "zero":
            end = pos + draw(st.integers(1, 64))
            data[pos:end] = bytes(len(data[pos:end]))
    return bytes(data)


def random_bytes(max_size: int = 512) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=max_size)


# --------------------------------------------------------------------------------------------
# Running a reader under the contract
# --------------------------------------------------------------------------------------------


def outcome(allowed: type[BaseException] | tuple[type[BaseException], ...], fn, *args, **kw):
    """Run `fn`, accepting success or an `allowed` error; anything else propagates (a failure).

    The outcome is recorded as a hypothesis event (shown by --hypothesis-show-statistics), with
    the error message reduced to its shape, so a run shows how deep the inputs got.
    """
    try:
        result = fn(*args, **kw)
    except allowed as exc:
        reason = re.sub(r"/[^\s:'\"]+", "PATH", str(exc))  # file names vary between runs
        reason = re.sub(r"[0-9]+", "N", reason.removeprefix("PATH").lstrip(": "))
        event(f"{type(exc).__name__}: {reason[:80]}")
        return None
    event("accepted")
    return result
