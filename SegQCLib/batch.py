"""Batch QC ranking: run the engine over many cases and rank them worst first for correction.

The work for one case is three pure steps, each depending only on its arguments and writing only
into that case's own folders, so any executor can run them:

* :func:`read_case` (I/O): image(s) and segmentation -> :class:`~SegQCLib.io.Case`
* :func:`qc_case` (network): case -> :class:`~SegQCLib.postprocess.QCResult` with a loaded engine
* :func:`write_case` (I/O): report, error maps and thumbnails -> one :class:`RankRow`

:func:`process_case` chains them (what a distributed worker runs; :func:`process_case_with_model`
loads the model once per worker process), and :func:`run_batch` is the local pipeline: the model is
loaded once, a reader thread prefetches the next cases while the network runs, and a writer thread
compresses outputs and draws thumbnails, so disk I/O overlaps with compute.  A case whose
``report.json`` is complete, newer than its inputs and made with the same settings is not run again
(resume), and a failing case is recorded in ``failures.json`` without stopping the others.

Output folder::

    ranking.csv                 rank, case_id, dice_est, dice_pred, qi, n_boxes, worst_slice, report,
                                status (done / resumed), worst first (lowest estimated Dice first)
    failures.json               [{"case_id", "error"}] for cases that could not be checked
    index.html                  the page (see html_report.py)
    cases/<case_id>/            report.json and error_prob_<label>.nii.gz (the engine's outputs)
    thumbnails/<case_id>/       slice<k>.png for the worst slices

Paths in ``ranking.csv`` and the page are relative to the output folder, so it can be moved or served.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .errors import CancelledError, InputError, SegQCError
from .files import write_text_atomic
from .io import Case, load_case, read_image, read_labelmap
from .postprocess import PostprocessParams, QCResult
from .report import ERROR_PROB_PATTERN, REPORT_FILE_NAME, Report, write_json_atomic

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

RANKING_FILE = "ranking.csv"
FAILURES_FILE = "failures.json"
CASES_DIR = "cases"
THUMBNAILS_DIR = "thumbnails"
RANKING_COLUMNS = ("rank", "case_id", "dice_est", "dice_pred", "qi", "n_boxes", "worst_slice", "report", "status")
# Cases read ahead of the network: enough to hide a slow read, few enough to bound memory.
DEFAULT_PREFETCH = 2
# Finished cases waiting for the writer before the network waits for it.
MAX_PENDING_WRITES = 2
CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
# Slicer's segmentation files: "<case>.seg.nrrd" names case "<case>", not "<case>.seg".
SEG_SUFFIXES = (".seg.nrrd",) + IMAGE_SUFFIXES
_THUMBNAIL_RE = re.compile(r"^slice(?P<index>\d+)\.png$")
_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


class CaseStatus(str, Enum):
    DONE = "done"
    RESUMED = "resumed"
    FAILED = "failed"


@dataclass(frozen=True)
class BatchCase:
    case_id: str
    images: tuple[Path, ...]
    seg: Path


@dataclass
class RankRow:
    case_id: str
    status: CaseStatus
    dice_est: Optional[float] = None
    dice_pred: Optional[float] = None
    qi: Optional[float] = None
    n_boxes: Optional[int] = None
    worst_slice: Optional[int] = None
    report: Optional[str] = None
    thumbnails: list[tuple[str, int]] = field(default_factory=list)
    error: Optional[str] = None
    timing_s: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchStats:
    """Where the time went: seconds summed over cases per step, and the wall time of the whole batch."""

    cases: int = 0
    read_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0
    read_wait_s: float = 0.0
    write_wait_s: float = 0.0
    wall_s: float = 0.0

    @property
    def io_fraction(self) -> float:
        """Share of the per-case work that is disk I/O (reading, writing outputs, thumbnails)."""
        total = self.read_s + self.compute_s + self.write_s
        return (self.read_s + self.write_s) / total if total > 0 else 0.0

    @property
    def cases_per_s(self) -> float:
        return self.cases / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class BatchResult:
    rows: list[RankRow]
    stats: BatchStats
    ranking_csv: Path
    index_html: Path

    @property
    def failed(self) -> list[RankRow]:
        return [r for r in self.rows if r.status is CaseStatus.FAILED]


ProgressCallback = Callable[[int, int, str, CaseStatus], None]


# ----------------------------------------------------------------------------------------------------
# Finding cases


def _strip_suffix(name: str, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> Optional[str]:
    lower = name.lower()
    for suffix in sorted(suffixes, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def cases_from_folders(images_dir: PathLike, segs_dir: PathLike) -> tuple[list[BatchCase], list[str]]:
    """Pair ``SEGS/<case>.nii.gz`` (or ``<case>.seg.nrrd``) with ``IMAGES/<case>.nii.gz`` or
    ``IMAGES/<case>_0000.nii.gz`` (+ ``_0001``...).

    Returns the cases (sorted by id) and one message per segmentation without an image.
    """
    images_dir, segs_dir = Path(images_dir), Path(segs_dir)
    for folder in (images_dir, segs_dir):
        if not folder.is_dir():
            raise InputError(f"Folder not found: {folder}")
    # A name ending in _NNNN is either channel NNNN of a case (nnU-Net) or a whole case id ("amos_0001"):
    # keep both readings and let the segmentation's name decide.
    channels: dict[str, dict[int, Path]] = {}
    whole: dict[str, Path] = {}
    for path in images_dir.iterdir():
        stem = _strip_suffix(path.name)
        if stem is None:
            continue
        whole[stem] = path
        match = _CHANNEL_RE.match(stem)
        if match:
            channels.setdefault(match["case"], {})[int(match["channel"])] = path
    cases, unmatched = [], []
    for seg in sorted(segs_dir.iterdir()):
        case_id = _strip_suffix(seg.name, SEG_SUFFIXES)
        if case_id is None or seg.name.startswith("."):
            continue
        found = channels.get(case_id) or ({0: whole[case_id]} if case_id in whole else None)
        if not found:
            unmatched.append(f"{seg.name}: no image named {case_id}[_0000] in {images_dir}")
            continue
        cases.append(BatchCase(case_id, tuple(found[i] for i in sorted(found)), seg))
    if not cases:
        raise InputError(f"No segmentation in {segs_dir} has an image of the same name in {images_dir}")
    return cases, unmatched


# ----------------------------------------------------------------------------------------------------
# The per-case steps


def case_dir(out_dir: Path, case_id: str) -> Path:
    return out_dir / CASES_DIR / case_id


def read_case(case: BatchCase) -> Case:
    if not CASE_ID_RE.match(case.case_id):
        raise InputError(f"Case id {case.case_id!r} is not a simple folder name (letters, digits, . _ -)")
    return load_case(case.images, case.seg)


def qc_case(engine: Any, loaded: Case, params: Optional[PostprocessParams] = None) -> QCResult:
    return engine.run_case(loaded, postprocess_params=params)


def _relative(path: Path, out_dir: Path) -> str:
    return path.relative_to(out_dir).as_posix()


def _row_from_report(case_id: str, report: Report, report_path: Path, out_dir: Path, status: CaseStatus,
                     thumbnails: list[tuple[str, int]]) -> RankRow:
    worst = next((s.index for s in report.slices if s.error_score > 0), None)
    return RankRow(case_id, status, report.case.dice_est, report.case.dice_pred, report.case.qi, len(report.boxes),
                   worst, _relative(report_path, out_dir), thumbnails)


def write_case(case: BatchCase, loaded: Case, result: QCResult, out_dir: Path,
               thumbnails_per_case: int) -> RankRow:
    """Write the report and error maps (report.json last) and the thumbnails; return the case's row."""
    report_path = result.write(case_dir(out_dir, case.case_id))
    pictures = _thumbnails(case.case_id, loaded.images[0].array, loaded.segmentation.array, result.error_prob,
                           result.report, loaded.geometry, out_dir, thumbnails_per_case)
    return _row_from_report(case.case_id, result.report, report_path, out_dir, CaseStatus.DONE, pictures)


