"""The corrections store: every expert correction kept whole, versioned and checksummed.

A store is a folder::

    STORE/
      segqc-store.json          marker: {"format": "segqc-corrections", "format_version": 1}
      .lock                     inter-process lock file (never deleted)
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

Concurrency: the store lock (``fcntl.flock`` on POSIX, ``filelock`` elsewhere; released by the OS when
a process dies, so a killed writer never leaves a stale lock) serialises version allocation, commit and
index updates; the heavy file writing happens outside it.  Each writer also holds a lock on its own
``.tmp`` folder so ``verify --repair`` never quarantines a write that is still in progress.

Never overwrite: recording a case again adds the next version (``<case_key>/v0002``); version numbers
are never reused, not even those of quarantined records.

Names: a case id may be any text of at most :data:`MAX_NAME_LENGTH` characters without control
characters (those are rejected with :class:`InputError`).  Its folder name (``case_key``) keeps
``A-Z a-z 0-9 . _ -``; any other character (``/``, ``\\``, spaces, non-ASCII) and any run of dots
(``..``) becomes ``_``, leading and trailing dots are dropped, and the key then gets ``~`` plus 8 hex
digits of the id's sha256, so distinct ids never share a folder and no id can leave ``records/``.
Reviewer names are validated the same way but only ever stored inside JSON, never in a path.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from . import __version__
from .errors import InputError, ResourceError, SegQCError
from .files import fsync_dir, sha256_file, write_bytes_atomic, write_bytes_synced
from .io import LabelMap, Volume, check_same_geometry, read_image, read_labelmap, validate_label_array, write_array
from .metrics import case_metrics, error_maps
from .report import _clean_floats

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

STORE_FORMAT = "segqc-corrections"
STORE_FORMAT_VERSION = 1
MARKER_FILE = "segqc-store.json"
LOCK_FILE = ".lock"
INDEX_FILE = "index.jsonl"
RECORDS_DIR = "records"
TMP_DIR = ".tmp"
QUARANTINE_DIR = "quarantine"
RECORD_FILE = "record.json"
ORIGINAL_FILE = "original.nii.gz"
CORRECTED_FILE = "corrected.nii.gz"
IMAGE_FILE_PATTERN = "image_{channel:04d}.nii.gz"
ERROR_FILE_PATTERN = "error_{label}.nii.gz"

MAX_NAME_LENGTH = 128
# Room left in a key for the "~" + hash suffix within typical 255-byte file-name limits.
_KEY_STEM_LENGTH = 100
_KEY_HASH_HEX = 8
_SAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_DOT_RUN = re.compile(r"\.{2,}")
_KEY_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._~-]*$")
_VERSION_RE = re.compile(r"^v(\d{4,})$")
_RECORD_ID_RE = re.compile(r"^(?P<key>[A-Za-z0-9_-][A-Za-z0-9._~-]*)/v(?P<version>\d{4,})$")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
# How long a writer waits for another writer's commit before giving up (commits take milliseconds).
LOCK_TIMEOUT_S = 120.0
_LOCK_POLL_S = 0.05

# Test seam: called with the name of each step of ``add`` so tests can SIGKILL a writer at that step.
_crash_hook: Optional[Callable[[str], None]] = None


def _checkpoint(step: str) -> None:
    if _crash_hook is not None:
        _crash_hook(step)


# ----------------------------------------------------------------------------------------------------
# Names


def _check_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{what} must be text, got {type(value).__name__}")
    if not value.strip():
        raise InputError(f"{what} is empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InputError(f"{what} is {len(value)} characters long; at most {MAX_NAME_LENGTH} are allowed")
    bad = [ch for ch in value if unicodedata.category(ch).startswith("C")]
    if bad:
        raise InputError(f"{what} {value!r} contains control or invisible characters ({bad[0]!r}); remove them")
    return value


def case_key(case_id: str) -> str:
    """Folder name of a case id: the id itself when it is already safe, else an escaped, hashed form."""
    case_id = _check_text(case_id, "Case id")
    key = _DOT_RUN.sub("_", _SAFE_KEY_CHARS.sub("_", case_id)).strip(".")
    reserved = key.split(".")[0].upper() in _WINDOWS_RESERVED
    if key != case_id or not key or reserved:
        digest = hashlib.sha256(case_id.encode("utf-8")).hexdigest()[:_KEY_HASH_HEX]
        key = f"{key[:_KEY_STEM_LENGTH] or '_'}~{digest}"
    return key


def clean_reviewer(reviewer: Optional[str]) -> Optional[str]:
    """Reviewer name as stored (stripped), None when not given; raises InputError on unsafe text."""
    if reviewer is None or (isinstance(reviewer, str) and not reviewer.strip()):
        return None
    return _check_text(reviewer, "Reviewer name").strip()


def parse_record_id(record_id: str) -> tuple[str, int]:
    """``"<case_key>/v0003"`` -> (case_key, 3); InputError for anything else (no path can sneak in)."""
    match = _RECORD_ID_RE.match(record_id) if isinstance(record_id, str) else None
    if not match or ".." in record_id:
        raise InputError(f"Not a correction record id: {record_id!r} (expected <case_key>/v0001)")
    return match["key"], int(match["version"])


def format_record_id(key: str, version: int) -> str:
    return f"{key}/v{version:04d}"


# ----------------------------------------------------------------------------------------------------
# Records


@dataclass
class RecordMetadata:
    """Everything ``record.json`` holds about one correction."""

    record_id: str
    case_id: str
    case_key: str
    version: int
    created_utc: str
    reviewer: Optional[str]
    segqc_version: str
    labels: list[int]
    label_names: dict[str, str]
    image_files: list[str]
    original_file: str
    corrected_file: str
    error_files: dict[str, str]
    geometry: dict[str, Any]
    true_metrics: dict[str, Any]
    files: dict[str, dict[str, Any]]
    model: Optional[dict[str, Any]] = None
    qc_prediction: Optional[dict[str, Any]] = None
    reviewed_boxes: list[dict[str, Any]] = field(default_factory=list)
    review_duration_s: Optional[float] = None
    sources: dict[str, Any] = field(default_factory=dict)
    format_version: int = STORE_FORMAT_VERSION

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordMetadata:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _metadata_digest(data: dict[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode("utf-8")).hexdigest()


@dataclass
class CorrectionRecord:
    """One committed correction; ``metadata`` and the arrays are read from disk on demand."""

    record_id: str
    case_id: str
    case_key: str
    version: int
    created_utc: str
    reviewer: Optional[str]
    path: Path
    dice_original_vs_corrected: Optional[float] = None
    _metadata: Optional[RecordMetadata] = field(default=None, repr=False, compare=False)

    @property
    def metadata(self) -> RecordMetadata:
        if self._metadata is None:
            self._metadata = read_record_metadata(self.path)
        return self._metadata

    @property
    def image_paths(self) -> list[Path]:
        return [self.path / name for name in self.metadata.image_files]

    @property
    def original_path(self) -> Path:
        return self.path / self.metadata.original_file

    @property
    def corrected_path(self) -> Path:
        return self.path / self.metadata.corrected_file

    @property
    def error_map_paths(self) -> dict[int, Path]:
        return {int(label): self.path / name for label, name in self.metadata.error_files.items()}

    def read_images(self) -> list[Volume]:
        return [read_image(p) for p in self.image_paths]

    def read_original(self) -> LabelMap:
        return _with_names(read_labelmap(self.original_path), self.metadata.label_names)

    def read_corrected(self) -> LabelMap:
        return _with_names(read_labelmap(self.corrected_path), self.metadata.label_names)

    def read_error_maps(self) -> dict[int, np.ndarray]:
        return {label: read_labelmap(p).array.astype(bool) for label, p in self.error_map_paths.items()}

    def index_entry(self) -> dict[str, Any]:
        return {"record_id": self.record_id, "case_id": self.case_id, "case_key": self.case_key,
                "version": self.version, "created_utc": self.created_utc, "reviewer": self.reviewer,
                "dice_original_vs_corrected": self.dice_original_vs_corrected}


def _with_names(labelmap: LabelMap, names: dict[str, str]) -> LabelMap:
    labelmap.names = {int(k): v for k, v in names.items()}
    return labelmap


def read_record_metadata(record_dir: Path) -> RecordMetadata:
    """Parse and self-check ``record.json``; InputError says what is wrong."""
    path = Path(record_dir) / RECORD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{path} is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path} does not hold a JSON object")
    if data.get("metadata_sha256") != _metadata_digest(data):
        raise InputError(f"{path} was modified or damaged after it was written (metadata checksum mismatch)")
    try:
        return RecordMetadata.from_dict(data)
    except TypeError as exc:
        raise InputError(f"{path} lacks required fields ({exc})") from exc


def _record_from_metadata(metadata: RecordMetadata, path: Path) -> CorrectionRecord:
    return CorrectionRecord(metadata.record_id, metadata.case_id, metadata.case_key, metadata.version,
                            metadata.created_utc, metadata.reviewer, path,
                            metadata.true_metrics.get("dice"), metadata)


# ----------------------------------------------------------------------------------------------------
# Verification report


class ProblemKind(str, Enum):
    CORRUPT_RECORD = "corrupt_record"
    INCOMPLETE_WRITE = "incomplete_write"
    UNKNOWN_ENTRY = "unknown_entry"
    INDEX_DAMAGED = "index_damaged"
    NOT_A_STORE = "not_a_store"


_EXPLANATIONS = {
    ProblemKind.CORRUPT_RECORD: "a committed record whose files are missing, changed or damaged",
    ProblemKind.INCOMPLETE_WRITE: "left by an `add` that was interrupted (process killed or crashed) before it "
                                  "committed; it is not a record and no committed record is affected",
    ProblemKind.UNKNOWN_ENTRY: "not created by SegQC",
    ProblemKind.INDEX_DAMAGED: "the index is a cache of records/ and is rebuilt from it; no record is lost",
    ProblemKind.NOT_A_STORE: "the folder has no segqc-store.json marker",
}


@dataclass
class StoreProblem:
    kind: ProblemKind
    path: str
    detail: str
    record_id: Optional[str] = None

    def describe(self) -> str:
        return f"{self.kind.value}: {self.path}: {self.detail} ({_EXPLANATIONS[self.kind]})"


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


class _ProcessLock:
    """An exclusive inter-process lock on a file, released by the OS if the holder dies."""

    def __init__(self, path: Path):
        self.path = path
        self._handle: Any = None
        self._fallback: Any = None

    def acquire(self, timeout_s: float) -> bool:
        try:
            import fcntl
        except ImportError:  # Windows
            import filelock

            self._fallback = filelock.FileLock(str(self.path))
            try:
                self._fallback.acquire(timeout=timeout_s)
            except filelock.Timeout:
                return False
            return True
        handle = open(self.path, "a+b")  # noqa: SIM115 - kept open while the lock is held
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._handle = handle
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    return False
                time.sleep(_LOCK_POLL_S)
            except OSError:
                handle.close()
                raise

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor drops the flock
            self._handle = None
        if self._fallback is not None:
            self._fallback.release()
            self._fallback = None


def _storage_error(exc: OSError, root: Path, action: str) -> SegQCError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    tail = "Nothing was recorded: the store and your segmentation files are unchanged."
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceError(f"Cannot {action} in {root}: the disk is full ({reason}). {tail} "
                             "Free some space or use a store on another disk, then record again.")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return SegQCError(f"Cannot {action} in {root}: the folder is read-only or not writable ({reason}). "
                          f"{tail} Choose a writable store folder.")
    return SegQCError(f"Cannot {action} in {root}: {reason} ({exc}). {tail}")


# ----------------------------------------------------------------------------------------------------
# Inputs


def _as_volume(image: Union[Volume, PathLike], index: int) -> Volume:
    if isinstance(image, Volume):
        return image
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    raise InputError(f"Image {index + 1} must be a Volume or a file path, got {type(image).__name__}")


def _as_labelmap(seg: Union[LabelMap, PathLike], what: str) -> LabelMap:
    if isinstance(seg, LabelMap):
        return LabelMap(validate_label_array(np.asarray(seg.array), what), seg.geometry, dict(seg.names), seg.path)
    if isinstance(seg, (str, os.PathLike)):
        return read_labelmap(seg)
    raise InputError(f"{what} must be a LabelMap or a file path, got {type(seg).__name__}")


def _compact_image(array: np.ndarray) -> np.ndarray:
    """Integer-valued images (most CT/MRI) are stored as int16/int32: lossless and half the size of float32."""
    if array.size and np.all(np.mod(array, 1) == 0):
        low, high = float(array.min()), float(array.max())
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= low and high <= info.max:
                return array.astype(dtype)
    return array.astype(np.float32, copy=False)


def _json_dict(value: Any, what: str) -> Any:
    if value is None:
        return None
    if hasattr(value, "to_dict") and callable(value.to_dict):
        value = value.to_dict()
    try:
        cleaned = _clean_floats(value)
        json.dumps(cleaned, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} cannot be stored as JSON ({exc})") from exc
    return cleaned


def _model_info(model_info: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    if model_info is None:
        return None
    if not isinstance(model_info, dict):
        raise InputError(f"model_info must be a dict (name, version, sha256, path), got {type(model_info).__name__}")
    info = dict(model_info)
    model_path = info.get("path")
    if model_path and not info.get("sha256") and Path(model_path).is_file():
        info["sha256"] = sha256_file(model_path)
    if "path" in info:
        info["path"] = str(info["path"])
    return _json_dict(info, "model_info")


def _reviewed_boxes(boxes: Optional[list]) -> list[dict[str, Any]]:
    if boxes is None:
        return []
    result = []
    for index, box in enumerate(boxes):
        box = asdict(box) if hasattr(box, "__dataclass_fields__") else box
        if not isinstance(box, dict):
            raise InputError(f"Reviewed box {index} must be a dict (box fields, 'status'), got {type(box).__name__}")
        result.append(_json_dict(box, f"Reviewed box {index}"))
    return result


# ----------------------------------------------------------------------------------------------------
# The store


class CorrectionStore:
    """A folder of correction records; see the module docstring for layout and guarantees."""

    def __init__(self, root: PathLike):
        self.root = Path(root)

    # --- paths -------------------------------------------------------------------------------------
    @property
    def records_dir(self) -> Path:
        return self.root / RECORDS_DIR

    @property
    def tmp_dir(self) -> Path:
        return self.root / TMP_DIR

    @property
    def quarantine_dir(self) -> Path:
        return self.root / QUARANTINE_DIR

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_FILE

    def record_path(self, record_id: str) -> Path:
        key, version = parse_record_id(record_id)
        return self.records_dir / key / f"v{version:04d}"

    # --- creation and locking ----------------------------------------------------------------------
    def is_store(self) -> bool:
        marker = self.root / MARKER_FILE
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("format") == STORE_FORMAT

    def _require_store(self) -> None:
        if not self.root.is_dir():
            raise InputError(f"Corrections store not found: {self.root}")
        if not self.is_store():
            raise InputError(f"{self.root} is not a SegQC corrections store (no valid {MARKER_FILE})")

    def _ensure_created(self) -> None:
        if not self.is_store():
            self._create()
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
            marker = {"format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION,
                      "created_by": f"segqc {__version__}"}
            write_bytes_atomic(self.root / MARKER_FILE, json.dumps(marker, indent=2).encode("utf-8"), sync_dir=True)

    @contextlib.contextmanager
    def _locked(self, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        lock = _ProcessLock(self.root / LOCK_FILE)
        if not lock.acquire(timeout_s):
            raise SegQCError(f"Corrections store {self.root} is busy: another process held its lock for "
                             f"{timeout_s:.0f} s. Try again when the other SegQC process has finished.")
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
    ) -> CorrectionRecord:
        """Record one correction as a new version of ``case_id``; returns the committed record.

        Inputs are validated before anything is written (one voxel grid for images and both masks,
        integer labels).  Input files and arrays are only read.
        """
        key = case_key(case_id)
        reviewer = clean_reviewer(reviewer)
        if isinstance(images, (str, os.PathLike, Volume)):
            images = [images]
        if not images:
            raise InputError("A correction needs at least one image")
        volumes = [_as_volume(image, i) for i, image in enumerate(images)]
        original_map = _as_labelmap(original, "Original segmentation")
        corrected_map = _as_labelmap(corrected, "Corrected segmentation")
        reference = volumes[0].geometry
        for index, volume in enumerate(volumes[1:], start=2):
            check_same_geometry(reference, volume.geometry, f"Image {index}")
        check_same_geometry(reference, original_map.geometry, "Original segmentation")
        check_same_geometry(reference, corrected_map.geometry, "Corrected segmentation")
        if review_duration_s is not None and not (np.isfinite(review_duration_s) and review_duration_s >= 0):
            raise InputError(f"Review duration must be a non-negative number of seconds, got {review_duration_s}")
        labels = sorted(set(original_map.labels) | set(corrected_map.labels))
        names = {**original_map.names, **corrected_map.names}
        metrics = _true_metrics(original_map, corrected_map, labels)
        draft = {
            "case_id": case_id, "case_key": key, "reviewer": reviewer, "segqc_version": __version__,
            "labels": labels, "label_names": {str(k): str(v) for k, v in names.items() if k in labels},
            "geometry": reference.to_dict(), "true_metrics": metrics,
            "model": _model_info(model_info), "qc_prediction": _json_dict(qc_report, "qc_report"),
            "reviewed_boxes": _reviewed_boxes(reviewed_boxes),
            "review_duration_s": None if review_duration_s is None else float(review_duration_s),
            "sources": {"images": [v.path for v in volumes], "original": original_map.path,
                        "corrected": corrected_map.path},
        }
        try:
            self._ensure_created()
        except OSError as exc:
            raise _storage_error(exc, self.root, "create the corrections store") from exc
        return self._write_record(key, volumes, original_map, corrected_map, labels, draft)

    def _write_record(self, key: str, volumes: list[Volume], original: LabelMap, corrected: LabelMap,
                      labels: list[int], draft: dict[str, Any]) -> CorrectionRecord:
        name = f"{key}.{uuid.uuid4().hex}"
        work = self.tmp_dir / name
        writer_lock = _ProcessLock(self.tmp_dir / f"{name}.lock")
        committed = False
        try:
            writer_lock.acquire(timeout_s=0)
            work.mkdir()
            _checkpoint("tmp_created")
            files = self._write_payload(work, volumes, original, corrected, labels)
            _checkpoint("files_written")
            fsync_dir(work)
            with self._locked():
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
                data["metadata_sha256"] = _metadata_digest(data)
                write_bytes_synced(work / RECORD_FILE, json.dumps(data, indent=2, allow_nan=False).encode("utf-8"))
                fsync_dir(work)
                _checkpoint("metadata_written")
                case_dir = self.records_dir / key
                created_case_dir = not case_dir.exists()
                case_dir.mkdir(exist_ok=True)
                final = case_dir / f"v{version:04d}"
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
                record = _record_from_metadata(metadata, final)
                self._after_commit(case_dir, record)
        except OSError as exc:
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

    def _after_commit(self, case_dir: Path, record: CorrectionRecord) -> None:
        """Make the rename durable and index it; the record is already whole, so failures here only warn."""
        _checkpoint("committed")
        try:
            fsync_dir(case_dir)
            fsync_dir(self.records_dir)
            with open(self.index_path, "ab") as handle:
                handle.write((json.dumps(record.index_entry(), allow_nan=False) + "\n").encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            _checkpoint("indexed")
        except OSError as exc:
            logger.warning("Record %s is committed but the index could not be updated (%s); "
                           "it is rebuilt on the next list or verify", record.record_id, exc)

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
        """One more than any version this case ever had, committed or quarantined (call under the lock)."""
        used = [0]
        case_dir = self.records_dir / key
        if case_dir.is_dir():
            used += [int(m[1]) for m in (_VERSION_RE.match(p.name) for p in case_dir.iterdir()) if m]
        if self.quarantine_dir.is_dir():
            pattern = re.compile(rf"__{RECORDS_DIR}__{re.escape(key)}__v(\d{{4,}})$")
            used += [int(m[1]) for m in (pattern.search(p.name) for p in self.quarantine_dir.iterdir()) if m]
        return max(used) + 1

    # --- reading -----------------------------------------------------------------------------------
    def _scan_record_dirs(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        if not self.records_dir.is_dir():
            return found
        for case_dir in self.records_dir.iterdir():
            if not (case_dir.is_dir() and _KEY_RE.match(case_dir.name)):
                continue
            for version_dir in case_dir.iterdir():
                match = _VERSION_RE.match(version_dir.name)
                if match and version_dir.is_dir():
                    found[format_record_id(case_dir.name, int(match[1]))] = version_dir
        return found

    def _read_index(self) -> Optional[dict[str, dict[str, Any]]]:
        """Index entries by record id, or None when the index is missing or damaged."""
        try:
            text = self.index_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None if self._scan_record_dirs() else {}
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

    def _records_from_disk(self) -> tuple[list[CorrectionRecord], dict[str, str]]:
        records, broken = [], {}
        for record_id, path in self._scan_record_dirs().items():
            try:
                metadata = read_record_metadata(path)
                if metadata.record_id != record_id:
                    raise InputError(f"record.json names {metadata.record_id!r}, but the folder is {record_id!r}")
                records.append(_record_from_metadata(metadata, path))
            except InputError as exc:
                broken[record_id] = str(exc)
        return _sorted(records), broken

    def _rewrite_index(self, records: list[CorrectionRecord]) -> None:
        body = "".join(json.dumps(r.index_entry(), allow_nan=False) + "\n" for r in records)
        write_bytes_atomic(self.index_path, body.encode("utf-8"), sync_dir=True)

    def list(self) -> list[CorrectionRecord]:
        """Every committed record (sorted by case key, then version), from the index when it is consistent."""
        self._require_store()
        entries = self._read_index()
        on_disk = self._scan_record_dirs()
        if entries is not None and set(entries) == set(on_disk):
            return _sorted([CorrectionRecord(e["record_id"], e["case_id"], e["case_key"], int(e["version"]),
                                             e["created_utc"], e.get("reviewer"), on_disk[e["record_id"]],
                                             e.get("dice_original_vs_corrected")) for e in entries.values()])
        try:
            with self._locked():
                records, broken = self._records_from_disk()
                self._rewrite_index(records)
            logger.info("Rebuilt the index of %s from %d records", self.root, len(records))
        except (OSError, SegQCError) as exc:  # read-only store: list from the records without saving an index
            logger.warning("Index of %s is stale and could not be rewritten (%s); listing records directly",
                           self.root, exc)
            records, broken = self._records_from_disk()
        for record_id, reason in broken.items():
            logger.warning("Record %s is damaged and not listed (%s); run `segqc corrections verify`", record_id,
                           reason)
        return records

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
            problem = _check_record_files(path, metadata)
            if problem:
                raise InputError(f"Correction record {record_id} is damaged: {problem}. "
                                 "Run `segqc corrections verify` for details.")
        return _record_from_metadata(metadata, path)

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
        if not self.is_store():
            report.problems.append(StoreProblem(ProblemKind.NOT_A_STORE, str(self.root), "cannot verify"))
            return report
        # Committed records never change, so the slow part (hashing every file) runs without the lock and
        # writers (a Slicer session recording a correction) are not kept waiting; the rest runs under it.
        checked = {record_id: _check_record(record_id, path) for record_id, path in self._scan_record_dirs().items()}
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self._locked())
            except OSError as exc:
                if repair:
                    raise _storage_error(exc, self.root, "lock the store for repair") from exc
                logger.warning("Verifying %s without its lock (%s)", self.root, exc)
            self._verify_locked(report, repair, checked)
        return report

    def _verify_locked(self, report: VerifyReport, repair: bool,
                       checked: dict[str, tuple[Optional[RecordMetadata], Optional[str]]]) -> None:
        to_quarantine: list[tuple[Path, ProblemKind, str]] = []
        whole: list[CorrectionRecord] = []
        on_disk = self._scan_record_dirs()
        known_records = set(on_disk.values())
        for record_id, path in sorted(on_disk.items()):
            report.records_checked += 1
            # Records committed since the unlocked pass are checked now.
            metadata, problem = checked[record_id] if record_id in checked else _check_record(record_id, path)
            if problem or metadata is None:
                problem = problem or "unreadable"
                report.problems.append(StoreProblem(ProblemKind.CORRUPT_RECORD, str(path), problem, record_id))
                to_quarantine.append((path, ProblemKind.CORRUPT_RECORD, problem))
            else:
                report.records_ok += 1
                whole.append(_record_from_metadata(metadata, path))
        self._find_strays(report, known_records, to_quarantine)
        self._find_leftovers(report, to_quarantine)
        index_ok = self._check_index(report, set(on_disk))
        if not repair:
            return
        for path, kind, reason in to_quarantine:
            moved = self._quarantine(path, kind, reason)
            if moved:
                report.quarantined.append(str(moved))
        if not index_ok or to_quarantine:
            self._rewrite_index(_sorted(whole))
            report.index_rebuilt = True

    def _find_strays(self, report: VerifyReport, known_records: set[Path],
                     to_quarantine: list[tuple[Path, ProblemKind, str]]) -> None:
        expected_root = {MARKER_FILE, LOCK_FILE, INDEX_FILE, RECORDS_DIR, TMP_DIR, QUARANTINE_DIR}
        for entry in sorted(self.root.iterdir()):
            if entry.name in expected_root:
                continue
            if re.match(rf"^\.({re.escape(INDEX_FILE)}|{re.escape(MARKER_FILE)})\..+\.tmp$", entry.name):
                detail = "temporary file of an interrupted index or marker update"
                report.problems.append(StoreProblem(ProblemKind.INCOMPLETE_WRITE, str(entry), detail))
                to_quarantine.append((entry, ProblemKind.INCOMPLETE_WRITE, detail))
            else:
                report.problems.append(StoreProblem(ProblemKind.UNKNOWN_ENTRY, str(entry), "unexpected in the store"))
                to_quarantine.append((entry, ProblemKind.UNKNOWN_ENTRY, "unexpected in the store"))
        if not self.records_dir.is_dir():
            return
        for case_dir in sorted(self.records_dir.iterdir()):
            children = sorted(case_dir.iterdir()) if case_dir.is_dir() and _KEY_RE.match(case_dir.name) else [case_dir]
            for entry in children:
                if entry not in known_records:
                    detail = "not a record folder (<case_key>/vNNNN)"
                    report.problems.append(StoreProblem(ProblemKind.UNKNOWN_ENTRY, str(entry), detail))
                    to_quarantine.append((entry, ProblemKind.UNKNOWN_ENTRY, detail))

    def _find_leftovers(self, report: VerifyReport, to_quarantine: list[tuple[Path, ProblemKind, str]]) -> None:
        if not self.tmp_dir.is_dir():
            return
        entries = sorted(self.tmp_dir.iterdir())
        names = {e.name for e in entries}
        for entry in entries:
            lock_name = entry.name if entry.name.endswith(".lock") else f"{entry.name}.lock"
            if lock_name in names and _lock_is_held(self.tmp_dir / lock_name):
                if not entry.name.endswith(".lock"):
                    report.in_progress.append(str(entry))
                continue
            if entry.name.endswith(".lock"):
                detail = "lock file of a writer that is gone"
            else:
                detail = "partial record of a writer that is gone"
            report.problems.append(StoreProblem(ProblemKind.INCOMPLETE_WRITE, str(entry), detail))
            to_quarantine.append((entry, ProblemKind.INCOMPLETE_WRITE, detail))

    def _check_index(self, report: VerifyReport, committed_ids: set[str]) -> bool:
        entries = self._read_index()
        if entries is None:
            detail = "missing, unreadable or torn (e.g. a write interrupted mid-line)"
        elif set(entries) != committed_ids:
            missing = sorted(committed_ids - set(entries))
            extra = sorted(set(entries) - committed_ids)
            detail = f"out of date: {len(missing)} record(s) not indexed {missing[:3]}, " \
                     f"{len(extra)} entry(ies) without a record {extra[:3]}"
        else:
            return True
        report.problems.append(StoreProblem(ProblemKind.INDEX_DAMAGED, str(self.index_path), detail))
        return False

    def _quarantine(self, path: Path, kind: ProblemKind, reason: str) -> Optional[Path]:
        self.quarantine_dir.mkdir(exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        flat = "__".join(path.relative_to(self.root).parts)
        target = self.quarantine_dir / f"{stamp}__{kind.value}__{flat}"
        try:
            os.replace(path, target)
        except FileNotFoundError:  # a writer finished and removed it meanwhile
            return None
        reason_data = {"original_path": str(path.relative_to(self.root)), "kind": kind.value, "reason": reason,
                       "explanation": _EXPLANATIONS[kind], "quarantined_utc": stamp}
        write_bytes_synced(Path(f"{target}.reason.json"), json.dumps(reason_data, indent=2).encode("utf-8"))
        fsync_dir(self.quarantine_dir)
        fsync_dir(path.parent)
        logger.warning("Quarantined %s -> %s (%s)", path, target, reason)
        return target


def _only_store_entries(root: Path) -> bool:
    """True when ``root`` holds nothing but what a store being created by another process may contain."""
    allowed = {LOCK_FILE, RECORDS_DIR, TMP_DIR, QUARANTINE_DIR}
    return all(p.name in allowed or re.match(rf"^\.{re.escape(MARKER_FILE)}\..+\.tmp$", p.name)
               for p in root.iterdir())


def _drop_lock(lock: _ProcessLock) -> None:
    """Delete a writer's lock file, then release it (idempotent)."""
    with contextlib.suppress(OSError):
        lock.path.unlink()
    lock.release()


