"""Symbolic links inside a corrections store: never followed, found and named.

A link planted in a store (``quarantine`` or ``.tmp`` pointing elsewhere, ``index.jsonl`` pointing at
another file, a record folder or file that is a link) would make SegQC read or write outside the store:
move files there on repair, append to somebody else's file, export a file that is not the record's.
Every store operation therefore checks the paths it is about to use with ``lstat`` (and opens files
with ``O_NOFOLLOW``), refuses with :class:`StoreLinkError` when one is a link, and ``verify`` lists every
link it finds (:func:`planted_links`); ``verify --repair`` moves the links themselves (never what they
point to) to ``quarantine/``.  Only the store's own folder may be reached through a link (the path the
user gives).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import SegQCError
from ..files import describe_path
from .names import (
    INDEX_FILE,
    LEDGER_FILE,
    LOCK_FILE,
    MARKER_FILE,
    QUARANTINE_DIR,
    RECORDS_DIR,
    TMP_DIR,
    StoreLayout,
)

# The store's own entries: every command uses some of them, so none may be a link.
FIXED_ENTRIES = (MARKER_FILE, LOCK_FILE, INDEX_FILE, LEDGER_FILE, RECORDS_DIR, TMP_DIR, QUARANTINE_DIR)


class StoreLinkError(SegQCError):
    """A path the store was about to use is a symbolic link."""


def link_advice(root: Path) -> str:
    return (f"SegQC never follows links inside a corrections store (one could make it read or write outside the "
            f"store). Nothing was changed. Run `segqc corrections verify --store {root}` to list the links and "
            "`--repair` to move them (not what they point to) to quarantine/.")


def refuse_links(layout: StoreLayout, paths: Iterable[Path] = ()) -> None:
    """StoreLinkError when one of the store's own entries or ``paths`` is a symbolic link."""
    for path in [*(layout.root / name for name in FIXED_ENTRIES), *paths]:
        if os.path.islink(path):
            raise StoreLinkError(f"{path} is {describe_path(path)}. {link_advice(layout.root)}")


def planted_links(layout: StoreLayout) -> list[Path]:
    """Every symbolic link in the store, without following any: its own entries, everything under ``records/``
    and ``.tmp/`` (what ``quarantine/`` holds was put there by a repair and is only ever renamed)."""
    found: list[Path] = []
    try:
        entries = list(os.scandir(layout.root))
    except OSError:
        return found
    for entry in entries:
        if entry.is_symlink():
            found.append(Path(entry.path))
        elif entry.name in (RECORDS_DIR, TMP_DIR) and entry.is_dir(follow_symlinks=False):
            for folder, dirs, files in os.walk(entry.path, followlinks=False):
                found += [Path(folder) / name for name in [*dirs, *files] if os.path.islink(Path(folder) / name)]
    return sorted(found)