def _thumbnails(case_id: str, image: np.ndarray, segmentation: np.ndarray, error_prob: dict[int, np.ndarray],
                report: Report, geometry: Any, out_dir: Path, count: int) -> list[tuple[str, int]]:
    if count <= 0:
        return []
    from .html_report import render_thumbnails  # matplotlib only when pictures are wanted

    folder = out_dir / THUMBNAILS_DIR / case_id
    if folder.is_dir():
        for old in folder.glob("slice*.png"):  # a re-run may pick other slices
            old.unlink()
    pictures = render_thumbnails(image, segmentation, error_prob, report, geometry, folder, "slice", count)
    return [(_relative(p.path, out_dir), p.slice_index) for p in pictures]


def process_case(case: BatchCase, out_dir: PathLike, engine: Any, params: Optional[PostprocessParams] = None,
                 thumbnails_per_case: int = 3) -> RankRow:
    """Read, check and write one case; a failure becomes a FAILED row (the batch goes on).

    The row's ``timing_s`` holds the seconds spent reading, computing and writing.
    """
    out_dir = Path(out_dir)
    timing: dict[str, float] = {}
    try:
        loaded, timing["read"] = _timed(read_case, case)
        result, timing["compute"] = _timed(qc_case, engine, loaded, params)
        row, timing["write"] = _timed(write_case, case, loaded, result, out_dir, thumbnails_per_case)
    except (CancelledError, KeyboardInterrupt):
        raise
    except Exception as exc:  # one broken case must not stop a batch of thousands
        row = failed_row(case.case_id, exc)
    row.timing_s = timing
    return row


