"""`slotlab data ...` subcommands (placeholder until the procedural generator lands)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="generate, inspect and cache datasets")
    parser.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
