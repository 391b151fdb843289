"""Each checked case's review page (``cases/<case_id>/review.html``), written by the driver once the ranking is
known, so that every page shows its rank, its flags and its review status and links back to ``index.html``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import InputError
from ..geometry import Geometry
from ..quality.report import Report
from ..review.case_page import PageContext
from ..review.flags import CaseFlag
from ..review.orientation import Orientation
from ..review.pictures import pictures_in_folder
from ..review.writer import write_page
from .case_steps import pictures_dir
from .index_page import INDEX_FILE
from .results import RankRow, rank_numbers
from .review_status import CaseReview

logger = logging.getLogger(__name__)


def write_case_pages(ranked: Sequence[RankRow], out_dir: Path, reviews: Mapping[str, CaseReview]) -> int:
    """Write the page of every ranked row; returns how many were written (a case whose report cannot be read
    keeps its row, without a page)."""
    total = sum(rank is not None for rank in rank_numbers(ranked))
    written = 0
    for row, rank in zip(ranked, rank_numbers(ranked)):
        if rank is None or not row.report:
            continue
        report_path = out_dir / row.report
        try:
            report = Report.load(report_path)
            geometry = Geometry.from_dict(report.geometry)
        except (InputError, OSError, KeyError, TypeError, ValueError) as exc:
            logger.warning("No review page for %s: %s", row.case_id, exc)
            row.page = None
            continue
        folder = report_path.parent
        pictures = pictures_in_folder(pictures_dir(out_dir, row.case_id), report, Orientation.from_geometry(geometry))
        review = reviews.get(row.case_id)
        context = PageContext(rank=rank, total=total, index_href=Path(os.path.relpath(out_dir / INDEX_FILE, folder))
                              .as_posix(), review_status=review.status.value if review else None,
                              flags=[CaseFlag(f) for f in row.flags])
        write_page(row.case_id, report, geometry, folder, pictures or [], context)
        written += 1
    return written
