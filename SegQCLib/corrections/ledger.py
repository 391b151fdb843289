"""The store's ledger (``ledger.jsonl``): an append-only account of every record ever committed and every loss.

The index is a cache rebuilt from ``records/``, so it cannot tell a record that was deleted from one that
never existed.  The ledger can: a line is appended, under the store lock, after each commit
(``{"event": "committed", "record_id", "case_key", "version", "created_utc", "reviewer",
"metadata_sha256"}``), and never rewritten.  From it:

* a committed record missing from ``records/`` is **lost** (not "index damage"); ``verify --repair``
  appends ``{"event": "lost", ...}`` (with where a damaged record was quarantined) and ``verify`` reports
  the loss every time after -- a store that lost a record never looks whole again, unless the record
  folder is put back (a restored record whose ``record.json`` has the committed checksum is whole);
* a record folder whose ``record.json`` is not the one committed under that id is damaged;
* the highest version ever committed per case is the store's version counter: a number, once
  committed, is never given to another record, even after the record and its quarantine copy are gone.

Stores made before the ledger (store format 1) get one on their next ``add`` or repair, started
(``{"event": "started", ...}``) from the records on disk and the index's entries (an indexed record
that is gone is then known as lost).  A torn last line (a writer killed mid-append) is ignored.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Optional

from ..errors import SegQCError
from ..files import NotARegularFileError, fsync_dir, read_bytes, write_bytes_atomic
from .names import StoreLayout, parse_record_id

logger = logging.getLogger(__name__)

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class LedgerEvent(str, Enum):
    STARTED = "started"
    COMMITTED = "committed"
    LOST = "lost"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Ledger:
    """What a store's ledger says (empty when there is none: ``exists`` False)."""

    exists: bool = False
    committed: dict[str, dict[str, Any]] = field(default_factory=dict)  # record id -> its commit line
    lost: dict[str, dict[str, Any]] = field(default_factory=dict)  # record id -> its (first) loss line
    started: list[dict[str, Any]] = field(default_factory=list)
    damaged_lines: int = 0

    def max_version(self, key: str) -> int:
        return max((e["version"] for e in self.committed.values() if e.get("case_key") == key), default=0)


def read_ledger(layout: StoreLayout) -> Ledger:
    """The ledger's content; a link or other non-regular file is refused (SegQCError), never read."""
    try:
        data = read_bytes(layout.ledger_path, follow_links=False)
    except FileNotFoundError:
        return Ledger()
    except NotARegularFileError as exc:
        raise SegQCError(f"{layout.ledger_path} is {exc.kind}, not the store's ledger; run `segqc corrections "
                         "verify --repair`") from exc
    ledger = Ledger(exists=True)
    lines = data.decode("utf-8", errors="replace").split("\n")
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            event = LedgerEvent(entry["event"])
            if event is LedgerEvent.STARTED:
                ledger.started.append(entry)
                continue
            record_id = entry["record_id"]
            parse_record_id(record_id)
            if event is LedgerEvent.COMMITTED:
                entry["version"] = int(entry["version"])
                ledger.committed.setdefault(record_id, entry)
            else:
                ledger.lost.setdefault(record_id, entry)
        except (ValueError, KeyError, TypeError, SegQCError):
            if number != len(lines) - 1:  # a torn last line is an interrupted append, not damage
                ledger.damaged_lines += 1
    return ledger


def _line(entry: dict[str, Any]) -> bytes:
    return (json.dumps(entry, allow_nan=False, sort_keys=True) + "\n").encode("utf-8")


def append_ledger(layout: StoreLayout, entries: list[dict[str, Any]]) -> None:
    """Append ``entries`` (call under the store lock), fsynced; a torn last line is closed first."""
    if not entries:
        return
    created = not os.path.lexists(layout.ledger_path)
    fd = os.open(str(layout.ledger_path), os.O_RDWR | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o666)
    try:
        size = os.fstat(fd).st_size
        prefix = b""
        if size:
            os.lseek(fd, size - 1, os.SEEK_SET)
            prefix = b"" if os.read(fd, 1) == b"\n" else b"\n"
        payload = prefix + b"".join(_line(e) for e in entries)
        written = os.write(fd, payload)
        if written != len(payload):
            raise OSError(f"only {written} of {len(payload)} bytes appended to {layout.ledger_path}")
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(layout.root)


def committed_entry(record_id: str, case_key: str, version: int, created_utc: str, reviewer: Optional[str],
                    metadata_sha256: Optional[str]) -> dict[str, Any]:
    return {"event": LedgerEvent.COMMITTED.value, "record_id": record_id, "case_key": case_key, "version": version,
            "created_utc": created_utc, "reviewer": reviewer, "metadata_sha256": metadata_sha256}


def lost_entry(record_id: str, detail: str, quarantined_as: Optional[str] = None) -> dict[str, Any]:
    return {"event": LedgerEvent.LOST.value, "record_id": record_id, "detected_utc": utc_now(), "detail": detail,
            "quarantined_as": quarantined_as}


def start_ledger(layout: StoreLayout, committed: list[dict[str, Any]], note: str) -> None:
    """Write a new ledger (call under the lock, only when there is none) holding ``committed`` lines."""
    header = {"event": LedgerEvent.STARTED.value, "utc": utc_now(), "note": note, "records": len(committed)}
    write_bytes_atomic(layout.ledger_path, b"".join(_line(e) for e in [header, *committed]), sync_dir=True)
    logger.info("Started the ledger of %s (%s; %d records)", layout.root, note, len(committed))
