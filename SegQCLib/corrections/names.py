"""Names in a corrections store: its file and folder layout, case keys, reviewer names and record ids.

A case id may be any text of at most :data:`MAX_NAME_LENGTH` characters without control characters
(those are rejected with :class:`InputError`).  Its folder name (``case_key``) keeps
``A-Z a-z 0-9 . _ -``; any other character (``/``, ``\\``, spaces, non-ASCII) and any run of dots
(``..``) becomes ``_``, leading and trailing dots are dropped, and the key then gets ``~`` plus 8 hex
digits of the id's sha256, so distinct ids never share a folder and no id can leave ``records/``.
Reviewer names are validated the same way but only ever stored inside JSON, never in a path.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import InputError

PathLike = Union[str, os.PathLike]

STORE_FORMAT = "segqc-corrections"
# 2: the store keeps a ledger (ledger.jsonl); stores of version 1 start one on their next add or repair.
STORE_FORMAT_VERSION = 2
# record.json's own format (unchanged by the ledger).
RECORD_FORMAT_VERSION = 1
MARKER_FILE = "segqc-store.json"
LOCK_FILE = ".lock"
INDEX_FILE = "index.jsonl"
LEDGER_FILE = "ledger.jsonl"
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
KEY_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._~-]*$")
VERSION_RE = re.compile(r"^v(\d{4,})$")
_RECORD_ID_RE = re.compile(r"^(?P<key>[A-Za-z0-9_-][A-Za-z0-9._~-]*)/v(?P<version>\d{4,})$")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


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


def version_dir_name(version: int) -> str:
    return f"v{version:04d}"


class StoreLayout:
    """Where everything of the store rooted at ``root`` lives."""

    def __init__(self, root: PathLike):
        self.root = Path(root)

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

    @property
    def ledger_path(self) -> Path:
        return self.root / LEDGER_FILE

    @property
    def marker_path(self) -> Path:
        return self.root / MARKER_FILE

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE

    def record_path(self, record_id: str) -> Path:
        key, version = parse_record_id(record_id)
        return self.records_dir / key / version_dir_name(version)
