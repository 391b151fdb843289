"""The work for one case, in three pure steps that depend only on their arguments and write only into that
case's own folders, so any executor can run them:

* :func:`read_case` (I/O): image(s) and segmentation -> :class:`~SegQCLib.io.case.Case`
* :func:`qc_case` (network): case -> :class:`~SegQCLib.quality.outputs.QCResult` with a loaded engine
* :func:`write_case` (I/O): report, error maps and thumbnails -> one :class:`~.results.RankRow`

:func:`process_case` chains them (what a distributed worker runs); :func:`process_case_with_model` loads
the model once per worker process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import CancelledError, InputError, SegQCError
from ..io.case import Case, load_case
from ..quality.outputs import QCResult
from ..quality.postprocess import PostprocessParams
from ..quality.report import Report
from ..review.case_page import PAGE_FILE
from ..review.flags import in_domain_of, report_flags
from ..review.pictures import DEFAULT_SLICES_PER_CASE, Picture, render_case_pictures
from .cases import CASE_ID_RE, BatchCase
from .results import CaseStatus, RankRow, failed_row

PathLike = Union[str, os.PathLike]

CASES_DIR = "cases"
THUMBNAILS_DIR = "thumbnails"
DEFAULT_THUMBNAILS_PER_CASE = DEFAULT_SLICES_PER_CASE


def timed(function: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``function(*args)`` and the seconds it took."""
    started = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - started


def case_dir(out_dir: Path, case_id: str) -> Path:
    return out_dir / CASES_DIR / case_id


def read_case(case: BatchCase) -> Case:
    if not CASE_ID_RE.match(case.case_id):
        raise InputError(f"Case id {case.case_id!r} is not a simple folder name (letters, digits, . _ -)")
    return load_case(case.images, case.seg)


def qc_case(engine: Any, loaded: Case, params: Optional[PostprocessParams] = None) -> QCResult:
    return engine.run_case(loaded, postprocess_params=params)


def relative_path(path: Path, out_dir: Path) -> str:
    """``path`` relative to the output folder, as written in ranking.csv and the page."""
    return path.relative_to(out_dir).as_posix()


def row_from_report(case_id: str, report: Report, report_path: Path, out_dir: Path, status: CaseStatus,
                    pictures: Sequence[Picture]) -> RankRow:
    worst = next((s.index for s in report.slices if s.error_score > 0), None)
    thumbnails = [(relative_path(p.path, out_dir), p.slice_index) for p in pictures if p.slice_index is not None]
    domain = report.domain
    return RankRow(case_id, status, report.case.dice_est, report.case.dice_pred, report.case.qi, len(report.boxes),
                   worst, relative_path(report_path, out_dir), thumbnails,
                   class_dice={c.label: c.dice_est for c in report.classes},
                   class_names={c.label: c.name for c in report.classes},
                   flags=[f.value for f in report_flags(report)], in_domain=in_domain_of(report),
                   domain_reasons=list(domain.reasons) if domain is not None else [],
                   page=relative_path(report_path.parent / PAGE_FILE, out_dir))


def write_case(case: BatchCase, loaded: Case, result: QCResult, out_dir: Path,
               thumbnails_per_case: int) -> RankRow:
    """Write the report and error maps (report.json last) and the pictures; return the case's row.

    The case's review page is written by the driver at the end, when its rank is known."""
    report_path = result.write(case_dir(out_dir, case.case_id))
    pictures = draw_pictures(case.case_id, loaded.images[0].array, loaded.segmentation.array, result.error_prob,
                             result.report, loaded.geometry, out_dir, thumbnails_per_case)
    return row_from_report(case.case_id, result.report, report_path, out_dir, CaseStatus.DONE, pictures)


def pictures_dir(out_dir: Path, case_id: str) -> Path:
    return out_dir / THUMBNAILS_DIR / case_id


def draw_pictures(case_id: str, image: np.ndarray, segmentation: np.ndarray, error_prob: dict[int, np.ndarray],
                  report: Report, geometry: Any, out_dir: Path, count: int) -> list[Picture]:
    """Draw the case's worst slices and its three views into ``thumbnails/<case_id>/`` (earlier ones removed)."""
    return render_case_pictures(image, segmentation, error_prob, report, geometry, pictures_dir(out_dir, case_id),
                                count)


def process_case(case: BatchCase, out_dir: PathLike, engine: Any, params: Optional[PostprocessParams] = None,
                 thumbnails_per_case: int = DEFAULT_THUMBNAILS_PER_CASE) -> RankRow:
    """Read, check and write one case; a failure becomes a FAILED row (the batch goes on).

    The row's ``timing_s`` holds the seconds spent reading, computing and writing.
    """
    out_dir = Path(out_dir)
    timing: dict[str, float] = {}
    try:
        loaded, timing["read"] = timed(read_case, case)
        result, timing["compute"] = timed(qc_case, engine, loaded, params)
        row, timing["write"] = timed(write_case, case, loaded, result, out_dir, thumbnails_per_case)
    except (CancelledError, KeyboardInterrupt):
        raise
    except Exception as exc:  # one broken case must not stop a batch of thousands
        row = failed_row(case.case_id, exc)
    row.timing_s = timing
    return row


_WORKER_ENGINES: dict[tuple[str, str], Any] = {}


class ModelMismatchError(SegQCError):
    """A worker's model is not the one the driver checked (and resume compares reports against)."""


def process_case_with_model(case: BatchCase, out_dir: PathLike, model_path: Optional[str], device: str = "auto",
                            params: Optional[PostprocessParams] = None,
                            thumbnails_per_case: int = DEFAULT_THUMBNAILS_PER_CASE,
                            expected_sha256: Optional[str] = None) -> RankRow:
    """:func:`process_case` for a worker process of a distributed engine: loads the model once per process.

    With ``expected_sha256`` (the driver's model) a worker whose model file differs (another node's copy, a
    package replaced during the run) refuses the case before writing anything: a FAILED row."""
    from ..engine import QCEngine  # torch: only in the processes that run the network

    key = (str(model_path), device)
    if key not in _WORKER_ENGINES:
        _WORKER_ENGINES[key] = QCEngine(model_path, device)
    engine = _WORKER_ENGINES[key]
    found = engine.model_info.get("sha256")
    if expected_sha256 is not None and found != expected_sha256:
        del _WORKER_ENGINES[key]  # the file may be fixed before the next case: load it again then
        return failed_row(case.case_id, ModelMismatchError(
            f"the model at {model_path or 'the default location'} on this worker has sha256 {str(found)[:12]}..., "
            f"not the driver's {expected_sha256[:12]}... (every node needs the same model package)"))
    return process_case(case, out_dir, engine, params, thumbnails_per_case)
