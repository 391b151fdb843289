"""Checking a whole corrections store and repairing it by moving whatever is broken to ``quarantine/``.

Nothing is ever deleted: a damaged record, the leftovers of an interrupted write or a foreign file is
renamed into ``quarantine/`` with a ``.reason.json`` beside it saying what was wrong, and the index is
rebuilt from the records that remain.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from filelock import FileLock, Timeout

from ..files import fsync_dir, write_bytes_synced
from .index import read_index, rewrite_index, scan_record_dirs
from .names import INDEX_FILE, KEY_RE, LOCK_FILE, MARKER_FILE, QUARANTINE_DIR, RECORDS_DIR, TMP_DIR, StoreLayout
from .records import CorrectionRecord, RecordMetadata, check_record, record_from_metadata, sorted_records

logger = logging.getLogger(__name__)

# A record's result from a pass without the lock: (metadata, None) when whole, else (metadata or None, problem).
RecordCheck = tuple[Optional[RecordMetadata], Optional[str]]


class ProblemKind(str, Enum):
    CORRUPT_RECORD = "corrupt_record"
    INCOMPLETE_WRITE = "incomplete_write"
    UNKNOWN_ENTRY = "unknown_entry"
    INDEX_DAMAGED = "index_damaged"
    NOT_A_STORE = "not_a_store"


EXPLANATIONS = {
    ProblemKind.CORRUPT_RECORD: "a committed record whose files are missing, changed or damaged",
    ProblemKind.INCOMPLETE_WRITE: "left by an `add` that was interrupted (process killed or crashed) before it "
                                  "committed; it is not a record and no committed record is affected",
    ProblemKind.UNKNOWN_ENTRY: "not created by SegQC",
    ProblemKind.INDEX_DAMAGED: "the index is a cache of records/ and is rebuilt from it; no record is lost",
    ProblemKind.NOT_A_STORE: "the folder has no segqc-store.json marker",
}

# What a pass found to move aside: (path, kind of problem, what is wrong).
ToQuarantine = list[tuple[Path, ProblemKind, str]]


@dataclass
class StoreProblem:
    kind: ProblemKind
    path: str
    detail: str
    record_id: Optional[str] = None

    def describe(self) -> str:
        return f"{self.kind.value}: {self.path}: {self.detail} ({EXPLANATIONS[self.kind]})"


@dataclass
class VerifyReport:
    records_checked: int = 0
    records_ok: int = 0
    problems: list[StoreProblem] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    index_rebuilt: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_text(self) -> str:
        lines = [f"{self.records_ok} of {self.records_checked} records whole"]
        lines += [f"  problem: {p.describe()}" for p in self.problems]
        lines += [f"  write in progress (left alone): {p}" for p in self.in_progress]
        lines += [f"  quarantined: {p}" for p in self.quarantined]
        if self.index_rebuilt:
            lines.append("  index rebuilt from records")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        for problem in data["problems"]:
            problem["kind"] = problem["kind"].value
        return data


def check_records(layout: StoreLayout) -> dict[str, RecordCheck]:
    """Check every committed record's files against its checksums (the slow part: it hashes every file)."""
    return {record_id: check_record(record_id, path) for record_id, path in scan_record_dirs(layout).items()}


def quarantined_versions(layout: StoreLayout, key: str) -> list[int]:
    """Versions of case ``key`` that were moved to quarantine (their numbers are never reused)."""
    if not layout.quarantine_dir.is_dir():
        return []
    pattern = re.compile(rf"__{RECORDS_DIR}__{re.escape(key)}__v(\d{{4,}})$")
    return [int(m[1]) for m in (pattern.search(p.name) for p in layout.quarantine_dir.iterdir()) if m]


def verify_locked(layout: StoreLayout, report: VerifyReport, repair: bool,
                  checked: dict[str, RecordCheck]) -> None:
    """The part of a verification that runs under the store lock; ``checked`` holds the unlocked pass's results."""
    to_quarantine: ToQuarantine = []
    whole: list[CorrectionRecord] = []
    on_disk = scan_record_dirs(layout)
    known_records = set(on_disk.values())
    for record_id, path in sorted(on_disk.items()):
        report.records_checked += 1
        # Records committed since the unlocked pass are checked now.
        metadata, problem = checked[record_id] if record_id in checked else check_record(record_id, path)
        if problem or metadata is None:
            problem = problem or "unreadable"
            report.problems.append(StoreProblem(ProblemKind.CORRUPT_RECORD, str(path), problem, record_id))
            to_quarantine.append((path, ProblemKind.CORRUPT_RECORD, problem))
        else:
            report.records_ok += 1
            whole.append(record_from_metadata(metadata, path))
    _find_strays(layout, report, known_records, to_quarantine)
    _find_leftovers(layout, report, to_quarantine)
    index_ok = _check_index(layout, report, set(on_disk))
    if not repair:
        return
    for path, kind, reason in to_quarantine:
        moved = _quarantine(layout, path, kind, reason)
        if moved:
            report.quarantined.append(str(moved))
    if not index_ok or to_quarantine:
        rewrite_index(layout, sorted_records(whole))
        report.index_rebuilt = True


