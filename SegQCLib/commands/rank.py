"""``segqc rank``: QC every case of a dataset with one loaded model and rank them worst first.

Writes ``ranking.csv``, ``failures.json``, ``index.html`` (thumbnails of each case's worst slices) and
each case's report under ``OUT/cases/<case_id>/``.  Re-running with the same ``--out`` skips cases
whose report is complete, newer than their inputs and made with the same model and region options.

With --ray the cases run as tasks on a Ray cluster: --ray (or --ray auto) joins the cluster started with
`ray start` on this machine, --ray HOST:PORT the head node at that address, --ray local a private Ray
instance on this machine.  Every node must see the inputs, the output folder and the model package at the
same paths.  A task whose worker dies is retried once, then its case is reported failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Optional, TextIO

from ..batch.case_steps import DEFAULT_THUMBNAILS_PER_CASE
from ..batch.cases import BatchCase, Unpaired, cases_from_folders
from ..batch.ray_workers import DEFAULT_MAX_IN_FLIGHT
from ..batch.results import CaseStatus
from ..batch.runner import DEFAULT_PREFETCH, run_batch
from ..batch.workers import ProcessWorkers
from ..engine import QCEngine
from ..files import check_output_folder
from .common import add_region_options, postprocess_params_from_args
from .options import non_negative_int, positive_int
from .run import read_manifest

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
PROGRESS_BAR_WIDTH = 30


DESCRIPTION = """\
QC every case of a dataset with one loaded model and rank the cases worst first (lowest estimated Dice first).

Writes into --out: ranking.csv (one row per case, with in_domain: false for a case outside the model's
domain, whose estimates are unreliable), failures.json (cases that could not be checked, images without a
segmentation and segmentations without an image), index.html (the ranking with thumbnails of each case's
worst slices) and each case's report and error maps under cases/<case_id>/. Running again with the same
--out skips cases whose report is complete, newer than their inputs and made with the same model and
region options."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "rank", help="QC a whole dataset and rank its cases worst first (ranking.csv, index.html)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("cases (give --manifest, or --images and --segs)")
    source.add_argument("--manifest", help="CSV with columns case_id,image,seg (modalities separated by ';')")
    source.add_argument("--images", help="folder of images: <case>.nii.gz or <case>_0000.nii.gz, _0001, ...")
    source.add_argument("--segs", help="folder of segmentations named <case>.nii.gz (or <case>.seg.nrrd)")
    parser.add_argument("--out", required=True, help="output folder (re-use it to resume)")
    parser.add_argument("--model", help="model package folder (default: $SEGQC_MODEL or the bundled model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="worker processes, each with its own model copy (CPU: often faster than one process "
                             "with many threads; default 1: one process, reads and writes overlapped in threads)")
    parser.add_argument("--threads-per-worker", type=positive_int, default=1,
                        help="torch threads per worker process (default %(default)s)")
    cluster = parser.add_argument_group("Ray cluster")
    cluster.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                         help="run the cases as Ray tasks: 'auto' (the default when ADDRESS is left out: the cluster "
                              "of `ray start` on this machine or $RAY_ADDRESS), 'local' (a Ray instance for this "
                              "run only) or the head node's HOST:PORT")
    cluster.add_argument("--ray-cpus-per-task", type=float, default=1.0,
                         help="CPUs Ray reserves for each case, also its torch threads (default %(default)s)")
    cluster.add_argument("--ray-gpus-per-task", type=float, default=0.0,
                         help="GPUs Ray reserves for each case (default %(default)s; e.g. 0.5: two cases per GPU)")
    cluster.add_argument("--ray-max-in-flight", type=positive_int, default=DEFAULT_MAX_IN_FLIGHT,
                         help="cases submitted ahead of the finished ones (default %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch threads of this process (default: torch's choice; 1 is often fastest for small "
                             "volumes on a busy CPU)")
    parser.add_argument("--prefetch", type=non_negative_int, default=DEFAULT_PREFETCH,
                        help="cases read ahead while the network runs; 0: strictly one after another "
                             "(default %(default)s)")
    parser.add_argument("--thumbnails", type=non_negative_int, default=DEFAULT_THUMBNAILS_PER_CASE,
                        help="worst slices pictured per case on the page; 0: none (default %(default)s)")
    parser.add_argument("--no-resume", action="store_true",
                        help="check every case again (default: skip cases already checked)")
    parser.add_argument("--progress", choices=("bar", "lines", "none"), default=None,
                        help="progress on stderr (default: a bar on a terminal, else one line per case)")
    add_region_options(parser)
    parser.set_defaults(func=run)


