"""Review statuses of a ``segqc rank`` output folder: ``review_status.csv`` beside ``ranking.csv``.

Written by whoever reviews the queue (the Slicer module's case queue, a script), read by the ranking page and by
``segqc corrections export --queue``.  One row per case, the latest state::

    case_id,status,rating,reviewer,updated_utc,correction_record,note
    hippocampus_017,fixed,2,ana,2026-11-30T16:20:00Z,20261130T162000Z-hippocampus_017-v0001,left tail missed

* ``status``: ``pending`` (not looked at; also every case without a row), ``in_review``, ``reviewed`` (looked at,
  nothing to fix), ``fixed`` (corrected), ``skipped`` (not fixable or not worth it);
* ``rating``: optional integer 1 (unusable) .. 5 (perfect): the reviewer's grade of the segmentation as checked;
* ``correction_record``: for ``fixed`` cases, the record id that ``segqc corrections add`` (or the Slicer
  module's *Record correction*) returned: the export takes exactly these records;
* ``updated_utc``: ISO 8601 UTC time of the change; ``reviewer`` and ``note`` free text.

Several sessions may write at once: :func:`set_review` holds a lock file (``review_status.csv.lock``) while it
reads, changes one row and replaces the file atomically, so no update is lost and a crash leaves the old file or
the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Optional, Union

from filelock import FileLock, Timeout

from ..errors import InputError, SegQCError
from ..files import write_text_atomic
from ..review.status_file import STATUS_FILE as QUEUE_FILE
from ..review.status_file import ReviewStatusFile

PathLike = Union[str, os.PathLike]

STATUS_FILE = "review_status.csv"
LOCK_SUFFIX = ".lock"
LOCK_TIMEOUT_S = 30.0
COLUMNS = ("case_id", "status", "rating", "reviewer", "updated_utc", "correction_record", "note")
RATING_RANGE = (1, 5)


class ReviewStatus(str, Enum):
    PENDING = "pending"
    IN_REVIEW = "in_review"
    REVIEWED = "reviewed"
    FIXED = "fixed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CaseReview:
    case_id: str
    status: ReviewStatus = ReviewStatus.PENDING
    rating: Optional[int] = None
    reviewer: str = ""
    updated_utc: str = ""
    correction_record: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if not self.case_id:
            raise InputError("A review needs a case_id")
        if self.rating is not None and not RATING_RANGE[0] <= self.rating <= RATING_RANGE[1]:
            low, high = RATING_RANGE
            raise InputError(f"Rating of {self.case_id} must be {low}..{high}, got {self.rating}")


def status_path(queue_dir: PathLike) -> Path:
    """``review_status.csv`` of a rank output folder (``queue_dir`` may also be its ranking.csv)."""
    path = Path(queue_dir)
    return (path.parent if path.suffix.lower() == ".csv" else path) / STATUS_FILE


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(path: Path, text: str) -> dict[str, CaseReview]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("case_id", "status") if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
    reviews: dict[str, CaseReview] = {}
    for line, row in enumerate(reader, start=2):
        try:
            status = ReviewStatus((row.get("status") or "pending").strip())
        except ValueError:
            raise InputError(f"{path} line {line}: unknown status {row.get('status')!r}; expected one of "
                             f"{', '.join(s.value for s in ReviewStatus)}") from None
        rating_text = (row.get("rating") or "").strip()
        if rating_text and not rating_text.isdigit():
            raise InputError(f"{path} line {line}: rating {rating_text!r} is not a whole number")
        case_id = (row.get("case_id") or "").strip()
        if not case_id:
            raise InputError(f"{path} line {line}: case_id is empty")
        reviews[case_id] = CaseReview(case_id, status, int(rating_text) if rating_text else None,
                                      (row.get("reviewer") or "").strip(), (row.get("updated_utc") or "").strip(),
                                      (row.get("correction_record") or "").strip(), (row.get("note") or "").strip())
    return reviews


def read_reviews(queue_dir: PathLike) -> dict[str, CaseReview]:
    """Every case's latest review (cases without a row are pending); {} when no review was written yet.

    The Slicer case queue's ``review_status.json`` in the same folder is read too (:func:`queue_reviews`): per
    case the entry written last counts."""
    path = status_path(queue_dir)
    reviews = _read_csv(path)
    for case_id, queued in queue_reviews(path.parent).items():
        current = reviews.get(case_id)
        if current is None or _utc(queued.updated_utc) >= _utc(current.updated_utc):
            reviews[case_id] = queued
    return reviews


def _read_csv(path: Path) -> dict[str, CaseReview]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read review statuses {path}: {exc}") from exc
    return _parse(path, text)


# The Slicer case queue's statuses and verdicts in this file's terms.
QUEUE_STATUS = {"pending": ReviewStatus.PENDING, "in_progress": ReviewStatus.IN_REVIEW,
                "reviewed": ReviewStatus.REVIEWED, "corrected": ReviewStatus.FIXED, "skipped": ReviewStatus.SKIPPED}
QUEUE_RATING = {"accept": 5, "minor_fixes": 4, "major_fixes": 2, "reject": 1}


def queue_reviews(folder: PathLike) -> dict[str, CaseReview]:
    """The entries of the Slicer case queue's ``review_status.json`` in ``folder`` as :class:`CaseReview` ({} when
    there is none): *corrected* is *fixed*; the verdicts accept / minor fixes / major fixes / reject are ratings
    5 / 4 / 2 / 1."""
    if not (Path(folder) / QUEUE_FILE).is_file():
        return {}
    reviews = {}
    for case_id, entry in ReviewStatusFile(folder).read().items():
        rating = QUEUE_RATING.get(entry.rating.value) if entry.rating is not None else None
        reviews[case_id] = CaseReview(case_id, QUEUE_STATUS[entry.status.value], rating, entry.reviewer or "",
                                      entry.updated_utc or "", entry.correction_record or "")
    return reviews


def _utc(text: str) -> datetime:
    """A review's time for ordering (the earliest possible time when it is missing or unreadable)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _format(reviews: dict[str, CaseReview]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for review in sorted(reviews.values(), key=lambda r: r.case_id):
        writer.writerow([review.case_id, review.status.value, "" if review.rating is None else review.rating,
                         review.reviewer, review.updated_utc, review.correction_record, review.note])
    return buffer.getvalue()


