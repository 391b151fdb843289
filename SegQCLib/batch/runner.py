"""Batch QC ranking: run the engine over many cases and rank them worst first for correction.

:func:`run_batch` is the local pipeline over the per-case steps of :mod:`.case_steps`: the model is
loaded once, a reader thread prefetches the next cases while the network runs, and a writer thread
compresses outputs and draws thumbnails, so disk I/O overlaps with compute.  Worker processes
(:mod:`.workers`) or a Ray cluster (:mod:`.ray_workers`) can run the cases instead.  A case whose
``report.json`` is complete, newer than its inputs and made with the same settings is not run again
(:mod:`.resume`), and a failing case is recorded in ``failures.json`` without stopping the others.

Output folder::

    ranking.csv                 rank, case_id, dice_est, dice_pred, qi, n_boxes, worst_slice, report,
                                status (done / resumed), worst first (lowest estimated Dice first)
    failures.json               [{"case_id", "error"}] for cases that could not be checked
    index.html                  the page (see index_page.py)
    cases/<case_id>/            report.json and error_prob_<label>.nii.gz (the engine's outputs)
    thumbnails/<case_id>/       slice<k>.png for the worst slices

Paths in ``ranking.csv`` and the page are relative to the output folder, so it can be moved or served.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import CancelledError, InputError
from ..quality.postprocess import PostprocessParams
from ..quality.report import write_json_atomic
from .case_steps import qc_case, read_case, timed, write_case
from .cases import BatchCase
from .index_page import write_index_html
from .results import BatchResult, BatchStats, CaseStatus, RankRow, failed_row, rank_rows, write_ranking_csv
from .resume import completed_row
from .thumbnails import DEFAULT_THUMBNAILS_PER_CASE

PathLike = Union[str, os.PathLike]

FAILURES_FILE = "failures.json"
# Cases read ahead of the network: enough to hide a slow read, few enough to bound memory.
DEFAULT_PREFETCH = 2
# Finished cases waiting for the writer before the network waits for it.
MAX_PENDING_WRITES = 2

ProgressCallback = Callable[[int, int, str, CaseStatus], None]


def run_batch(
    cases: Sequence[BatchCase],
    out_dir: PathLike,
    engine: Any,
    params: Optional[PostprocessParams] = None,
    prefetch: int = DEFAULT_PREFETCH,
    thumbnails_per_case: int = DEFAULT_THUMBNAILS_PER_CASE,
    resume: bool = True,
    progress: Optional[ProgressCallback] = None,
    notes: Sequence[str] = (),
) -> BatchResult:
    """Check every case; write ranking.csv, failures.json and index.html.

    With a loaded ``engine`` (a QCEngine), ``prefetch`` cases are read ahead in a background thread
    while the network runs and a writer thread writes the outputs (``prefetch=0``: strictly one case
    after another).  With ``engine=ProcessWorkers(...)`` (or ``ray_workers.RayWorkers(...)``, or any object
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
    index_html = write_index_html(ranked, out_dir, notes=notes)
    return BatchResult(ranked, stats, ranking_csv, index_html)


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
                reads.append((case, reader.submit(timed, read_case, case)))

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
                result, seconds = timed(qc_case, engine, loaded, params)
                stats.compute_s += seconds
            except (CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:
                finished(failed_row(case.case_id, exc))
                if prefetch <= 0:
                    submit_read()
                continue
            if prefetch <= 0:  # strictly serial: write, then read the next case
                write_future = writer.submit(timed, write_case, case, loaded, result, out_dir, thumbnails_per_case)
                writes.append((case, write_future))
                collect_write()
                submit_read()
                continue
            writes.append((case, writer.submit(timed, write_case, case, loaded, result, out_dir,
                                               thumbnails_per_case)))
            del loaded, result  # the writer holds them; free them as soon as it is done
            while len(writes) > MAX_PENDING_WRITES:
                collect_write()
        while writes:
            collect_write()


