"""The masked CRC32C that TFRecord files and TF checkpoint tables store.

`masked = ((crc >> 15) | (crc << 17)) + 0xA282EAD8 (mod 2**32)`, with CRC32C the Castagnoli CRC
computed by the C-accelerated `google_crc32c` package.
"""

from __future__ import annotations

import google_crc32c

_CRC_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """The masked CRC32C of `data`, as TFRecord framing and TF table blocks store it."""
    crc = google_crc32c.value(bytes(data) if not isinstance(data, bytes) else data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC_DELTA) & 0xFFFFFFFF
