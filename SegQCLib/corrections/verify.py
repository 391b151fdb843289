"""Checking a whole corrections store and repairing it by moving whatever is broken to ``quarantine/``.

Nothing is ever deleted: a damaged record, the leftovers of an interrupted write, a foreign file or a
planted symbolic link is renamed into ``quarantine/`` (:mod:`.quarantine`) with a ``.reason.json`` beside
it, and the index is rebuilt from the records that remain.  What cannot be repaired is said every time:
a record the ledger (:mod:`.ledger`) lists as committed that is no longer whole in ``records/`` is
**lost**; a repair records the loss in the ledger, and from then on every ``verify`` reports it and
fails, until the record's folder is put back.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from filelock import FileLock, Timeout

from ..errors import SegQCError
from ..files import NotARegularFileError, describe_path, read_bytes
from .index import read_index, rewrite_index, scan_record_dirs
from .ledger import Ledger, append_ledger, committed_entry, lost_entry, read_ledger, start_ledger
from .links import planted_links
from .names import (
    INDEX_FILE,
    KEY_RE,
    LEDGER_FILE,
    LOCK_FILE,
    MARKER_FILE,
    QUARANTINE_DIR,
    RECORD_FILE,
    RECORDS_DIR,
    STORE_FORMAT,
    TMP_DIR,
    StoreLayout,
    parse_record_id,
)
from .quarantine import quarantine
from .records import CorrectionRecord, RecordMetadata, check_record, record_from_metadata, sorted_records

logger = logging.getLogger(__name__)

# A record's result from a pass without the lock: (metadata, None) when whole, else (metadata or None, problem).
RecordCheck = tuple[Optional[RecordMetadata], Optional[str]]


class ProblemKind(str, Enum):
    CORRUPT_RECORD = "corrupt_record"
    LOST_RECORD = "lost_record"
    INCOMPLETE_WRITE = "incomplete_write"
    UNKNOWN_ENTRY = "unknown_entry"
    PLANTED_LINK = "planted_link"
    INDEX_DAMAGED = "index_damaged"
    LEDGER_INCOMPLETE = "ledger_incomplete"
    LEDGER_DAMAGED = "ledger_damaged"
    MARKER_MISSING = "marker_missing"
    NOT_A_STORE = "not_a_store"


EXPLANATIONS = {
    ProblemKind.CORRUPT_RECORD: "a committed record whose files are missing, changed or damaged",
    ProblemKind.LOST_RECORD: "a record that was committed but is no longer whole in records/ (deleted, moved away, or "
                             "damaged and quarantined); the store cannot restore it: put the record's folder back "
                             "from a backup. Until then every verify reports the loss",
    ProblemKind.INCOMPLETE_WRITE: "left by an `add` that was interrupted (process killed or crashed) before it "
                                  "committed; it is not a record and no committed record is affected",
    ProblemKind.UNKNOWN_ENTRY: "not created by SegQC",
    ProblemKind.PLANTED_LINK: "a symbolic link; SegQC never follows links inside a store (one could make it read or "
                              "write outside the store); repair moves the link itself, not what it points to, to "
                              "quarantine/",
    ProblemKind.INDEX_DAMAGED: "the index is a cache of records/ and is rebuilt from it",
    ProblemKind.LEDGER_INCOMPLETE: "a committed record the ledger does not list (a writer was interrupted right after "
                                   "committing, or an older SegQC wrote it); repair adds it",
    ProblemKind.LEDGER_DAMAGED: "the ledger (the account of every committed record) is missing or damaged; repair "
                                "starts a new one from its readable lines, the records and the index, so a record "
                                "lost before then may go unnoticed",
    ProblemKind.MARKER_MISSING: f"the store's {MARKER_FILE} marker is missing or damaged; every other command "
                                "refuses the store until `segqc corrections verify --repair` writes a new one",
    ProblemKind.NOT_A_STORE: f"the folder has no {MARKER_FILE} marker and holds no corrections store",
}
# What a repair cannot make whole: a store with one of these stays "not whole" after it.
UNREPAIRABLE = {ProblemKind.CORRUPT_RECORD, ProblemKind.LOST_RECORD, ProblemKind.NOT_A_STORE}

# What a pass found to move aside: (path, kind of problem, what is wrong, record id or None).
ToQuarantine = list[tuple[Path, ProblemKind, str, Optional[str]]]


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
    notes: list[str] = field(default_factory=list)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        """Whole: nothing wrong (after a repair: nothing left that a repair cannot fix)."""
        if self.repaired:
            return not self.unrepairable
        return not self.problems

    @property
    def unrepairable(self) -> list[StoreProblem]:
        return [p for p in self.problems if p.kind in UNREPAIRABLE]

    @property
    def lost(self) -> list[StoreProblem]:
        return [p for p in self.problems if p.kind is ProblemKind.LOST_RECORD]

    def to_text(self) -> str:
        summary = f"{self.records_ok} of {self.records_checked} records whole"
        if self.lost:
            summary += f"; {len(self.lost)} record(s) LOST: the store is not whole"
        lines = [summary]
        lines += [f"  problem: {p.describe()}" for p in self.problems]
        lines += [f"  write in progress (left alone): {p}" for p in self.in_progress]
        lines += [f"  quarantined: {p}" for p in self.quarantined]
        lines += [f"  note: {n}" for n in self.notes]
        if self.index_rebuilt:
            lines.append("  index rebuilt from records")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["lost"] = [p.record_id for p in self.lost]
        for problem in data["problems"]:
            problem["kind"] = problem["kind"].value
        return data


def check_records(layout: StoreLayout) -> dict[str, RecordCheck]:
    """Check every committed record's files against its checksums (the slow part: it hashes every file)."""
    return {record_id: check_record(record_id, path) for record_id, path in scan_record_dirs(layout).items()}


