from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference"


def reference_path(*parts: str) -> Path:
    """A path under ../shared/reference; skips the test cleanly when shared/ is absent."""
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not found: {path}")
    return path
