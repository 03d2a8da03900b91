"""The `slotlab` command line.

    slotlab train / eval / visualize / report ...    train, score and look at models
    slotlab convert-tf | convert-savi PATH --out DIR official checkpoints -> model directories
    slotlab data generate | show | cache ...          procedural data, contact sheets, caches

Every error a user can cause (a bad option, a missing or damaged file, a directory that would be
overwritten, a full disk) prints one line, `error: ...`, naming what is wrong and what would be
accepted, and exits with status 2; nothing is left half-written. Ctrl-C exits with status 130
(during training after writing a checkpoint).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

from slotlab.errors import ConfigError, SlotlabError

DESCRIPTION = textwrap.fill(
    "slotlab: object-centric learning with Slot Attention. Train and evaluate object discovery "
    "and set prediction models, draw their slots, convert the official TensorFlow and SAVi "
    "checkpoints, and generate, inspect or cache datasets.", 79)
EPILOG = """examples:
  slotlab train object-discovery --data procedural-sprites --preset cpu-sprites --out runs/a
  slotlab eval runs/a
  slotlab visualize runs/a --out slots.png
  slotlab convert-tf CHECKPOINT_DIR --task object-discovery --out models/clevr6
  slotlab data generate --out data/proc --num 1000

Run `slotlab COMMAND --help` for the options of a command."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def _int_at_least(text: str, minimum: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def output_file(text: str) -> Path:
    """argparse type: a file path that can be written (not a directory; the nearest existing
    parent is a directory that can be written; missing ones are created when writing)."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give the file to write in it")
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: {parent} is a file")
    problem = _write_problem(parent)
    if problem is not None:
        raise argparse.ArgumentTypeError(
            f"cannot write {text}: {parent} is not writable ({problem})")
    return path


def _nearest_existing(path: Path) -> Path:
    """`path` if it exists, else its nearest ancestor that does (below which the missing
    directories would be created)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_dir(out: Path, label: str | None = None, verb: str = "write") -> None:
    """ConfigError unless files can be written in the directory `out` (the missing directories
    of it are created when writing); the message says "cannot {verb} {label}" (default label:
    the path)."""
    label = str(out) if label is None else label
    writable = _nearest_existing(out)
    if not writable.is_dir():
        raise ConfigError(f"cannot {verb} {label}: {writable} is a file")
    problem = _write_problem(writable)
    if problem is not None:
        raise ConfigError(f"cannot write {label}: {writable} is not writable ({problem}); give a "
                          "directory you can write to")


def _write_problem(directory: Path) -> str | None:
    """Why no file can be created in `directory` (the OS's words), or None if one can."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other slotlab error (the
    sub-command parsers are of this class too)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from slotlab import __version__

    parser = Parser(prog="slotlab", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"slotlab {__version__}",
                        help="print slotlab's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands")

    from slotlab.convert.commands import register as register_convert
    from slotlab.data.commands import register as register_data
    from slotlab.report.commands import register as register_report
    from slotlab.train.commands import register as register_train

    register_train(sub)
    register_report(sub)
    register_convert(sub)
    register_data(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except SlotlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        from slotlab.train.runtime import Interrupted

        if not isinstance(exc, Interrupted):  # training has said where it stopped
            print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a file no check caught (removed meanwhile, a full disk, ...)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: could not read or write{where} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