def marker_state(layout: StoreLayout) -> Optional[str]:
    """None when the marker is a valid store marker, else what is wrong with it."""
    if os.path.islink(layout.marker_path):
        return f"{MARKER_FILE} is {describe_path(layout.marker_path)}"
    try:
        data = json.loads(read_bytes(layout.marker_path, follow_links=False))
    except FileNotFoundError:
        return f"{MARKER_FILE} is missing"
    except (OSError, ValueError, NotARegularFileError):
        return f"{MARKER_FILE} is unreadable or not JSON"
    if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
        return f"{MARKER_FILE} does not name a {STORE_FORMAT} store"
    return None


def _record_digest(path: Path) -> Optional[str]:
    try:
        return json.loads(read_bytes(path / RECORD_FILE, follow_links=False)).get("metadata_sha256")
    except (OSError, ValueError, AttributeError):
        return None


def verify_locked(layout: StoreLayout, report: VerifyReport, repair: bool, checked: dict[str, RecordCheck],
                  write_marker: Any) -> None:
    """The part of a verification that runs under the store lock; ``checked`` holds the unlocked pass's results.
    ``write_marker()`` writes a new marker (repair of a store whose marker is gone)."""
    report.repaired = repair
    marker_problem = marker_state(layout)
    if marker_problem:
        report.problems.append(StoreProblem(ProblemKind.MARKER_MISSING, str(layout.marker_path), marker_problem))
    ledger, ledger_problem = _read_ledger_checked(layout, report)
    index_entries = read_index(layout)
    known = _known_commits(ledger, index_entries)
    to_quarantine: ToQuarantine = []
    whole: list[CorrectionRecord] = []
    on_disk = scan_record_dirs(layout)
    for record_id, path in sorted(on_disk.items()):
        report.records_checked += 1
        # Records committed since the unlocked pass are checked now.
        metadata, problem = checked[record_id] if record_id in checked else check_record(record_id, path)
        committed = known.get(record_id, {}).get("metadata_sha256")
        if not problem and metadata is not None and committed and _record_digest(path) != committed:
            problem = "its record.json is not the one committed under this id (checksum differs from the ledger's)"
        if problem or metadata is None:
            problem = problem or "unreadable"
            report.problems.append(StoreProblem(ProblemKind.CORRUPT_RECORD, str(path), problem, record_id))
            to_quarantine.append((path, ProblemKind.CORRUPT_RECORD, problem, record_id))
        else:
            report.records_ok += 1
            whole.append(record_from_metadata(metadata, path))
    lost_now = _find_lost(layout, report, ledger, known, set(on_disk))
    unledgered = _find_unledgered(report, ledger, whole, layout)
    _find_links(layout, report, to_quarantine)
    _find_strays(layout, report, set(on_disk.values()), to_quarantine)
    _find_leftovers(layout, report, to_quarantine)
    index_ok = _check_index(layout, report, index_entries, set(on_disk))
    if not repair:
        return
    if marker_problem:
        write_marker()
        report.notes.append(f"wrote a new {MARKER_FILE}")
    if ledger_problem is not None or not ledger.exists:
        _restart_ledger(layout, report, ledger, known, on_disk, legacy=ledger_problem is None)
        ledger = read_ledger(layout)
    losses = [lost_entry(record_id, detail) for record_id, detail in lost_now]
    for path, kind, reason, record_id in to_quarantine:
        moved = quarantine(layout, path, kind.value, reason, EXPLANATIONS[kind])
        if moved:
            report.quarantined.append(str(moved))
            if kind is ProblemKind.CORRUPT_RECORD and record_id is not None:
                losses.append(lost_entry(record_id, f"damaged: {reason}", str(moved.relative_to(layout.root))))
                if record_id not in ledger.committed:  # a record committed before the ledger: account for it too
                    known_entry = known.get(record_id) or _entry_for(record_id, None, None)
                    unledgered.append({**known_entry, "event": "committed"})
    append_ledger(layout, [e for e in unledgered if e["record_id"] not in ledger.committed] + losses)
    if not index_ok or to_quarantine:
        rewrite_index(layout, sorted_records(whole))
        report.index_rebuilt = True


