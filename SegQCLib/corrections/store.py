"""The corrections store: every expert correction kept whole, versioned and checksummed.

A store is a folder::

    STORE/
      segqc-store.json          marker: {"format": "segqc-corrections", "format_version": 2}
      .lock                     inter-process lock file (never deleted)
      ledger.jsonl              append-only account of every commit and every loss (ledger.py)
      index.jsonl               one JSON line per record (a cache: rebuilt from records/ when damaged)
      records/<case_key>/v0001/ one committed record per folder:
          record.json           metadata (below), with the sha256 of every other file of the record
          image_0000.nii.gz ... the image channels, in model order
          original.nii.gz       the segmentation before review (the QC query M)
          corrected.nii.gz      the segmentation after review (the truth T)
          error_<c>.nii.gz      per-class error map E_c = (M == c) xor (T == c), uint8 0/1
      .tmp/                     records being written (a folder per writer, plus its lock file)
      quarantine/               whatever ``verify --repair`` moved aside, each with a ``.reason.json``

Crash safety: a record is written into a fresh folder under ``.tmp/``, every file and the folder are
fsynced, then, holding the store lock, a version number is allocated, ``record.json`` written and the
folder renamed into ``records/`` in one atomic ``rename``.  A process killed at any point therefore
leaves either the whole record or none of it, plus, at most, a folder in ``.tmp/`` (or a temporary
index file) that :meth:`CorrectionStore.verify` explains and ``verify(repair=True)`` moves to
``quarantine/``.  The index is appended after the rename; when it is missing, torn or stale it is
rebuilt from the records, so it never decides whether a record exists.

Concurrency: the store lock (``filelock.FileLock``: an OS lock on the file, ``flock`` on POSIX, released by
the OS when a process dies, so a killed writer never leaves a stale lock) serialises version allocation,
commit and index updates; the heavy file writing happens outside it.  Each writer also holds a lock on its
own ``.tmp`` folder so ``verify --repair`` never quarantines a write that is still in progress.

Never overwrite: recording a case again adds the next version (``<case_key>/v0002``); version numbers
are never reused, not even those of quarantined or deleted records (the ledger keeps the highest one
committed per case).  A committed record that disappears is reported as lost by every ``verify``.

Never outside: no symbolic link inside the store is followed (:mod:`.links`): commands refuse a store
whose own entries are links, files are opened with ``O_NOFOLLOW``, and ``verify`` lists planted links.

A store that lost its ``segqc-store.json`` (but holds records, an index or a ledger) is refused by every
command with the same advice, ``segqc corrections verify --repair``, which writes a new marker.

Names (case keys, reviewer names, record ids) are explained in :mod:`.names`; the other modules of this
package: ``records`` (one record), ``inputs`` (validating a new correction), ``index`` (the index),
``verify`` (verify and repair), ``ledger``, ``links``, ``quarantine``, and :mod:`SegQCLib.files` (checksums,
fsync, verified atomic writes).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from filelock import FileLock, Timeout

from .. import __version__
from ..errors import InputError, ResourceError, SegQCError, WriteError
from ..files import fsync_dir, read_bytes, sha256_file, write_bytes_atomic, write_bytes_synced
from ..io.image_files import write_array
from ..io.volumes import LabelMap, Volume
from ..quality.metrics import error_maps
from .index import index_line, read_index, records_from_disk, rewrite_index, scan_record_dirs
from .inputs import prepare_correction
from .ledger import append_ledger, committed_entry, read_ledger, start_ledger
from .links import StoreLinkError, link_advice, refuse_links
from .names import (
    CORRECTED_FILE,
    ERROR_FILE_PATTERN,
    IMAGE_FILE_PATTERN,
    LEDGER_FILE,
    LOCK_FILE,
    MARKER_FILE,
    ORIGINAL_FILE,
    QUARANTINE_DIR,
    RECORD_FILE,
    RECORDS_DIR,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    TMP_DIR,
    VERSION_RE,
    StoreLayout,
    format_record_id,
    version_dir_name,
)
from .quarantine import quarantine_root_links, quarantined_versions
from .records import (
    CorrectionRecord,
    RecordMetadata,
    check_record_files,
    metadata_digest,
    read_record_metadata,
    record_from_index_entry,
    record_from_metadata,
    sorted_records,
)
from .verify import EXPLANATIONS, ProblemKind, StoreProblem, VerifyReport, check_records, verify_locked

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

# How long a writer waits for another writer's commit before giving up (commits take milliseconds).
LOCK_TIMEOUT_S = 120.0

# Test seam: called with the name of each step of ``add`` so tests can SIGKILL a writer at that step.
_crash_hook: Optional[Callable[[str], None]] = None


def _checkpoint(step: str) -> None:
    if _crash_hook is not None:
        _crash_hook(step)


def _storage_error(exc: Union[OSError, WriteError], root: Path, action: str) -> SegQCError:
    tail = "Nothing was recorded: the store and your segmentation files are unchanged."
    if isinstance(exc, WriteError):
        return WriteError(f"Cannot {action} in {root}: {exc}. {tail} Free some space or check the disk, then record "
                          "again.")
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceError(f"Cannot {action} in {root}: the disk is full ({reason}). {tail} "
                             "Free some space or use a store on another disk, then record again.")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return SegQCError(f"Cannot {action} in {root}: the folder is read-only or not writable ({reason}). "
                          f"{tail} Choose a writable store folder.")
    return SegQCError(f"Cannot {action} in {root}: {reason} ({exc}). {tail}")


def _drop_lock(lock: FileLock) -> None:
    """Delete a writer's lock file, then release it (idempotent): a lock file left in ``.tmp`` means a writer died."""
    with contextlib.suppress(OSError):
        Path(lock.lock_file).unlink()
    lock.release()