_WORKER_ENGINES: dict[tuple[str, str], Any] = {}


def process_case_with_model(case: BatchCase, out_dir: PathLike, model_path: Optional[str], device: str = "auto",
                            params: Optional[PostprocessParams] = None, thumbnails_per_case: int = 3) -> RankRow:
    """:func:`process_case` for a worker process of a distributed engine: loads the model once per process."""
    from .engine import QCEngine

    key = (str(model_path), device)
    if key not in _WORKER_ENGINES:
        _WORKER_ENGINES[key] = QCEngine(model_path, device)
    return process_case(case, out_dir, _WORKER_ENGINES[key], params, thumbnails_per_case)


@dataclass(frozen=True)
class ProcessWorkers:
    """Pass as ``engine`` to :func:`run_batch` to check cases in ``count`` worker processes.

    Each worker loads the model once and runs :func:`process_case` with ``threads_per_worker`` torch
    threads.  On a CPU this beats one process with many intra-op threads for small volumes (the
    network is made of many small operations whose threads wait for each other), and reading and
    writing of one worker overlap with the network of another.  The same per-case function runs
    unchanged on a cluster (e.g. ``ray.remote(process_case_with_model)``).
    """

    model_path: Optional[str]
    count: int = 2
    device: str = "cpu"
    threads_per_worker: int = 1
    model_sha256: Optional[str] = None  # the workers' model, so that resume can tell its reports from another's

    def run_cases(self, todo: Sequence[BatchCase], out_dir: Path, params: Optional[PostprocessParams],
                  thumbnails_per_case: int, stats: BatchStats, finished: Callable[[RankRow], None]) -> None:
        _in_processes(todo, out_dir, self, params, thumbnails_per_case, stats, finished)


def add_row_timing(stats: BatchStats, row: RankRow) -> None:
    """Add a row's per-case seconds (from :func:`process_case`) to ``stats``."""
    stats.read_s += row.timing_s.get("read", 0.0)
    stats.compute_s += row.timing_s.get("compute", 0.0)
    stats.write_s += row.timing_s.get("write", 0.0)


def _init_worker(threads: int, log_level: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level)


def failed_row(case_id: str, exc: BaseException) -> RankRow:
    if isinstance(exc, SegQCError):
        message = str(exc)
    else:
        logger.exception("Case %s failed with an unexpected error", case_id, exc_info=exc)
        message = f"unexpected {type(exc).__name__}: {exc}"
    logger.error("Case %s failed: %s", case_id, message)
    return RankRow(case_id, CaseStatus.FAILED, error=message)


# ----------------------------------------------------------------------------------------------------
# Resume