def _entry_for(record_id: str, created_utc: Optional[str], reviewer: Optional[str],
               metadata_sha256: Optional[str] = None) -> dict[str, Any]:
    key, version = parse_record_id(record_id)
    return committed_entry(record_id, key, version, created_utc or "", reviewer, metadata_sha256)


def _known_commits(ledger: Ledger, index_entries: Optional[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Every record known to have been committed: the ledger's, and the index's (which only lists commits)."""
    known = dict(ledger.committed)
    for record_id, entry in (index_entries or {}).items():
        try:
            known.setdefault(record_id, _entry_for(record_id, entry.get("created_utc"), entry.get("reviewer")))
        except SegQCError:
            continue  # not a record id: the index is damaged (reported there)
    return known


def _read_ledger_checked(layout: StoreLayout, report: VerifyReport) -> tuple[Ledger, Optional[str]]:
    """The ledger and what is wrong with it (None: fine, or a store from before the ledger)."""
    try:
        ledger = read_ledger(layout)
    except SegQCError as exc:  # a link or special file (reported as a planted link)
        return Ledger(), str(exc)
    problem = None
    if not ledger.exists:
        if _marker_version(layout) >= 2:
            problem = f"{LEDGER_FILE} is missing"
        else:
            report.notes.append(f"the store was made before the ledger ({LEDGER_FILE}); the next add or "
                                "`verify --repair` starts one")
    elif ledger.damaged_lines:
        problem = f"{ledger.damaged_lines} line(s) of {LEDGER_FILE} are damaged"
    if problem:
        report.problems.append(StoreProblem(ProblemKind.LEDGER_DAMAGED, str(layout.ledger_path), problem))
    return ledger, problem


def _marker_version(layout: StoreLayout) -> int:
    try:
        return int(json.loads(read_bytes(layout.marker_path, follow_links=False)).get("format_version", 1))
    except (OSError, ValueError, AttributeError, TypeError):
        return 2  # no readable marker: expect what a current store has


def _find_lost(layout: StoreLayout, report: VerifyReport, ledger: Ledger, known: dict[str, dict[str, Any]],
               on_disk: set[str]) -> list[tuple[str, str]]:
    """LOST_RECORD for every known commit that is not in records/; returns those not yet recorded as lost."""
    new = []
    for record_id in sorted(set(known) - on_disk):
        entry = known[record_id]
        about = f"committed {entry.get('created_utc') or 'before the ledger'}" + (
            f" by {entry['reviewer']}" if entry.get("reviewer") else "")
        loss = ledger.lost.get(record_id)
        if loss is not None:
            where = f", quarantined as {loss['quarantined_as']}" if loss.get("quarantined_as") else ""
            detail = f"{about}; lost ({loss.get('detail')}{where}), recorded {loss.get('detected_utc')}"
        else:
            detail = f"{about}; its folder is missing from {RECORDS_DIR}/ (deleted or moved outside SegQC)"
            new.append((record_id, "missing from records/ (deleted or moved outside SegQC)"))
        path = layout.record_path(record_id)
        report.problems.append(StoreProblem(ProblemKind.LOST_RECORD, str(path), detail, record_id))
    return new


def _find_unledgered(report: VerifyReport, ledger: Ledger, whole: list[CorrectionRecord],
                     layout: StoreLayout) -> list[dict[str, Any]]:
    """Whole records the ledger does not list (reported only when there is a ledger); their commit lines."""
    missing = [r for r in whole if r.record_id not in ledger.committed]
    if ledger.exists and missing:
        report.problems.append(StoreProblem(
            ProblemKind.LEDGER_INCOMPLETE, str(layout.ledger_path),
            f"{len(missing)} committed record(s) not in the ledger {[r.record_id for r in missing[:3]]}"))
    return [_entry_for(r.record_id, r.created_utc, r.reviewer, _record_digest(r.path)) for r in missing]


def _restart_ledger(layout: StoreLayout, report: VerifyReport, ledger: Ledger, known: dict[str, dict[str, Any]],
                    on_disk: dict[str, Path], legacy: bool) -> None:
    """A new ledger from the old one's readable lines, the index and the records (a damaged one is quarantined);
    ``legacy``: the store was made before the ledger."""
    if os.path.lexists(layout.ledger_path):
        moved = quarantine(layout, layout.ledger_path, ProblemKind.LEDGER_DAMAGED.value, "damaged or not a file",
                           EXPLANATIONS[ProblemKind.LEDGER_DAMAGED])
        if moved:
            report.quarantined.append(str(moved))
    entries = dict(known)
    for record_id, path in on_disk.items():
        entries.setdefault(record_id, _entry_for(record_id, None, None, _record_digest(path)))
    lines = [entries[r] for r in sorted(entries)]
    lines += [loss for loss in ledger.lost.values()]
    note = ("started by verify --repair for a store made before the ledger" if legacy else
            "restarted by verify --repair: records lost before now may go unnoticed")
    start_ledger(layout, lines, note)
    report.notes.append(f"started {'the' if legacy else 'a new'} {LEDGER_FILE} from {len(entries)} known record(s)")


def _find_links(layout: StoreLayout, report: VerifyReport, to_quarantine: ToQuarantine) -> None:
    for link in planted_links(layout):
        detail = f"is {describe_path(link)}"
        report.problems.append(StoreProblem(ProblemKind.PLANTED_LINK, str(link), detail))
        to_quarantine.append((link, ProblemKind.PLANTED_LINK, detail, None))


def _find_strays(layout: StoreLayout, report: VerifyReport, known_records: set[Path],
                 to_quarantine: ToQuarantine) -> None:
    expected_root = {MARKER_FILE, LOCK_FILE, INDEX_FILE, LEDGER_FILE, RECORDS_DIR, TMP_DIR, QUARANTINE_DIR}
    for entry in sorted(layout.root.iterdir()):
        if entry.name in expected_root or entry.is_symlink():  # links: reported by _find_links
            continue
        if re.match(rf"^\.({re.escape(INDEX_FILE)}|{re.escape(MARKER_FILE)}|{re.escape(LEDGER_FILE)})\..+\.tmp$",
                    entry.name):
            detail = "temporary file of an interrupted index, ledger or marker update"
            report.problems.append(StoreProblem(ProblemKind.INCOMPLETE_WRITE, str(entry), detail))
            to_quarantine.append((entry, ProblemKind.INCOMPLETE_WRITE, detail, None))
        else:
            report.problems.append(StoreProblem(ProblemKind.UNKNOWN_ENTRY, str(entry), "unexpected in the store"))
            to_quarantine.append((entry, ProblemKind.UNKNOWN_ENTRY, "unexpected in the store", None))
    if not layout.records_dir.is_dir() or layout.records_dir.is_symlink():
        return
    for case_dir in sorted(layout.records_dir.iterdir()):
        if case_dir.is_symlink():
            continue
        children = sorted(case_dir.iterdir()) if case_dir.is_dir() and KEY_RE.match(case_dir.name) else [case_dir]
        for entry in children:
            if entry not in known_records and not entry.is_symlink():
                detail = "not a record folder (<case_key>/vNNNN)"
                report.problems.append(StoreProblem(ProblemKind.UNKNOWN_ENTRY, str(entry), detail))
                to_quarantine.append((entry, ProblemKind.UNKNOWN_ENTRY, detail, None))


def lock_is_held(path: Path) -> bool:
    """True while another writer (in any process) holds the lock on ``path`` (never opened through a link)."""
    if os.path.islink(path):
        return False
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
    if not layout.tmp_dir.is_dir() or layout.tmp_dir.is_symlink():
        return
    entries = sorted(e for e in layout.tmp_dir.iterdir() if not e.is_symlink())
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
        to_quarantine.append((entry, ProblemKind.INCOMPLETE_WRITE, detail, None))


def _check_index(layout: StoreLayout, report: VerifyReport, entries: Optional[dict[str, dict[str, Any]]],
                 committed_ids: set[str]) -> bool:
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