def _compact_image(array: np.ndarray) -> np.ndarray:
    """Integer-valued images (most CT/MRI) are stored as int16/int32: lossless and half the size of float32."""
    if array.size and np.all(np.mod(array, 1) == 0):
        low, high = float(array.min()), float(array.max())
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= low and high <= info.max:
                return array.astype(dtype)
    return array.astype(np.float32, copy=False)


class CorrectionStore(StoreLayout):
    """A folder of correction records; see the module docstring for layout and guarantees.

    Its paths (``root``, ``records_dir``, ``tmp_dir``, ``quarantine_dir``, ``index_path``,
    ``record_path(record_id)``) come from :class:`StoreLayout`.
    """

    # --- creation and locking ----------------------------------------------------------------------
    def is_store(self) -> bool:
        try:  # never through a link
            data = json.loads(read_bytes(self.marker_path, follow_links=False))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("format") == STORE_FORMAT

    def holds_store_data(self) -> bool:
        """True when the folder holds what only an existing store has (a ledger, an index or records): a store
        whose marker is gone, not one that another process is creating right now."""
        if any(os.path.lexists(p) for p in (self.ledger_path, self.index_path)):
            return True
        return any(folder.is_dir() and not folder.is_symlink() and any(folder.iterdir())
                   for folder in (self.records_dir, self.quarantine_dir))

    def marker_advice(self) -> str:
        return (f"{self.root} holds a corrections store whose {MARKER_FILE} marker is missing or damaged. Run "
                f"`segqc corrections verify --repair --store {self.root}` to write a new one; until then SegQC "
                "neither reads nor writes this store.")

    def _require_store(self) -> None:
        if not self.root.is_dir():
            raise InputError(f"Corrections store not found: {self.root}")
        refuse_links(self)
        if not self.is_store():
            if self.holds_store_data():
                raise InputError(self.marker_advice())
            raise InputError(f"{self.root} is not a SegQC corrections store (no valid {MARKER_FILE})")

    def _ensure_created(self) -> None:
        if self.root.is_dir():
            refuse_links(self)
        if not self.is_store():
            if self.root.is_dir() and self.holds_store_data():
                with self._locked():  # another process may be creating it, between its ledger and its marker
                    if not self.is_store():
                        raise InputError(self.marker_advice())
            else:
                self._create()
        refuse_links(self)
        self.tmp_dir.mkdir(exist_ok=True)
        self.records_dir.mkdir(exist_ok=True)

    def _create(self) -> None:
        """Make a new store; safe when several processes create the same one at once (the marker commits it)."""

        def refuse_if_foreign() -> None:
            if self.is_store():  # another process finished creating it meanwhile
                return
            if self.root.exists() and (not self.root.is_dir() or not _only_store_entries(self.root)):
                raise InputError(f"{self.root} exists and is not a SegQC corrections store; "
                                 "choose an empty or new folder for the store")

        refuse_if_foreign()  # before creating the lock file: never write into somebody else's folder
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if self.is_store():
                return
            refuse_if_foreign()
            for folder in (self.records_dir, self.tmp_dir, self.quarantine_dir):
                folder.mkdir(exist_ok=True)
            if not os.path.lexists(self.ledger_path):
                start_ledger(self, [], "new store")
            self._write_marker()

    def _write_marker(self, note: Optional[str] = None) -> None:
        marker = {"format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION, "created_by": f"segqc {__version__}"}
        if note:
            marker["note"] = note
        write_bytes_atomic(self.marker_path, json.dumps(marker, indent=2).encode("utf-8"), sync_dir=True)

    @contextlib.contextmanager
    def _locked(self, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        if os.path.islink(self.lock_path):  # FileLock would open (and truncate) what the link points to
            raise StoreLinkError(f"{self.lock_path} is a symbolic link. {link_advice(self.root)}")
        lock = FileLock(str(self.lock_path))
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout as exc:
            raise SegQCError(f"Corrections store {self.root} is busy: another process held its lock for "
                             f"{timeout_s:.0f} s. Try again when the other SegQC process has finished.") from exc
        try:
            yield
        finally:
            lock.release()

    # --- adding ------------------------------------------------------------------------------------
    def add(
        self,
        case_id: str,
        images: Sequence[Union[Volume, PathLike]],
        original: Union[LabelMap, PathLike],
        corrected: Union[LabelMap, PathLike],
        reviewer: Optional[str] = None,
        qc_report: Optional[dict[str, Any]] = None,
        model_info: Optional[dict[str, Any]] = None,
        reviewed_boxes: Optional[list] = None,
        review_duration_s: Optional[float] = None,
        rating: Optional[str] = None,
    ) -> CorrectionRecord:
        """Record one correction as a new version of ``case_id``; returns the committed record.

        Inputs are validated before anything is written (one voxel grid for images and both masks,
        integer labels).  Input files and arrays are only read.
        """
        prepared = prepare_correction(case_id, images, original, corrected, reviewer, qc_report, model_info,
                                      reviewed_boxes, review_duration_s, rating)
        try:
            self._ensure_created()
        except (OSError, WriteError) as exc:
            raise _storage_error(exc, self.root, "create the corrections store") from exc
        return self._write_record(prepared.key, prepared.volumes, prepared.original, prepared.corrected,
                                  prepared.labels, prepared.draft)

    def _write_record(self, key: str, volumes: list[Volume], original: LabelMap, corrected: LabelMap,
                      labels: list[int], draft: dict[str, Any]) -> CorrectionRecord:
        name = f"{key}.{uuid.uuid4().hex}"
        work = self.tmp_dir / name
        writer_lock = FileLock(str(self.tmp_dir / f"{name}.lock"))
        committed = False
        try:
            refuse_links(self)
            writer_lock.acquire(timeout=0)  # a fresh name: nobody else can hold it
            work.mkdir()
            _checkpoint("tmp_created")
            files = self._write_payload(work, volumes, original, corrected, labels)
            _checkpoint("files_written")
            fsync_dir(work)
            with self._locked():
                case_dir = self.records_dir / key
                refuse_links(self, [case_dir])
                self._ensure_ledger()
                version = self._next_version(key)
                record_id = format_record_id(key, version)
                metadata = RecordMetadata(
                    record_id=record_id, version=version,
                    created_utc=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                    image_files=[IMAGE_FILE_PATTERN.format(channel=i) for i in range(len(volumes))],
                    original_file=ORIGINAL_FILE, corrected_file=CORRECTED_FILE,
                    error_files={str(c): ERROR_FILE_PATTERN.format(label=c) for c in labels},
                    files=files, **draft)
                data = asdict(metadata)
                data["metadata_sha256"] = metadata_digest(data)
                write_bytes_synced(work / RECORD_FILE, json.dumps(data, indent=2, allow_nan=False).encode("utf-8"))
                fsync_dir(work)
                _checkpoint("metadata_written")
                created_case_dir = not case_dir.exists()
                case_dir.mkdir(exist_ok=True)
                final = case_dir / version_dir_name(version)
                try:
                    os.replace(work, final)
                except OSError:
                    if created_case_dir:
                        with contextlib.suppress(OSError):
                            case_dir.rmdir()
                    raise
                committed = True
                # The work folder is gone (renamed): drop its lock now so a kill from here on leaves nothing in .tmp.
                _drop_lock(writer_lock)
                record = record_from_metadata(metadata, final)
                self._after_commit(case_dir, record, data["metadata_sha256"])
        except (OSError, WriteError) as exc:
            if not committed:
                shutil.rmtree(work, ignore_errors=True)
                raise _storage_error(exc, self.root, "record the correction") from exc
            raise
        except BaseException:
            if not committed:
                shutil.rmtree(work, ignore_errors=True)
            raise
        finally:
            _drop_lock(writer_lock)
        logger.info("Recorded correction %s in %s", record.record_id, self.root)
        return record

    def _after_commit(self, case_dir: Path, record: CorrectionRecord, metadata_sha256: str) -> None:
        """Make the rename durable, enter it in the ledger and the index; the record is already whole, so
        failures here only warn (verify reports what is missing and --repair adds it)."""
        _checkpoint("committed")
        try:
            fsync_dir(case_dir)
            fsync_dir(self.records_dir)
            append_ledger(self, [committed_entry(record.record_id, record.case_key, record.version,
                                                 record.created_utc, record.reviewer, metadata_sha256)])
            fd = os.open(str(self.index_path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o666)
            with os.fdopen(fd, "ab") as handle:
                handle.write(index_line(record).encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            _checkpoint("indexed")
        except OSError as exc:
            logger.warning("Record %s is committed but the ledger or index could not be updated (%s); "
                           "`segqc corrections verify --repair` completes them", record.record_id, exc)

    def _ensure_ledger(self) -> None:
        """Start the ledger of a store made before it (call under the lock): from the records on disk and the index
        (an indexed record that is gone is then known, and reported, as lost)."""
        if os.path.lexists(self.ledger_path):
            return
        entries: dict[str, dict[str, Any]] = {}
        for record_id, entry in (read_index(self) or {}).items():
            with contextlib.suppress(KeyError, ValueError, TypeError):
                entries[record_id] = committed_entry(record_id, entry["case_key"], int(entry["version"]),
                                                     entry.get("created_utc", ""), entry.get("reviewer"), None)
        for record_id, path in scan_record_dirs(self).items():
            with contextlib.suppress(OSError, ValueError, AttributeError):
                raw = json.loads(read_bytes(path / RECORD_FILE, follow_links=False))
                entries[record_id] = committed_entry(record_id, raw["case_key"], int(raw["version"]),
                                                     raw.get("created_utc", ""), raw.get("reviewer"),
                                                     raw.get("metadata_sha256"))
        start_ledger(self, [entries[r] for r in sorted(entries)], "started for a store made before the ledger")

    def _write_payload(self, work: Path, volumes: list[Volume], original: LabelMap, corrected: LabelMap,
                       labels: list[int]) -> dict[str, dict[str, Any]]:
        geometry = volumes[0].geometry
        written: list[Path] = []
        for channel, volume in enumerate(volumes):
            written.append(write_array(work / IMAGE_FILE_PATTERN.format(channel=channel),
                                       _compact_image(volume.array), geometry))
        written.append(write_array(work / ORIGINAL_FILE, original.array, geometry))
        written.append(write_array(work / CORRECTED_FILE, corrected.array, geometry))
        for label, error in error_maps(original.array, corrected.array, labels).items():
            written.append(write_array(work / ERROR_FILE_PATTERN.format(label=label), error.astype(np.uint8), geometry))
        return {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in written}

    def _next_version(self, key: str) -> int:
        """One more than any version this case ever had: committed (the ledger, the index), on disk or quarantined,
        even if the record is gone since (call under the lock)."""
        used = [0, *quarantined_versions(self, key), read_ledger(self).max_version(key)]
        used += [int(e["version"]) for e in (read_index(self) or {}).values() if e.get("case_key") == key]
        case_dir = self.records_dir / key
        if case_dir.is_dir() and not case_dir.is_symlink():
            used += [int(m[1]) for m in (VERSION_RE.match(p.name) for p in case_dir.iterdir()) if m]
        return max(used) + 1

    # --- reading -----------------------------------------------------------------------------------
    def list(self) -> list[CorrectionRecord]:
        """Every committed record (sorted by case key, then version), from the index when it is consistent."""
        self._require_store()
        entries = read_index(self)
        on_disk = scan_record_dirs(self)
        if entries is not None and set(entries) == set(on_disk):
            self._warn_lost(on_disk)
            return sorted_records([record_from_index_entry(e, on_disk[e["record_id"]]) for e in entries.values()])
        try:
            with self._locked():
                self._ensure_ledger()  # before the index forgets a record that is gone
                records, broken = records_from_disk(self)
                rewrite_index(self, records)
            logger.info("Rebuilt the index of %s from %d records", self.root, len(records))
        except (OSError, SegQCError) as exc:  # read-only store: list from the records without saving an index
            logger.warning("Index of %s is stale and could not be rewritten (%s); listing records directly",
                           self.root, exc)
            records, broken = records_from_disk(self)
        for record_id, reason in broken.items():
            logger.warning("Record %s is damaged and not listed (%s); run `segqc corrections verify`", record_id,
                           reason)
        self._warn_lost(on_disk)
        return records

    def lost_records(self, on_disk: Optional[dict[str, Path]] = None) -> list[str]:
        """Record ids the ledger lists as committed that are no longer in ``records/``."""
        on_disk = scan_record_dirs(self) if on_disk is None else on_disk
        try:
            committed = read_ledger(self).committed
        except SegQCError:
            return []
        return sorted(set(committed) - set(on_disk))

    def _warn_lost(self, on_disk: dict[str, Path]) -> None:
        lost = self.lost_records(on_disk)
        if lost:
            logger.warning("%d committed record(s) of %s are lost (e.g. %s); `segqc corrections verify` says more",
                           len(lost), self.root, ", ".join(lost[:3]))

    def load(self, record_id: str, check: bool = True) -> CorrectionRecord:
        """One record with its metadata; with ``check`` every file's checksum is verified first."""
        self._require_store()
        path = self.record_path(record_id)
        if not path.is_dir():
            raise InputError(f"No correction record {record_id!r} in {self.root}")
        metadata = read_record_metadata(path)
        if metadata.record_id != record_id:
            raise InputError(f"{path / RECORD_FILE} names {metadata.record_id!r}, not {record_id!r}")
        if check:
            problem = check_record_files(path, metadata)
            if problem:
                raise InputError(f"Correction record {record_id} is damaged: {problem}. "
                                 "Run `segqc corrections verify` for details.")
        return record_from_metadata(metadata, path)

    def latest(self) -> list[CorrectionRecord]:
        """The newest version of every case."""
        newest: dict[str, CorrectionRecord] = {}
        for record in self.list():
            newest[record.case_key] = record  # list is sorted by version within a case
        return list(newest.values())

    # --- verification ------------------------------------------------------------------------------
    def verify(self, repair: bool = False) -> VerifyReport:
        """Check every record's files against its checksums, find leftovers of interrupted writes and check
        the index.  With ``repair``, move whatever is broken or left over to ``quarantine/`` (nothing is
        deleted) and rebuild the index."""
        report = VerifyReport()
        own_links = [name for name in (MARKER_FILE, LEDGER_FILE) if os.path.islink(self.root / name)]
        if not self.root.is_dir() or not (self.is_store() or self.holds_store_data() or own_links):
            report.problems.append(StoreProblem(ProblemKind.NOT_A_STORE, str(self.root), "cannot verify"))
            return report
        if repair:  # links among the store's own entries first: the lock itself may be one
            for moved in quarantine_root_links(self, EXPLANATIONS[ProblemKind.PLANTED_LINK]):
                report.quarantined.append(str(moved))
                report.problems.append(StoreProblem(ProblemKind.PLANTED_LINK, moved.name.split("__")[-1],
                                                    "a symbolic link in place of the store's own entry"))
        # Committed records never change, so the slow part (hashing every file) runs without the lock and
        # writers (a Slicer session recording a correction) are not kept waiting; the rest runs under it.
        checked = check_records(self)
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self._locked())
            except (OSError, StoreLinkError) as exc:
                if repair and isinstance(exc, StoreLinkError):
                    raise
                if repair:
                    raise _storage_error(exc, self.root, "lock the store for repair") from exc
                logger.warning("Verifying %s without its lock (%s)", self.root, exc)
            verify_locked(self, report, repair,
                          checked, lambda: self._write_marker("written by verify --repair: the marker was lost"))
        return report


def _only_store_entries(root: Path) -> bool:
    """True when ``root`` holds nothing but what a store being created by another process may contain."""
    allowed = {LOCK_FILE, RECORDS_DIR, TMP_DIR, QUARANTINE_DIR, LEDGER_FILE}
    return all(p.name in allowed or re.match(rf"^\.({re.escape(MARKER_FILE)}|{re.escape(LEDGER_FILE)})\..+\.tmp$",
                                             p.name)
               for p in root.iterdir())
