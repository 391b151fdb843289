"""Resume of ``segqc rank``: a case whose outputs from an earlier run are complete and still valid is not run again."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

from ..errors import InputError
from ..geometry import Geometry
from ..io.image_files import read_image, read_labelmap
from ..quality.postprocess import PostprocessParams
from ..quality.report import ERROR_PROB_PATTERN, REPORT_FILE_NAME, Report
from ..review.orientation import Orientation
from ..review.pictures import pictures_in_folder
from ..staged_files import has_unfinished_commit
from .case_steps import DEFAULT_THUMBNAILS_PER_CASE, case_dir, draw_pictures, pictures_dir, row_from_report
from .cases import BatchCase
from .results import CaseStatus, RankRow


def completed_row(case: BatchCase, out_dir: Path, thumbnails_per_case: int = DEFAULT_THUMBNAILS_PER_CASE,
                  params: Optional[PostprocessParams] = None, model_sha256: Optional[str] = None) -> Optional[RankRow]:
    """The row of a case already checked by an earlier run, or None when it must run (again).

    Complete means: ``report.json`` parses, every class's error map is there, it names the same
    segmentation, it is newer than the inputs (an edited segmentation is checked again), and it was made
    with the same region parameters (``params``) and, when given, the same model (``model_sha256``):
    a re-run with another --threshold or model must not mix old and new results in one ranking.
    Missing or stale pictures are redrawn from the files.
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
    pictures: Optional[list] = []
    if thumbnails_per_case > 0:
        try:
            orientation = Orientation.from_geometry(Geometry.from_dict(report.geometry))
        except (KeyError, TypeError, ValueError):
            return None
        pictures = pictures_in_folder(pictures_dir(out_dir, case.case_id), report, orientation)
    if pictures is None:  # drawn for another report, or never drawn: draw them again from the files
        try:
            image = read_image(case.images[0])
            segmentation = read_labelmap(case.seg)
            error_prob = {label: read_image(path).array for label, path in maps.items()}
        except InputError:
            return None
        pictures = draw_pictures(case.case_id, image.array, segmentation.array, error_prob, report, image.geometry,
                                 out_dir, thumbnails_per_case)
    return row_from_report(case.case_id, report, report_path, out_dir, CaseStatus.RESUMED, pictures)


def _same_settings(report: Report, params: PostprocessParams, model_sha256: Optional[str]) -> bool:
    recorded = report.parameters or {}
    if recorded.get("regions") != asdict(params.regions):
        return False
    if params.slice_axis is not None and recorded.get("slice_axis") != params.slice_axis:
        return False
    return model_sha256 is None or (report.model or {}).get("sha256") == model_sha256
