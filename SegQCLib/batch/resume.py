"""Resume of ``segqc rank``: a case whose outputs from an earlier run are complete and still valid is not run again."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from ..errors import InputError
from ..io.image_files import read_image, read_labelmap
from ..quality.postprocess import PostprocessParams
from ..quality.report import ERROR_PROB_PATTERN, REPORT_FILE_NAME, Report
from ..staged_files import has_unfinished_commit
from .case_steps import THUMBNAIL_FILE_RE, THUMBNAILS_DIR, case_dir, relative_path, row_from_report, write_thumbnails
from .cases import BatchCase
from .results import CaseStatus, RankRow
from .thumbnails import DEFAULT_THUMBNAILS_PER_CASE


def completed_row(case: BatchCase, out_dir: Path, thumbnails_per_case: int = DEFAULT_THUMBNAILS_PER_CASE,
                  params: Optional[PostprocessParams] = None, model_sha256: Optional[str] = None) -> Optional[RankRow]:
    """The row of a case already checked by an earlier run, or None when it must run (again).

    Complete means: ``report.json`` parses, every class's error map is there, it names the same
    segmentation, it is newer than the inputs (an edited segmentation is checked again), and it was made
    with the same region parameters (``params``) and, when given, the same model (``model_sha256``):
    a re-run with another --threshold or model must not mix old and new results in one ranking.
    Missing thumbnails are redrawn from the files.
    """
    folder = case_dir(out_dir, case.case_id)
    report_path = folder / REPORT_FILE_NAME
    if has_unfinished_commit(folder):  # a writer was killed while moving new files in: run it again
        return None
    try:
        report = Report.load(report_path)
        report_mtime = report_path.stat().st_mtime
        inputs_mtime = max(p.stat().st_mtime for p in (*case.images, case.seg))
    except (InputError, OSError):
        return None
    recorded_seg = report.inputs.get("segmentation")
    if recorded_seg is None or Path(recorded_seg).resolve() != case.seg.resolve() or report_mtime < inputs_mtime:
        return None
    if not _same_settings(report, params or PostprocessParams(), model_sha256):
        return None
    maps = {c.label: folder / ERROR_PROB_PATTERN.format(label=c.label) for c in report.classes}
    if not all(p.is_file() for p in maps.values()):
        return None
    thumbnail_dir = out_dir / THUMBNAILS_DIR / case.case_id
    existing = sorted(thumbnail_dir.glob("slice*.png")) if thumbnail_dir.is_dir() else []
    matches = [(p, THUMBNAIL_FILE_RE.match(p.name)) for p in existing]
    if (existing and all(m for _, m in matches)) or thumbnails_per_case <= 0:
        pictures = [(relative_path(p, out_dir), int(m["index"])) for p, m in matches if m]
        order = {s.index: i for i, s in enumerate(report.slices)}
        pictures.sort(key=lambda item: order.get(item[1], math.inf))
    else:
        try:
            image = read_image(case.images[0])
            segmentation = read_labelmap(case.seg)
            error_prob = {label: read_image(path).array for label, path in maps.items()}
        except InputError:
            return None
        pictures = write_thumbnails(case.case_id, image.array, segmentation.array, error_prob, report, image.geometry,
                                    out_dir, thumbnails_per_case)
    return row_from_report(case.case_id, report, report_path, out_dir, CaseStatus.RESUMED, pictures)


def _same_settings(report: Report, params: PostprocessParams, model_sha256: Optional[str]) -> bool:
    recorded = report.parameters or {}
    if recorded.get("regions") != asdict(params.regions):
        return False
    if params.slice_axis is not None and recorded.get("slice_axis") != params.slice_axis:
        return False
    return model_sha256 is None or (report.model or {}).get("sha256") == model_sha256
