"""Finding a store's committed records on disk and keeping ``index.jsonl``, their cache, in step.

The folders under ``records/`` decide which records exist; the index only saves reading every
``record.json``.  When it is missing, torn or stale it is rebuilt from the folders.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from ..errors import InputError
from ..files import read_bytes, write_bytes_atomic
from .names import KEY_RE, VERSION_RE, StoreLayout, format_record_id
from .records import CorrectionRecord, read_record_metadata, record_from_metadata, sorted_records


def scan_record_dirs(layout: StoreLayout) -> dict[str, Path]:
    """Every committed record folder by record id."""
    found: dict[str, Path] = {}
    if not layout.records_dir.is_dir() or layout.records_dir.is_symlink():
        return found
    for case_dir in layout.records_dir.iterdir():  # links are never followed (verify reports them)
        if case_dir.is_symlink() or not (case_dir.is_dir() and KEY_RE.match(case_dir.name)):
            continue
        for version_dir in case_dir.iterdir():
            match = VERSION_RE.match(version_dir.name)
            if match and version_dir.is_dir() and not version_dir.is_symlink():
                found[format_record_id(case_dir.name, int(match[1]))] = version_dir
    return found


def read_index(layout: StoreLayout) -> Optional[dict[str, dict[str, Any]]]:
    """Index entries by record id, or None when the index is missing or damaged."""
    if os.path.islink(layout.index_path):
        return None  # never read through a link (verify reports it)
    try:
        text = read_bytes(layout.index_path, follow_links=False).decode("utf-8")
    except FileNotFoundError:
        return None if scan_record_dirs(layout) else {}
    except (OSError, UnicodeDecodeError):
        return None
    entries: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            entries[entry["record_id"]] = entry
        except (json.JSONDecodeError, KeyError, TypeError):
            return None
    if text and not text.endswith("\n"):
        return None  # torn final line
    return entries


def index_line(record: CorrectionRecord) -> str:
    return json.dumps(record.index_entry(), allow_nan=False) + "\n"


def records_from_disk(layout: StoreLayout) -> tuple[list[CorrectionRecord], dict[str, str]]:
    """Every readable record (sorted) and, by record id, why each unreadable one was left out."""
    records, broken = [], {}
    for record_id, path in scan_record_dirs(layout).items():
        try:
            metadata = read_record_metadata(path)
            if metadata.record_id != record_id:
                raise InputError(f"record.json names {metadata.record_id!r}, but the folder is {record_id!r}")
            records.append(record_from_metadata(metadata, path))
        except InputError as exc:
            broken[record_id] = str(exc)
    return sorted_records(records), broken


def rewrite_index(layout: StoreLayout, records: list[CorrectionRecord]) -> None:
    """Replace the index atomically (call under the store lock)."""
    body = "".join(index_line(r) for r in records)
    write_bytes_atomic(layout.index_path, body.encode("utf-8"), sync_dir=True)
