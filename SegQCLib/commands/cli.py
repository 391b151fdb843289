"""``segqc`` command line: one sub-command module per job, all calling the same engine."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Optional

from .. import __version__
from ..errors import SegQCError

# Each module defines ``register(subparsers)`` which adds its parser and sets ``func=run(args) -> int``.
# Only the chosen command's module is imported: ``segqc estimate`` and ``segqc corrections`` must start
# fast and work without torch (an optional dependency), while ``run``/``rank``/``model`` import it.
COMMANDS = {
    "estimate": ("SegQCLib.commands.estimate", "estimates, error boxes and rankings from given error probability maps"),
    "run": ("SegQCLib.commands.run", "run the QC network: error maps, estimated and predicted quality, error boxes"),
    "model": ("SegQCLib.commands.model", "create or inspect QC model packages"),
    "corrections": ("SegQCLib.commands.corrections", "record, list, verify and export expert corrections"),
    "rank": ("SegQCLib.commands.rank", "QC a whole dataset and rank its cases worst first (ranking.csv, index.html)"),
    "devices": ("SegQCLib.commands.devices", "which GPU (and memory) QC would use, or why it falls back to the CPU"),
}
COMMAND_MODULES = tuple(module for module, _help in COMMANDS.values())

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _chosen_command(argv: Sequence[str]) -> Optional[str]:
    for token in argv:
        if not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The parser of ``argv``: only the chosen command's module is imported (none for ``segqc --help``, so it
    answers at once); without ``argv`` every command's module is imported (the full parser)."""
    parser = argparse.ArgumentParser(prog="segqc", description="Segmentation quality control (SegQC)")
    parser.add_argument("--version", action="version", version=f"segqc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _chosen_command(argv) if argv is not None else None
    for name, (module_name, help_text) in COMMANDS.items():
        if argv is None or name == chosen:
            importlib.import_module(module_name).register(subparsers)
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse has printed what to say
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
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
    except OSError as exc:
        # A file system refusal (--out is a file, no permission, disk full) is the user's to fix: say what and
        # where, without a traceback (logged with -v).
        logging.getLogger(__name__).debug("segqc failed", exc_info=True)
        print(f"segqc: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("segqc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
