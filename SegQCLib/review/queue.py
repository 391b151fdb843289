"""A case queue: the cases of a ``segqc rank`` output folder, worst first, with their review status, and the
way through them (next / previous case, optionally past the cases already done).

No Slicer here: the Slicer module (``SegQC/SegQCModuleLib/queue_logic.py``) shows and loads the cases, the
command line and the HTML page can list the same statuses, and an active-learning export can take exactly the
corrected cases from :meth:`ReviewQueue.entries` (``segqc corrections export`` does not do so yet).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

from ..errors import InputError
from .ranking_file import CaseFiles, RankedCase, Ranking, case_files, read_ranking
from .status_file import CaseReview, ReviewStatus, ReviewStatusFile

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class QueueEntry:
    case: RankedCase
    review: CaseReview

    @property
    def done(self) -> bool:
        return self.review.status.done


class ReviewQueue:
    """The cases of a ranking with their statuses (re-read from the status file by :meth:`refresh`)."""

    def __init__(self, path: PathLike, reviewer: Optional[str] = None) -> None:
        self.ranking: Ranking = read_ranking(path)
        if not self.ranking.cases:
            raise InputError(f"The ranking in {self.ranking.folder} lists no case with a report")
        self.status_file = ReviewStatusFile(self.ranking.folder)
        self.reviewer = reviewer
        self._reviews: dict[str, CaseReview] = {}
        self.refresh()

    @property
    def folder(self):
        return self.ranking.folder

    def __len__(self) -> int:
        return len(self.ranking.cases)

    def refresh(self) -> None:
        """Read the statuses again: other sessions may have reviewed cases meanwhile."""
        self._reviews = self.status_file.read()

    def entries(self) -> list[QueueEntry]:
        return [self.entry(index) for index in range(len(self))]

    def entry(self, index: int) -> QueueEntry:
        case = self.ranking.cases[self._check(index)]
        return QueueEntry(case, self._reviews.get(case.case_id, CaseReview(case.case_id)))

    def index_of(self, case_id: str) -> int:
        return self.ranking.index_of(case_id)

    def files(self, index: int) -> CaseFiles:
        return case_files(self.ranking.cases[self._check(index)], self.folder)

    def step(self, current: Optional[int], step: int, skip_done: bool = True) -> Optional[int]:
        """The index ``step`` (+1 / -1) cases away from ``current`` (from the start when None), past done cases when
        ``skip_done``; None when there is none in that direction."""
        self.refresh()
        index = (-1 if step > 0 else len(self)) if current is None else current
        while True:
            index += 1 if step > 0 else -1
            if not 0 <= index < len(self):
                return None
            if not (skip_done and self.entry(index).done):
                return index

    def first_to_review(self) -> Optional[int]:
        return self.step(None, +1, skip_done=True)

    def update(self, index: int, **changes) -> CaseReview:
        """Write a case's review (see :meth:`ReviewStatusFile.update`), as this queue's reviewer."""
        case_id = self.ranking.cases[self._check(index)].case_id
        review = self.status_file.update(case_id, reviewer=self.reviewer, **changes)
        self._reviews[case_id] = review
        return review

    def counts(self) -> dict[str, int]:
        """Cases per review status, and the cases QC failed on (not in the queue)."""
        counts = {status.value: 0 for status in ReviewStatus}
        for entry in self.entries():
            counts[entry.review.status.value] += 1
        counts["failed_qc"] = len(self.ranking.failed)
        return counts

    def _check(self, index: int) -> int:
        if not 0 <= int(index) < len(self):
            raise InputError(f"No case {index + 1} in the queue: it has {len(self)}")
        return int(index)
