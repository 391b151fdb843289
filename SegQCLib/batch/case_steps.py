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
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import CancelledError, InputError
from ..io.case import Case, load_case
from ..quality.outputs import QCResult
from ..quality.postprocess import PostprocessParams
from ..quality.report import Report
from .cases import CASE_ID_RE, BatchCase
from .results import CaseStatus, RankRow, failed_row
from .thumbnails import DEFAULT_THUMBNAILS_PER_CASE, render_thumbnails

PathLike = Union[str, os.PathLike]

CASES_DIR = "cases"
THUMBNAILS_DIR = "thumbnails"
THUMBNAIL_FILE_RE = re.compile(r"^slice(?P<index>\d+)\.png$")


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
                    thumbnails: list[tuple[str, int]]) -> RankRow:
    worst = next((s.index for s in report.slices if s.error_score > 0), None)
    return RankRow(case_id, status, report.case.dice_est, report.case.dice_pred, report.case.qi, len(report.boxes),
                   worst, relative_path(report_path, out_dir), thumbnails)


def write_case(case: BatchCase, loaded: Case, result: QCResult, out_dir: Path,
               thumbnails_per_case: int) -> RankRow:
    """Write the report and error maps (report.json last) and the thumbnails; return the case's row."""
    report_path = result.write(case_dir(out_dir, case.case_id))
    pictures = write_thumbnails(case.case_id, loaded.images[0].array, loaded.segmentation.array, result.error_prob,
                                result.report, loaded.geometry, out_dir, thumbnails_per_case)
    return row_from_report(case.case_id, result.report, report_path, out_dir, CaseStatus.DONE, pictures)


def write_thumbnails(case_id: str, image: np.ndarray, segmentation: np.ndarray, error_prob: dict[int, np.ndarray],
                     report: Report, geometry: Any, out_dir: Path, count: int) -> list[tuple[str, int]]:
    """Draw the case's worst slices into ``thumbnails/<case_id>/`` (earlier ones removed); (path, slice) pairs."""
    if count <= 0:
        return []
    folder = out_dir / THUMBNAILS_DIR / case_id
    if folder.is_dir():
        for old in folder.glob("slice*.png"):  # a re-run may pick other slices
            old.unlink()
    pictures = render_thumbnails(image, segmentation, error_prob, report, geometry, folder, "slice", count)
    return [(relative_path(p.path, out_dir), p.slice_index) for p in pictures]


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


def process_case_with_model(case: BatchCase, out_dir: PathLike, model_path: Optional[str], device: str = "auto",
                            params: Optional[PostprocessParams] = None,
                            thumbnails_per_case: int = DEFAULT_THUMBNAILS_PER_CASE) -> RankRow:
    """:func:`process_case` for a worker process of a distributed engine: loads the model once per process."""
    from ..engine import QCEngine  # torch: only in the processes that run the network

    key = (str(model_path), device)
    if key not in _WORKER_ENGINES:
        _WORKER_ENGINES[key] = QCEngine(model_path, device)
    return process_case(case, out_dir, _WORKER_ENGINES[key], params, thumbnails_per_case)
