"""Everything the review of one checked case needs, written beside its report: the pictures, the Slicer script
and the page.  ``segqc run --html`` and each case of ``segqc rank`` call :func:`write_case_review`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import numpy as np

from ..geometry import Geometry
from ..quality.report import ERROR_PROB_PATTERN, REPORT_FILE_NAME, Report
from .case_page import PAGE_FILE, PageContext, write_case_page
from .flags import report_flags
from .orientation import Orientation
from .pictures import DEFAULT_SLICES_PER_CASE, Picture, render_case_pictures
from .slicer_script import write_slicer_script

logger = logging.getLogger(__name__)


def write_case_review(case_id: str, report: Report, image: np.ndarray, segmentation: np.ndarray,
                      error_prob: Mapping[int, np.ndarray], geometry: Geometry, case_dir: Path, pictures_dir: Path,
                      context: Optional[PageContext] = None, slice_count: int = DEFAULT_SLICES_PER_CASE
                      ) -> tuple[Path, list[Picture]]:
    """Write ``case_dir/review.html`` and ``case_dir/open_in_slicer.py`` (``case_dir`` holds the report and error
    maps) and the pictures into ``pictures_dir``; return the page and the pictures."""
    context = context or PageContext()
    pictures = render_case_pictures(image, segmentation, error_prob, report, geometry, pictures_dir, slice_count)
    write_page(case_id, report, geometry, case_dir, pictures, context)
    return case_dir / PAGE_FILE, pictures


def write_page(case_id: str, report: Report, geometry: Geometry, case_dir: Path, pictures: list[Picture],
               context: PageContext) -> Path:
    """The page and the Slicer script alone, for pictures drawn earlier."""
    case_dir = case_dir.resolve()
    maps = {c.label: (c.name, str(case_dir / ERROR_PROB_PATTERN.format(label=c.label))) for c in report.classes}
    images = [str(Path(p).resolve()) for p in report.inputs.get("images") or []]
    segmentation = report.inputs.get("segmentation")
    if images and segmentation:
        focus = report.boxes[0].center_ras if report.boxes else None
        context.slicer_script = write_slicer_script(case_dir, case_id, images, str(Path(segmentation).resolve()),
                                                    maps, focus)
        context.files = {**{f"image {i}": p for i, p in enumerate(images)},
                         "segmentation": str(Path(segmentation).resolve()),
                         **{f"error map, class {label} {name}": path for label, (name, path) in maps.items()}}
    if not context.flags:
        context.flags = report_flags(report)
    return write_case_page(case_dir / PAGE_FILE, case_id, report, Orientation.from_geometry(geometry), pictures,
                           context, case_dir / REPORT_FILE_NAME)