def set_review(queue_dir: PathLike, review: CaseReview) -> CaseReview:
    """Record ``review`` (its time set to now when empty) as its case's latest state; returns what was written."""
    path = status_path(queue_dir)
    if not path.parent.is_dir():
        raise InputError(f"Not a rank output folder: {path.parent}")
    if not review.updated_utc:
        review = replace(review, updated_utc=now_utc())
    try:
        with FileLock(str(path) + LOCK_SUFFIX, timeout=LOCK_TIMEOUT_S):
            reviews = read_reviews(path.parent)
            reviews[review.case_id] = review
            write_text_atomic(path, _format(reviews))
    except Timeout as exc:
        raise SegQCError(f"Review statuses {path} are locked by another session for over {LOCK_TIMEOUT_S:.0f} s "
                         f"(lock file {path}{LOCK_SUFFIX})") from exc
    return review


def fixed_record_ids(reviews: dict[str, CaseReview], newest_record_of_case: dict[str, str]) -> tuple[list[str],
                                                                                                       list[str]]:
    """The correction records of exactly the queue's ``fixed`` cases, and notices.

    A fixed case's own ``correction_record`` is used; a fixed case without one takes the newest record of that case
    id in the store (``newest_record_of_case``), with a notice.  No fixed case, or a fixed case with no record at
    all, is an InputError (an export that silently leaves out corrected cases would look complete)."""
    fixed = sorted((r for r in reviews.values() if r.status is ReviewStatus.FIXED), key=lambda r: r.case_id)
    if not fixed:
        raise InputError("No case of the review queue is marked fixed (review_status.csv): nothing to export")
    record_ids, notices, missing = [], [], []
    for review in fixed:
        if review.correction_record:
            record_ids.append(review.correction_record)
        elif review.case_id in newest_record_of_case:
            record_ids.append(newest_record_of_case[review.case_id])
            notices.append(f"{review.case_id}: fixed without a correction_record in the queue; exported the store's "
                           f"newest record of that case, {newest_record_of_case[review.case_id]}")
        else:
            missing.append(review.case_id)
    if missing:
        raise InputError(f"Fixed case(s) with no correction in the store: {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                         + "; record them with `segqc corrections add` (or Record correction in Slicer) first")
    return record_ids, notices
