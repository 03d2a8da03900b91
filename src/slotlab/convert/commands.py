"""`slotlab convert-tf` (placeholder until the converter lands)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("convert-tf", help="convert an official TF checkpoint")
