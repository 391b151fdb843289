"""Checking the cases of a batch in local worker processes (:class:`ProcessWorkers`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import CancelledError
from ..quality.postprocess import PostprocessParams
from .case_steps import process_case_with_model
from .cases import BatchCase
from .results import BatchStats, RankRow, add_row_timing, failed_row


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


def _init_worker(threads: int, log_level: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level)


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