def _find_strays(layout: StoreLayout, report: VerifyReport, known_records: set[Path],
                 to_quarantine: ToQuarantine) -> None:
    expected_root = {MARKER_FILE, LOCK_FILE, INDEX_FILE, RECORDS_DIR, TMP_DIR, QUARANTINE_DIR}
    for entry in sorted(layout.root.iterdir()):
        if entry.name in expected_root:
            continue
        if re.match(rf"^\.({re.escape(INDEX_FILE)}|{re.escape(MARKER_FILE)})\..+\.tmp$", entry.name):
            detail = "temporary file of an interrupted index or marker update"
            report.problems.append(StoreProblem(ProblemKind.INCOMPLETE_WRITE, str(entry), detail))
            to_quarantine.append((entry, ProblemKind.INCOMPLETE_WRITE, detail))
        else:
            report.problems.append(StoreProblem(ProblemKind.UNKNOWN_ENTRY, str(entry), "unexpected in the store"))
            to_quarantine.append((entry, ProblemKind.UNKNOWN_ENTRY, "unexpected in the store"))
    if not layout.records_dir.is_dir():
        return
    for case_dir in sorted(layout.records_dir.iterdir()):
        children = sorted(case_dir.iterdir()) if case_dir.is_dir() and KEY_RE.match(case_dir.name) else [case_dir]
        for entry in children:
            if entry not in known_records:
                detail = "not a record folder (<case_key>/vNNNN)"
                report.problems.append(StoreProblem(ProblemKind.UNKNOWN_ENTRY, str(entry), detail))
                to_quarantine.append((entry, ProblemKind.UNKNOWN_ENTRY, detail))


def lock_is_held(path: Path) -> bool:
    """True while another writer (in any process) holds the lock on ``path``."""
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:  # gone or unreadable meanwhile: nobody holds it
        return False
    lock.release()
    return False


def _find_leftovers(layout: StoreLayout, report: VerifyReport, to_quarantine: ToQuarantine) -> None:
    if not layout.tmp_dir.is_dir():
        return
    entries = sorted(layout.tmp_dir.iterdir())
    names = {e.name for e in entries}
    for entry in entries:
        lock_name = entry.name if entry.name.endswith(".lock") else f"{entry.name}.lock"
        if lock_name in names and lock_is_held(layout.tmp_dir / lock_name):
            if not entry.name.endswith(".lock"):
                report.in_progress.append(str(entry))
            continue
        if entry.name.endswith(".lock"):
            detail = "lock file of a writer that is gone"
        else:
            detail = "partial record of a writer that is gone"
        report.problems.append(StoreProblem(ProblemKind.INCOMPLETE_WRITE, str(entry), detail))
        to_quarantine.append((entry, ProblemKind.INCOMPLETE_WRITE, detail))


def _check_index(layout: StoreLayout, report: VerifyReport, committed_ids: set[str]) -> bool:
    entries = read_index(layout)
    if entries is None:
        detail = "missing, unreadable or torn (e.g. a write interrupted mid-line)"
    elif set(entries) != committed_ids:
        missing = sorted(committed_ids - set(entries))
        extra = sorted(set(entries) - committed_ids)
        detail = f"out of date: {len(missing)} record(s) not indexed {missing[:3]}, " \
                 f"{len(extra)} entry(ies) without a record {extra[:3]}"
    else:
        return True
    report.problems.append(StoreProblem(ProblemKind.INDEX_DAMAGED, str(layout.index_path), detail))
    return False


def _quarantine(layout: StoreLayout, path: Path, kind: ProblemKind, reason: str) -> Optional[Path]:
    layout.quarantine_dir.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    flat = "__".join(path.relative_to(layout.root).parts)
    target = layout.quarantine_dir / f"{stamp}__{kind.value}__{flat}"
    try:
        os.replace(path, target)
    except FileNotFoundError:  # a writer finished and removed it meanwhile
        return None
    reason_data = {"original_path": str(path.relative_to(layout.root)), "kind": kind.value, "reason": reason,
                   "explanation": EXPLANATIONS[kind], "quarantined_utc": stamp}
    write_bytes_synced(Path(f"{target}.reason.json"), json.dumps(reason_data, indent=2).encode("utf-8"))
    fsync_dir(layout.quarantine_dir)
    fsync_dir(path.parent)
    logger.warning("Quarantined %s -> %s (%s)", path, target, reason)
    return target
