"""``segqc`` command line: one sub-command module per job, all calling the same engine."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Optional

from . import __version__
from .errors import SegQCError

# Each module defines ``register(subparsers)`` which adds its parser and sets ``func=run(args) -> int``.
COMMAND_MODULES = (
    "SegQCLib.commands.estimate",
    "SegQCLib.commands.run",
    "SegQCLib.commands.model",
    "SegQCLib.commands.corrections",
    "SegQCLib.commands.rank",
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segqc", description="Segmentation quality control (SegQC)")
    parser.add_argument("--version", action="version", version=f"segqc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or EXIT_OK)
    except SegQCError as exc:
        print(f"segqc: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("segqc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