def _cases(args: argparse.Namespace) -> tuple[list[BatchCase], list[Unpaired]]:
    if args.manifest:
        return [BatchCase(c.case_id, c.images, c.seg) for c in read_manifest(Path(args.manifest))], []
    return cases_from_folders(args.images, args.segs)


class ProgressPrinter:
    def __init__(self, mode: str, stream: TextIO) -> None:
        self.mode = mode
        self.stream = stream

    def __call__(self, done: int, total: int, case_id: str, status: CaseStatus) -> None:
        if self.mode == "none":
            return
        if self.mode == "bar":
            filled = int(PROGRESS_BAR_WIDTH * done / max(total, 1))
            bar = "#" * filled + "." * (PROGRESS_BAR_WIDTH - filled)
            end = "\n" if done == total else ""
            self.stream.write(f"\r[{bar}] {done}/{total} {case_id[:30]:30s} {status.value:8s}{end}")
        else:
            self.stream.write(f"[{done}/{total}] {case_id}: {status.value}\n")
        self.stream.flush()


def _usage_problem(args: argparse.Namespace) -> Optional[str]:
    by_folders = bool(args.images and args.segs)
    if bool(args.manifest) == by_folders or (not by_folders and (args.images or args.segs)):
        return "give --manifest, or both --images and --segs"
    if args.prefetch < 0 or args.workers < 1 or args.threads_per_worker < 1:
        return "--prefetch must be >= 0, --workers and --threads-per-worker >= 1"
    if args.ray is not None:
        if args.workers > 1:
            return "--ray and --workers are alternatives: give one of them"
        if not args.ray_cpus_per_task > 0 or args.ray_gpus_per_task < 0 or args.ray_max_in_flight < 1:
            return "--ray-cpus-per-task must be > 0, --ray-gpus-per-task >= 0 and --ray-max-in-flight >= 1"
        if args.ray_gpus_per_task > 0 and args.device == "cpu":
            return "--ray-gpus-per-task reserves GPUs that --device cpu would not use; give --device auto or cuda"
    return None


def _ray_workers(args: argparse.Namespace, model_sha256: Optional[str]) -> Any:
    from ..batch.ray_connect import check_feasible, connect
    from ..batch.ray_workers import RayWorkers

    info = connect(args.ray)
    logger.info("%s", info.describe())
    check_feasible(info, args.ray_cpus_per_task, args.ray_gpus_per_task)
    return RayWorkers(args.model, args.device, args.ray_cpus_per_task, args.ray_gpus_per_task,
                      args.ray_max_in_flight, model_sha256)


def run(args: argparse.Namespace) -> int:
    problem = _usage_problem(args)
    if problem:
        print(f"segqc rank: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    check_output_folder(args.out)  # before the model and the cases
    cases, unmatched = _cases(args)
    for item in unmatched:
        print(f"segqc rank: warning: {item.case_id} cannot be checked: {item.message}", file=sys.stderr)
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    # Loaded here too so that a bad model fails before any case; on the driver of a cluster run only checked.
    engine: Any = QCEngine(args.model, "cpu" if args.ray is not None else args.device)
    model_name = engine.model_info.get("name")
    model_sha256 = engine.model_info.get("sha256")
    if args.workers > 1:
        engine = ProcessWorkers(args.model, args.workers, args.device, args.threads_per_worker, model_sha256)
    mode = args.progress or ("bar" if sys.stderr.isatty() else "lines")
    try:
        if args.ray is not None:
            engine = _ray_workers(args, model_sha256)
        result = run_batch(cases, args.out, engine, postprocess_params_from_args(args), prefetch=args.prefetch,
                           thumbnails_per_case=args.thumbnails, resume=not args.no_resume,
                           progress=ProgressPrinter(mode, sys.stderr), notes=[f"Model: {model_name}"],
                           unpaired=unmatched)
    finally:
        if args.ray is not None:
            from ..batch.ray_connect import disconnect

            disconnect()
    stats = result.stats
    resumed = sum(r.status is CaseStatus.RESUMED for r in result.rows)
    print(f"{len(result.rows) - len(result.failed)} of {len(result.rows)} cases ranked ({resumed} from an earlier "
          f"run) in {stats.wall_s:.1f} s; {stats.cases_per_s:.2f} cases/s checked")
    print(f"ranking: {result.ranking_csv}")
    print(f"page: {result.index_html}")
    if result.failed:
        print(f"{len(result.failed)} case(s) failed, see {Path(args.out) / 'failures.json'}: "
              + ", ".join(r.case_id for r in result.failed[:5]))
        return EXIT_SOME_FAILED
    return EXIT_OK