def completed_row(case: BatchCase, out_dir: Path, thumbnails_per_case: int = 3,
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
    matches = [(p, _THUMBNAIL_RE.match(p.name)) for p in existing]
    if (existing and all(m for _, m in matches)) or thumbnails_per_case <= 0:
        pictures = [(_relative(p, out_dir), int(m["index"])) for p, m in matches if m]
        order = {s.index: i for i, s in enumerate(report.slices)}
        pictures.sort(key=lambda item: order.get(item[1], math.inf))
    else:
        try:
            image = read_image(case.images[0])
            segmentation = read_labelmap(case.seg)
            error_prob = {label: read_image(path).array for label, path in maps.items()}
        except InputError:
            return None
        pictures = _thumbnails(case.case_id, image.array, segmentation.array, error_prob, report, image.geometry,
                               out_dir, thumbnails_per_case)
    return _row_from_report(case.case_id, report, report_path, out_dir, CaseStatus.RESUMED, pictures)


def _same_settings(report: Report, params: PostprocessParams, model_sha256: Optional[str]) -> bool:
    recorded = report.parameters or {}
    if recorded.get("regions") != asdict(params.regions):
        return False
    if params.slice_axis is not None and recorded.get("slice_axis") != params.slice_axis:
        return False
    return model_sha256 is None or (report.model or {}).get("sha256") == model_sha256


# ----------------------------------------------------------------------------------------------------
# The local pipeline


def _timed(function: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - started


def run_batch(
    cases: Sequence[BatchCase],
    out_dir: PathLike,
    engine: Any,
    params: Optional[PostprocessParams] = None,
    prefetch: int = DEFAULT_PREFETCH,
    thumbnails_per_case: int = 3,
    resume: bool = True,
    progress: Optional[ProgressCallback] = None,
    notes: Sequence[str] = (),
) -> BatchResult:
    """Check every case; write ranking.csv, failures.json and index.html.

    With a loaded ``engine`` (a QCEngine), ``prefetch`` cases are read ahead in a background thread
    while the network runs and a writer thread writes the outputs (``prefetch=0``: strictly one case
    after another).  With ``engine=ProcessWorkers(...)`` (or ``batch_ray.RayWorkers(...)``, or any object
    with the same ``run_cases`` method) the cases run in worker processes or on a cluster instead.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    duplicates = sorted(i for i, n in Counter(c.case_id for c in cases).items() if n > 1)
    if duplicates:
        raise InputError(f"Case ids must be unique; repeated: {duplicates[:5]}")
    started = time.perf_counter()
    rows: list[RankRow] = []
    stats = BatchStats()
    total = len(cases)

    def finished(row: RankRow) -> None:
        rows.append(row)
        if progress is not None:
            progress(len(rows), total, row.case_id, row.status)

    model_sha256 = getattr(engine, "model_sha256", None) or (getattr(engine, "model_info", None) or {}).get("sha256")
    todo = []
    for case in cases:
        row = completed_row(case, out_dir, thumbnails_per_case, params, model_sha256) if resume else None
        if row is None:
            todo.append(case)
        else:
            finished(row)
    if hasattr(engine, "run_cases"):  # ProcessWorkers, RayWorkers: the cases run elsewhere
        engine.run_cases(todo, out_dir, params, thumbnails_per_case, stats, finished)
    else:
        _pipeline(todo, out_dir, engine, params, prefetch, thumbnails_per_case, stats, finished)
    stats.cases = len(todo)
    stats.wall_s = time.perf_counter() - started
    ranked = rank_rows(rows)
    ranking_csv = write_ranking_csv(ranked, out_dir)
    write_json_atomic(out_dir / FAILURES_FILE, [{"case_id": r.case_id, "error": r.error}
                                                for r in ranked if r.status is CaseStatus.FAILED])
    index_html = write_page(ranked, out_dir, notes)
    return BatchResult(ranked, stats, ranking_csv, index_html)


def _in_processes(todo: Sequence[BatchCase], out_dir: Path, workers: ProcessWorkers,
                  params: Optional[PostprocessParams], thumbnails_per_case: int, stats: BatchStats,
                  finished: Callable[[RankRow], None]) -> None:
    if not todo:
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: torch's thread pools do not survive a fork.
    context = multiprocessing.get_context("spawn")
    model = None if workers.model_path is None else str(workers.model_path)
    with ProcessPoolExecutor(max_workers=max(1, workers.count), mp_context=context, initializer=_init_worker,
                             initargs=(workers.threads_per_worker, logging.getLogger().level)) as pool:
        futures = {pool.submit(process_case_with_model, case, out_dir, model, workers.device, params,
                               thumbnails_per_case): case for case in todo}
        for future in as_completed(futures):
            try:
                row = future.result()
            except (CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:  # the worker died (e.g. out of memory): that case failed, the rest go on
                row = failed_row(futures[future].case_id, exc)
            add_row_timing(stats, row)
            finished(row)


def _pipeline(todo: Sequence[BatchCase], out_dir: Path, engine: Any, params: Optional[PostprocessParams],
              prefetch: int, thumbnails_per_case: int, stats: BatchStats, finished: Callable[[RankRow], None]) -> None:
    cases = iter(todo)
    reads: deque[tuple[BatchCase, Future]] = deque()
    writes: deque[tuple[BatchCase, Future]] = deque()

    def collect_write() -> None:
        case, future = writes.popleft()
        waited = time.perf_counter()
        try:
            row, seconds = future.result()
            stats.write_s += seconds
        except (CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:
            row = failed_row(case.case_id, exc)
        stats.write_wait_s += time.perf_counter() - waited
        finished(row)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="segqc-read") as reader, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="segqc-write") as writer:

        def submit_read() -> None:
            case = next(cases, None)
            if case is not None:
                reads.append((case, reader.submit(_timed, read_case, case)))

        for _ in range(max(prefetch, 1)):
            submit_read()
        while reads:
            case, future = reads.popleft()
            if prefetch > 0:
                submit_read()  # keep the reader busy while this case is computed
            waited = time.perf_counter()
            try:
                loaded, seconds = future.result()
                stats.read_s += seconds
                stats.read_wait_s += time.perf_counter() - waited
                result, seconds = _timed(qc_case, engine, loaded, params)
                stats.compute_s += seconds
            except (CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:
                finished(failed_row(case.case_id, exc))
                if prefetch <= 0:
                    submit_read()
                continue
            if prefetch <= 0:  # strictly serial: write, then read the next case
                write_future = writer.submit(_timed, write_case, case, loaded, result, out_dir, thumbnails_per_case)
                writes.append((case, write_future))
                collect_write()
                submit_read()
                continue
            writes.append((case, writer.submit(_timed, write_case, case, loaded, result, out_dir,
                                               thumbnails_per_case)))
            del loaded, result  # the writer holds them; free them as soon as it is done
            while len(writes) > MAX_PENDING_WRITES:
                collect_write()
        while writes:
            collect_write()


# ----------------------------------------------------------------------------------------------------
# Outputs


def _sort_key(row: RankRow) -> tuple[float, float, str]:
    """Worst first: lowest estimated Dice, then lowest predicted Dice; unknown estimates first (check them)."""
    est = row.dice_est if row.dice_est is not None else -math.inf
    pred = row.dice_pred if row.dice_pred is not None else -math.inf
    return (est, pred, row.case_id)


def rank_rows(rows: Iterable[RankRow]) -> list[RankRow]:
    rows = list(rows)
    ranked = sorted((r for r in rows if r.status is not CaseStatus.FAILED), key=_sort_key)
    failed = sorted((r for r in rows if r.status is CaseStatus.FAILED), key=lambda r: r.case_id)
    return ranked + failed


def rank_numbers(rows: Sequence[RankRow]) -> list[Optional[int]]:
    """Rank of each row in the given order: 1, 2, ... for checked cases, None for failed ones."""
    ranks, rank = [], 0
    for row in rows:
        if row.status is CaseStatus.FAILED:
            ranks.append(None)
        else:
            rank += 1
            ranks.append(rank)
    return ranks


def write_ranking_csv(ranked: Sequence[RankRow], out_dir: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RANKING_COLUMNS)
    for row, rank in zip(ranked, rank_numbers(ranked)):
        if rank is None:
            continue
        writer.writerow([rank, row.case_id, _csv_number(row.dice_est), _csv_number(row.dice_pred),
                         _csv_number(row.qi), row.n_boxes, "" if row.worst_slice is None else row.worst_slice,
                         row.report, row.status.value])
    return write_text_atomic(out_dir / RANKING_FILE, buffer.getvalue())


def _csv_number(value: Optional[float]) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6g}"


def read_ranking_csv(path: PathLike) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def write_page(ranked: Sequence[RankRow], out_dir: Path, notes: Sequence[str] = ()) -> Path:
    from .html_report import write_index_html  # matplotlib only when a page is wanted

    return write_index_html(ranked, out_dir, notes=notes)


def batch_summary(result: BatchResult) -> dict[str, Any]:
    stats = result.stats
    return {"cases": len(result.rows), "checked": stats.cases, "failed": len(result.failed),
            "resumed": sum(r.status is CaseStatus.RESUMED for r in result.rows),
            "wall_s": round(stats.wall_s, 3), "cases_per_s": round(stats.cases_per_s, 4),
            "io_fraction": round(stats.io_fraction, 4), "read_s": round(stats.read_s, 3),
            "compute_s": round(stats.compute_s, 3), "write_s": round(stats.write_s, 3),
            "read_wait_s": round(stats.read_wait_s, 3), "write_wait_s": round(stats.write_wait_s, 3)}


def dump_summary(result: BatchResult) -> str:
    return json.dumps(batch_summary(result), indent=2)