def _lock_is_held(path: Path) -> bool:
    lock = _ProcessLock(path)
    try:
        acquired = lock.acquire(timeout_s=0)
    except OSError:
        return False
    if acquired:
        lock.release()
    return not acquired


def _check_record(record_id: str, path: Path) -> tuple[Optional[RecordMetadata], Optional[str]]:
    """(metadata, None) for a whole record, (metadata or None, what is wrong) otherwise."""
    try:
        metadata = read_record_metadata(path)
    except InputError as exc:
        return None, str(exc)
    if metadata.record_id != record_id:
        return metadata, f"record.json names {metadata.record_id!r}"
    try:
        return metadata, _check_record_files(path, metadata)
    except OSError as exc:
        return metadata, f"cannot read its files ({exc})"


def _check_record_files(path: Path, metadata: RecordMetadata) -> Optional[str]:
    """None when every listed file is present with its size and sha256 and nothing else is there."""
    expected = set(metadata.image_files) | {metadata.original_file, metadata.corrected_file}
    expected |= set(metadata.error_files.values())
    if set(metadata.files) != expected:
        return "record.json lists inconsistent files"
    for name, info in sorted(metadata.files.items()):
        file_path = path / name
        if not file_path.is_file():
            return f"{name} is missing"
        if file_path.stat().st_size != info.get("bytes"):
            return f"{name} has {file_path.stat().st_size} bytes, expected {info.get('bytes')}"
        if sha256_file(file_path) != info.get("sha256"):
            return f"{name} does not match its sha256 checksum"
    extra = sorted(p.name for p in path.iterdir() if p.name not in expected and p.name != RECORD_FILE)
    if extra:
        return f"unexpected files in the record: {extra[:3]}"
    return None


def _sorted(records: list[CorrectionRecord]) -> list[CorrectionRecord]:
    return sorted(records, key=lambda r: (r.case_key, r.version))


def _true_metrics(original: LabelMap, corrected: LabelMap, labels: list[int]) -> dict[str, Any]:
    """True metrics of the original (query) against the corrected (truth) mask, plus changed volumes."""
    metrics = case_metrics(original.array, corrected.array, labels, original.geometry.spacing_zyx_mm)
    voxel_mm3 = original.geometry.voxel_volume_mm3
    changed = int(np.count_nonzero(original.array != corrected.array))
    data = _clean_floats(asdict(metrics))
    data["changed_voxels"] = changed
    data["changed_volume_mm3"] = changed * voxel_mm3
    return data
