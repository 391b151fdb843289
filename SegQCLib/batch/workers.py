"""Checking the cases of a batch in local worker processes (:class:`ProcessWorkers`).

A worker process can die (killed by the kernel for memory, by a user, or by a crash in native code).
With a plain ``ProcessPoolExecutor`` that breaks the whole pool and every case still queued fails with
``BrokenProcessPool``.  Here at most ``count`` cases are in flight, so when a worker dies the cases that
were running are known: the pool is restarted and each of them is run once more, alone in a fresh
one-worker pool.  A case whose worker dies again while it is alone fails with a message saying so; the
others (the bystanders of the first death, and every case not yet started) are checked as usual.  A
dead worker therefore costs only its own case.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import CancelledError, SegQCError
from ..quality.postprocess import PostprocessParams
from .case_steps import process_case_with_model
from .cases import BatchCase
from .results import BatchStats, RankRow, add_row_timing, failed_row

logger = logging.getLogger(__name__)

# Worker deaths in a row, each alone with one case and before any worker ever returned a case, after which the
# workers are taken to be unable to run at all (a broken installation rather than hostile cases) and the remaining
# cases fail with that message instead of each starting a pool that dies.
MAX_DEATHS_IN_A_ROW = 3

CaseFunction = Callable[..., RankRow]


class WorkerDiedError(SegQCError):
    """The worker process checking a case died (signal, out of memory, native crash)."""


@dataclass(frozen=True)
class ProcessWorkers:
    """Pass as ``engine`` to :func:`run_batch` to check cases in ``count`` worker processes.

    Each worker loads the model once and runs :func:`process_case` with ``threads_per_worker`` torch
    threads.  On a CPU this beats one process with many intra-op threads for small volumes (the
    network is made of many small operations whose threads wait for each other), and reading and
    writing of one worker overlap with the network of another.  The same per-case function runs
    unchanged on a cluster (e.g. ``ray.remote(process_case_with_model)``).  ``case_function`` is what
    a worker runs per case (a module-level function with :func:`process_case_with_model`'s signature).
    """

    model_path: Optional[str]
    count: int = 2
    device: str = "cpu"
    threads_per_worker: int = 1
    model_sha256: Optional[str] = None  # the workers' model, so that resume can tell its reports from another's
    case_function: CaseFunction = process_case_with_model

    def run_cases(self, todo: Sequence[BatchCase], out_dir: Path, params: Optional[PostprocessParams],
                  thumbnails_per_case: int, stats: BatchStats, finished: Callable[[RankRow], None]) -> None:
        _in_processes(todo, out_dir, self, params, thumbnails_per_case, stats, finished)


def _init_worker(threads: int, log_level: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level)


class _Pools:
    """Fresh pools on demand (spawn, not fork: torch's thread pools do not survive a fork)."""

    def __init__(self, workers: ProcessWorkers, out_dir: Path, params: Optional[PostprocessParams],
                 thumbnails_per_case: int) -> None:
        self.workers = workers
        self.args = (out_dir, None if workers.model_path is None else str(workers.model_path), workers.device, params,
                     thumbnails_per_case)
        self.context = multiprocessing.get_context("spawn")

    def new(self, size: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=size, mp_context=self.context, initializer=_init_worker,
                                   initargs=(self.workers.threads_per_worker, logging.getLogger().level))

    def submit(self, pool: ProcessPoolExecutor, case: BatchCase) -> Future:
        return pool.submit(self.workers.case_function, case, *self.args)


def _result(future: Future, case: BatchCase) -> RankRow:
    try:
        return future.result()
    except (CancelledError, KeyboardInterrupt, BrokenProcessPool):
        raise
    except Exception as exc:  # an error the worker raised: that case failed, the rest go on
        return failed_row(case.case_id, exc)


def _run_shared(pools: _Pools, queue: deque[BatchCase], suspects: deque[BatchCase],
                deliver: Callable[[RankRow], None]) -> None:
    """Run queued cases ``count`` at a time until the queue is empty or a worker dies (its in-flight cases then
    become suspects)."""
    in_flight: dict[Future, BatchCase] = {}
    pool = pools.new(max(1, pools.workers.count))
    try:
        while queue or in_flight:
            while queue and len(in_flight) < max(1, pools.workers.count):
                case = queue.popleft()
                try:
                    in_flight[pools.submit(pool, case)] = case
                except BrokenProcessPool:  # a worker died before its case came back: found at the next submit
                    queue.appendleft(case)
                    logger.warning("A worker process died; restarting the workers and running the %d case(s) that "
                                   "were running again, one at a time", len(in_flight))
                    suspects.extend(in_flight.values())
                    return
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            broken = [future for future in done if isinstance(future.exception(), BrokenProcessPool)]
            # A case that finished before the death keeps its row: only the cases that were running are suspects.
            for future in done:
                if future not in broken:
                    deliver(_result(future, in_flight.pop(future)))
            if broken:
                running = [in_flight[future] for future in broken]
                running += [case for future, case in in_flight.items() if future not in broken]
                logger.warning("A worker process died while %d case(s) were running (%s); restarting the "
                               "workers and running those cases again, one at a time", len(running),
                               ", ".join(case.case_id for case in running))
                suspects.extend(running)
                return
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_alone(pools: _Pools, case: BatchCase) -> Optional[RankRow]:
    """The case's row from a fresh one-worker pool, or None when its worker died there too."""
    pool = pools.new(1)
    try:
        return _result(pools.submit(pool, case), case)
    except BrokenProcessPool:
        return None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _in_processes(todo: Sequence[BatchCase], out_dir: Path, workers: ProcessWorkers,
                  params: Optional[PostprocessParams], thumbnails_per_case: int, stats: BatchStats,
                  finished: Callable[[RankRow], None]) -> None:
    if not todo:
        return
    pools = _Pools(workers, out_dir, params, thumbnails_per_case)
    queue, suspects = deque(todo), deque()
    deaths_in_a_row = 0
    returned = 0  # rows that came back from a worker (whatever their status): the workers can run

    def emit(row: RankRow) -> None:
        add_row_timing(stats, row)
        finished(row)

    def deliver(row: RankRow) -> None:  # a row a worker returned
        nonlocal returned
        returned += 1
        emit(row)

    while queue or suspects:
        if not suspects:
            _run_shared(pools, queue, suspects, deliver)
            continue
        case = suspects.popleft()
        row = _run_alone(pools, case)
        if row is not None:
            deaths_in_a_row = 0
            deliver(row)
            continue
        deaths_in_a_row += 1
        emit(failed_row(case.case_id, WorkerDiedError(
            "the worker process checking this case died (killed by a signal, out of memory, or a crash), and died "
            "again when the case was run alone: the case itself is the cause; the other cases were not affected")))
        if returned == 0 and deaths_in_a_row >= MAX_DEATHS_IN_A_ROW:
            reason = WorkerDiedError(f"not checked: worker processes died on {deaths_in_a_row} cases in a row, each "
                                     "run alone; the workers cannot run here (check memory and the installation)")
            for rest in [*suspects, *queue]:
                emit(failed_row(rest.case_id, reason))
            return
