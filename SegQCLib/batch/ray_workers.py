"""Optional: run ``segqc rank`` cases on a Ray cluster (``pip install segqc[ray]`` or ``pip install ray``).

The per-case step :func:`SegQCLib.batch.process_case_with_model` is self-contained (inputs: the case's
file paths, the output folder, the model path; output: one row), so Ray only has to ship it to the
workers.  Every worker needs the same file system view as the driver (shared storage for the inputs,
the output folder and the model package) and SegQC installed.  Resume, ranking, ``failures.json`` and
``index.html`` stay with :func:`SegQCLib.batch.run_batch` on the driver::

    import ray
    from SegQCLib.batch import run_batch
    from SegQCLib.batch_ray import RayWorkers

    ray.init(address="auto")           # or ray.init() for the local machine
    run_batch(cases, out_dir, RayWorkers(model_path="/shared/models/segqc", device="cpu"))

Each task asks Ray for ``num_cpus`` CPUs (and ``num_gpus`` GPUs) and keeps one model per worker process.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import SegQCError
from ..quality.postprocess import PostprocessParams
from .case_steps import process_case_with_model
from .cases import BatchCase
from .results import BatchStats, RankRow, add_row_timing, failed_row

# Tasks submitted ahead of the finished ones: keeps the driver's memory bounded on huge datasets.
DEFAULT_MAX_IN_FLIGHT = 256


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise SegQCError("Ray is not installed: `pip install ray` (optional; only needed for cluster runs)") from exc
    return ray


def _run_with_threads(threads: int, *args: Any) -> RankRow:
    import torch

    torch.set_num_threads(threads)
    return process_case_with_model(*args)


@dataclass(frozen=True)
class RayWorkers:
    """Pass as ``engine`` to :func:`SegQCLib.batch.run_batch` to check cases as Ray tasks."""

    model_path: Optional[str]
    device: str = "cpu"
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT

    def run_cases(self, todo: Sequence[BatchCase], out_dir: Path, params: Optional[PostprocessParams],
                  thumbnails_per_case: int, stats: BatchStats, finished: Callable[[RankRow], None]) -> None:
        ray = _ray()
        if not ray.is_initialized():
            ray.init()
        task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus)(_run_with_threads)
        threads = max(1, int(self.num_cpus))
        model = None if self.model_path is None else str(self.model_path)
        pending: dict[Any, BatchCase] = {}
        queue = deque(todo)
        while queue or pending:
            while queue and len(pending) < self.max_in_flight:
                case = queue.popleft()
                pending[task.remote(threads, case, str(out_dir), model, self.device, params,
                                    thumbnails_per_case)] = case
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                case = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as exc:  # the task or its worker died: that case failed, the rest go on
                    row = failed_row(case.case_id, exc)
                add_row_timing(stats, row)
                finished(row)
