"""Moving what is wrong in a store to ``quarantine/`` (nothing is ever deleted), with a ``.reason.json`` beside it.

Only renames happen here, and a symbolic link is moved as the link itself (``rename`` never follows one),
so a planted link can neither send a repair outside the store nor lose what it points to.  The store's own
entries (``quarantine``, ``.tmp``, ``records``, ``.lock``, ``index.jsonl``, ``ledger.jsonl``, the marker)
can be links themselves; :func:`quarantine_root_links` moves those first, before the store lock is taken
(a ``.lock`` link would otherwise be opened and truncated by the lock), and recreates the folders.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from ..files import describe_path, fsync_dir, write_bytes_synced
from .links import FIXED_ENTRIES
from .names import QUARANTINE_DIR, RECORDS_DIR, TMP_DIR, StoreLayout

logger = logging.getLogger(__name__)

PLANTED_LINK_KIND = "planted_link"


def quarantined_versions(layout: StoreLayout, key: str) -> list[int]:
    """Versions of case ``key`` that were moved to quarantine (their numbers are never reused)."""
    if not layout.quarantine_dir.is_dir() or layout.quarantine_dir.is_symlink():
        return []
    pattern = re.compile(rf"__{RECORDS_DIR}__{re.escape(key)}__v(\d{{4,}})$")
    return [int(m[1]) for m in (pattern.search(p.name) for p in layout.quarantine_dir.iterdir()) if m]


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def _write_reason(target: Path, original: str, kind: str, reason: str, explanation: str, stamp: str) -> None:
    data = {"original_path": original, "kind": kind, "reason": reason, "explanation": explanation,
            "quarantined_utc": stamp}
    write_bytes_synced(Path(f"{target}.reason.json"), json.dumps(data, indent=2).encode("utf-8"))


def quarantine(layout: StoreLayout, path: Path, kind: str, reason: str, explanation: str) -> Optional[Path]:
    """Rename ``path`` (a file, folder or link) into ``quarantine/``; None when it is gone meanwhile."""
    layout.quarantine_dir.mkdir(exist_ok=True)
    stamp = _stamp()
    flat = "__".join(path.relative_to(layout.root).parts)
    target = layout.quarantine_dir / f"{stamp}__{kind}__{flat}"
    try:
        os.replace(path, target)
    except FileNotFoundError:  # a writer finished and removed it meanwhile
        return None
    _write_reason(target, str(path.relative_to(layout.root)), kind, reason, explanation, stamp)
    fsync_dir(layout.quarantine_dir)
    fsync_dir(path.parent)
    logger.warning("Quarantined %s -> %s (%s)", path, target, reason)
    return target


def quarantine_root_links(layout: StoreLayout, explanation: str) -> list[Path]:
    """Move the store's own entries that are symbolic links into quarantine (``quarantine`` itself through a fresh
    folder), recreate ``records/`` and ``.tmp/`` as real folders; returns where the links went."""
    moved: list[Path] = []
    quarantine_path = layout.root / QUARANTINE_DIR
    if os.path.islink(quarantine_path):
        reason = f"{QUARANTINE_DIR} was {describe_path(quarantine_path)}"
        fresh = layout.root / f".{QUARANTINE_DIR}.{uuid.uuid4().hex}"
        fresh.mkdir()
        stamp = _stamp()
        target = fresh / f"{stamp}__{PLANTED_LINK_KIND}__{QUARANTINE_DIR}"
        os.replace(quarantine_path, target)
        _write_reason(target, QUARANTINE_DIR, PLANTED_LINK_KIND, reason, explanation, stamp)
        os.rename(fresh, quarantine_path)
        fsync_dir(layout.root)
        moved.append(quarantine_path / target.name)
        logger.warning("Quarantined the planted link %s (%s)", quarantine_path, reason)
    for name in FIXED_ENTRIES:
        path = layout.root / name
        if name != QUARANTINE_DIR and os.path.islink(path):
            target = quarantine(layout, path, PLANTED_LINK_KIND, f"{name} was {describe_path(path)}", explanation)
            if target is not None:
                moved.append(target)
    for folder in (layout.records_dir, layout.root / TMP_DIR):
        if not os.path.lexists(folder):
            folder.mkdir()
    return moved
