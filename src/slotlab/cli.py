"""The `slotlab` command line.

    slotlab convert-tf PATH --task TASK --out DIR    official TF checkpoint -> safetensors
    slotlab data generate|show ...                   procedural data
    slotlab train / eval / visualize ...             (see `slotlab COMMAND --help`)

Every error a user can cause prints one sentence (`error: ...`) and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from slotlab.errors import SlotlabError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slotlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from slotlab.convert.commands import register as register_convert
    from slotlab.data.commands import register as register_data
    from slotlab.report.commands import register as register_report
    from slotlab.train.commands import register as register_train

    register_convert(sub)
    register_data(sub)
    register_train(sub)
    register_report(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except SlotlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
