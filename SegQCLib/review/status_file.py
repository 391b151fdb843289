"""The review status of a ranked dataset, written next to its ``ranking.csv`` so that every reviewing session (and
the active-learning export) sees which cases are done, by whom, with which rating and correction record.

``review_status.json``::

    {"format": "segqc-review-status", "format_version": 1,
     "cases": {"<case_id>": {"status": "corrected", "rating": "minor_fixes", "reviewer": "A. Expert",
                             "updated_utc": "2026-11-30T16:40:12+00:00", "correction_record": "<case_key>/v0001",
                             "items": {"box": {"0": "fixed", "3": "reviewed"}, "slice": {}}, "current_box": 3}}}

``status`` is a :class:`ReviewStatus`, ``rating`` a :class:`~.rating.CaseRating` value, ``items`` the reviewer's
marks on the report's ranked boxes and slices (by 0-based rank), ``current_box`` where the review of the case
was left.  Fields and cases this version does not know are kept as they are.

Several sessions may write at once: each :meth:`ReviewStatusFile.update` reads, merges one case and writes the
file while holding ``.review_status.lock`` (``filelock``: an OS lock, released when a process dies), so no
update is lost.  The file is replaced atomically (temporary file, fsync, rename, folder fsync), so a crash leaves
the previous or the new file, never a torn one.  A file that cannot be read is never overwritten.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import InputError, ResourceError, SegQCError
from ..files import write_json_atomic
from .rating import CaseRating, parse_rating

PathLike = Union[str, os.PathLike]

STATUS_FILE = "review_status.json"
LOCK_FILE = ".review_status.lock"
FORMAT = "segqc-review-status"
FORMAT_VERSION = 1
LOCK_TIMEOUT_S = 30.0
ITEM_KINDS = ("box", "slice")


class ReviewStatus(str, Enum):
    PENDING = "pending"  # nobody has opened it
    IN_PROGRESS = "in_progress"  # opened, not finished
    REVIEWED = "reviewed"  # looked at; nothing recorded (fine as it is, or rated only)
    CORRECTED = "corrected"  # a correction was recorded
    SKIPPED = "skipped"  # left out on purpose

    @property
    def done(self) -> bool:
        return self in (ReviewStatus.REVIEWED, ReviewStatus.CORRECTED, ReviewStatus.SKIPPED)


@dataclass
class CaseReview:
    """One case's entry in the status file."""

    case_id: str
    status: ReviewStatus = ReviewStatus.PENDING
    rating: Optional[CaseRating] = None
    reviewer: Optional[str] = None
    updated_utc: Optional[str] = None
    correction_record: Optional[str] = None
    items: dict[str, dict[str, str]] = field(default_factory=dict)
    current_box: Optional[int] = None
    extra: dict[str, Any] = field(default_factory=dict)  # fields written by a newer SegQC, kept

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "status": self.status.value, "rating": self.rating.value if self.rating else None,
                "reviewer": self.reviewer, "updated_utc": self.updated_utc,
                "correction_record": self.correction_record, "items": self.items, "current_box": self.current_box}

    @classmethod
    def from_dict(cls, case_id: str, data: dict[str, Any]) -> CaseReview:
        known = ("status", "rating", "reviewer", "updated_utc", "correction_record", "items", "current_box")
        items = data.get("items") if isinstance(data.get("items"), dict) else {}
        return cls(case_id, ReviewStatus(data.get("status") or ReviewStatus.PENDING.value),
                   parse_rating(data.get("rating")), data.get("reviewer"), data.get("updated_utc"),
                   data.get("correction_record"),
                   {str(kind): {str(k): str(v) for k, v in marks.items()} for kind, marks in items.items()
                    if isinstance(marks, dict)},
                   data.get("current_box") if isinstance(data.get("current_box"), int) else None,
                   {k: v for k, v in data.items() if k not in known})


_UNSET: Any = object()


class ReviewStatusFile:
    """``review_status.json`` of a ranking folder (see the module docstring)."""

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / STATUS_FILE

    def read(self) -> dict[str, CaseReview]:
        """Every case's review (cases the file does not mention are pending)."""
        return {case_id: CaseReview.from_dict(case_id, entry) for case_id, entry in self._load()["cases"].items()}

    def get(self, case_id: str) -> CaseReview:
        return self.read().get(case_id, CaseReview(case_id))

    def update(self, case_id: str, status: Union[ReviewStatus, str, None] = None, rating: Any = _UNSET,
               reviewer: Optional[str] = None, correction_record: Optional[str] = None,
               items: Optional[dict[str, dict[str, str]]] = None, current_box: Any = _UNSET) -> CaseReview:
        """Change one case's entry (only the fields given; ``rating=None`` clears the rating) and write the file.

        Raises InputError for unknown statuses or ratings, ResourceError when the disk is full and SegQCError
        when the folder is not writable or another session holds the lock for too long; the file is then unchanged.
        """
        status = ReviewStatus(status) if status is not None else None
        parsed_rating = parse_rating(rating) if rating is not _UNSET else _UNSET
        if items is not None:
            unknown = sorted(set(items) - set(ITEM_KINDS))
            if unknown:
                raise InputError(f"Unknown review item kinds {unknown}; expected {list(ITEM_KINDS)}")
        from filelock import FileLock, Timeout  # here: the Slicer module imports this before pip installs filelock

        lock = FileLock(str(self.folder / LOCK_FILE))
        try:
            with lock.acquire(timeout=LOCK_TIMEOUT_S):
                data = self._load()
                review = CaseReview.from_dict(case_id, data["cases"].get(case_id, {}))
                if status is not None:
                    review.status = status
                if parsed_rating is not _UNSET:
                    review.rating = parsed_rating
                if reviewer:
                    review.reviewer = reviewer
                if correction_record:
                    review.correction_record = correction_record
                if items is not None:
                    review.items = {kind: {str(k): str(v) for k, v in marks.items()} for kind, marks in items.items()}
                if current_box is not _UNSET:
                    review.current_box = None if current_box is None else int(current_box)
                review.updated_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
                data["cases"][case_id] = review.to_dict()
                write_json_atomic(self.path, data, sync_dir=True)
        except Timeout as exc:
            raise SegQCError(f"Another review session has held {self.folder / LOCK_FILE} for over "
                             f"{LOCK_TIMEOUT_S:.0f} s; the status of {case_id} was not written. Try again.") from exc
        except OSError as exc:
            raise _write_error(exc, self.path, case_id) from exc
        return review

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"format": FORMAT, "format_version": FORMAT_VERSION, "cases": {}}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"The review status file {self.path} cannot be read ({exc}); it is left as it is. "
                             "Move it aside to start the statuses afresh.") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("cases"), dict):
            raise InputError(f"{self.path} is not a SegQC review status file; it is left as it is")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise InputError(f"{self.path} was written by a newer SegQC (format {data['format_version']}); "
                             "update SegQC to review this dataset")
        return data


def _write_error(exc: OSError, path: Path, case_id: str) -> SegQCError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceError(f"Cannot write the review status of {case_id} to {path}: the disk is full ({reason})")
    return SegQCError(f"Cannot write the review status of {case_id} to {path} ({reason}): the ranking folder must "
                      "be writable to share review statuses")
