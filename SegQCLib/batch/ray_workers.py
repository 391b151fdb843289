"""``segqc rank --ray``: the cases of a batch as Ray tasks on a cluster (``pip install 'ray[default]'``).

The per-case step :func:`~.case_steps.process_case_with_model` is self-contained (inputs: the case's file
paths, the output folder, the model path; output: one row), so Ray only ships it to the workers.  Every node
needs the same file system view as the driver (shared storage for the inputs, the output folder and the model
package) and SegQC installed.  Resume, ranking, ``failures.json`` and ``index.html`` stay with
:func:`~.runner.run_batch` on the driver::

    from SegQCLib.batch.ray_connect import connect
    from SegQCLib.batch.ray_workers import RayWorkers
    from SegQCLib.batch.runner import run_batch

    connect("auto")                    # or "local", or the head's "HOST:PORT"
    run_batch(cases, out_dir, RayWorkers(model_path="/shared/models/segqc", model_sha256=sha))

Guarantees, whatever happens on the cluster:

* every case handed to :meth:`RayWorkers.run_cases` gets exactly one row, in the order the tasks finish;
* a case that fails (unreadable file, bad geometry, a model on the node that is not the driver's) is a
  FAILED row with the reason; such errors are not retried (they would fail again);
* a task whose worker process or node dies is retried once by Ray (:data:`TASK_RETRIES`); if the retry dies
  too the case is a FAILED row saying so, and the other cases go on;
* each worker checks that its model has the driver's sha256 before writing anything, so resume (which
  trusts the sha256 in each report) never mixes models.

Each task asks Ray for ``num_cpus`` CPUs (and ``num_gpus`` GPUs), runs torch with that many threads and keeps
one model per worker process; its Ray name is ``segqc-rank:<case_id>`` (shown by ``ray list tasks`` and as the
worker's process title).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import SegQCError
from ..quality.postprocess import PostprocessParams
from .case_steps import process_case_with_model
from .cases import BatchCase
from .ray_connect import import_ray
from .results import BatchStats, RankRow, add_row_timing, failed_row

logger = logging.getLogger(__name__)

# Tasks submitted ahead of the finished ones: keeps the driver's memory bounded on huge datasets.
DEFAULT_MAX_IN_FLIGHT = 256
# A task whose worker dies (killed, out of memory, node lost) runs once more, then its case is reported failed.
TASK_RETRIES = 1
TASK_NAME_PREFIX = "segqc-rank:"


class WorkerDiedError(SegQCError):
    """The Ray worker (or node) running a case died on the first try and on the retry."""


def task_name(case_id: str) -> str:
    return f"{TASK_NAME_PREFIX}{case_id}"


def run_case_task(threads: int, case: BatchCase, out_dir: str, model_path: Optional[str], device: str,
                  params: Optional[PostprocessParams], thumbnails_per_case: int,
                  model_sha256: Optional[str]) -> RankRow:
    """What one Ray task runs: the case's row, FAILED with the reason when it cannot be checked.

    Only the death of the process itself escapes as a Ray error (and is retried)."""
    try:
        import torch

        torch.set_num_threads(threads)
        return process_case_with_model(case, out_dir, model_path, device, params, thumbnails_per_case,
                                       expected_sha256=model_sha256)
    except Exception as exc:  # e.g. the model does not load on this node: the case failed, the batch goes on
        return failed_row(case.case_id, exc)


def died_message(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return (f"the Ray worker checking this case died on the first try and on the retry "
            f"({type(exc).__name__}: {first_line[:300]})")


@dataclass(frozen=True)
class RayWorkers:
    """Pass as ``engine`` to :func:`~.runner.run_batch` to check cases as Ray tasks (Ray already connected,
    see :func:`~.ray_connect.connect`; otherwise a local Ray instance is started)."""

    model_path: Optional[str]
    device: str = "cpu"
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    model_sha256: Optional[str] = None  # the driver's model: resume compares it, workers check theirs against it

    def run_cases(self, todo: Sequence[BatchCase], out_dir: Path, params: Optional[PostprocessParams],
                  thumbnails_per_case: int, stats: BatchStats, finished: Callable[[RankRow], None]) -> None:
        if not todo:
            return
        ray = import_ray()
        if not ray.is_initialized():
            ray.init()
        # max_calls=0: keep worker processes (and their loaded model) between tasks, GPU tasks included.
        task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=TASK_RETRIES,
                          retry_exceptions=False, max_calls=0)(run_case_task)
        threads = max(1, int(self.num_cpus))
        model = None if self.model_path is None else str(self.model_path)
        pending: dict[Any, BatchCase] = {}
        queue = deque(todo)
        reported: set[str] = set()
        while queue or pending:
            while queue and len(pending) < self.max_in_flight:
                case = queue.popleft()
                ref = task.options(name=task_name(case.case_id)).remote(
                    threads, case, str(out_dir), model, self.device, params, thumbnails_per_case, self.model_sha256)
                pending[ref] = case
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                case = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as exc:  # Ray gave up on the task (its worker died twice): the case failed
                    row = failed_row(case.case_id, WorkerDiedError(died_message(exc)))
                if row.case_id != case.case_id or case.case_id in reported:
                    raise SegQCError(f"Ray returned a row for {row.case_id!r} to the task of {case.case_id!r}")
                reported.add(case.case_id)
                add_row_timing(stats, row)
                finished(row)
