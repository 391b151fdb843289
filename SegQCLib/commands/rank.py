"""``segqc rank``: QC every case of a dataset with one loaded model and rank them worst first.

Writes ``ranking.csv``, ``failures.json``, ``index.html`` (thumbnails of each case's worst slices) and
each case's report under ``OUT/cases/<case_id>/``.  Re-running with the same ``--out`` skips cases
whose report is complete, newer than their inputs and made with the same model and region options.
See ``SegQCLib/batch.py`` for the layout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from ..batch.cases import BatchCase, cases_from_folders
from ..batch.results import CaseStatus
from ..batch.runner import DEFAULT_PREFETCH, run_batch
from ..batch.thumbnails import DEFAULT_THUMBNAILS_PER_CASE
from ..batch.workers import ProcessWorkers
from ..engine import QCEngine
from ..files import check_output_folder
from .common import add_region_options, postprocess_params_from_args
from .run import read_manifest

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
PROGRESS_BAR_WIDTH = 30


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "rank", help="QC a whole dataset and rank its cases worst first (ranking.csv, index.html)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("cases (give --manifest, or --images and --segs)")
    source.add_argument("--manifest", help="CSV with columns case_id,image,seg (modalities separated by ';')")
    source.add_argument("--images", help="folder of images: <case>.nii.gz or <case>_0000.nii.gz, _0001, ...")
    source.add_argument("--segs", help="folder of segmentations named <case>.nii.gz (or <case>.seg.nrrd)")
    parser.add_argument("--out", required=True, help="output folder (re-use it to resume)")
    parser.add_argument("--model", help="model package folder (default: $SEGQC_MODEL or the bundled model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes, each with its own model copy (CPU: often faster than one process "
                             "with many threads; default 1: one process, reads and writes overlapped in threads)")
    parser.add_argument("--threads-per-worker", type=int, default=1, help="torch threads per worker process")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of this process (default: torch's choice; 1 is often fastest for small "
                             "volumes on a busy CPU, see benchmarks/bench_rank.py)")
    parser.add_argument("--prefetch", type=int, default=DEFAULT_PREFETCH,
                        help="cases read ahead while the network runs (0: strictly one after another)")
    parser.add_argument("--thumbnails", type=int, default=DEFAULT_THUMBNAILS_PER_CASE,
                        help="worst slices pictured per case on the page (default %(default)s)")
    parser.add_argument("--no-resume", action="store_true", help="check every case again")
    parser.add_argument("--progress", choices=("bar", "lines", "none"), default=None,
                        help="progress on stderr (default: a bar on a terminal, else one line per case)")
    add_region_options(parser)
    parser.set_defaults(func=run)


def _cases(args: argparse.Namespace) -> tuple[list[BatchCase], list[str]]:
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


def run(args: argparse.Namespace) -> int:
    by_folders = bool(args.images and args.segs)
    if bool(args.manifest) == by_folders or (not by_folders and (args.images or args.segs)):
        print("segqc rank: error: give --manifest, or both --images and --segs", file=sys.stderr)
        return EXIT_USAGE
    if args.prefetch < 0 or args.workers < 1 or args.threads_per_worker < 1:
        print("segqc rank: error: --prefetch must be >= 0, --workers and --threads-per-worker >= 1", file=sys.stderr)
        return EXIT_USAGE
    check_output_folder(args.out)  # before the model and the cases
    cases, unmatched = _cases(args)
    for message in unmatched:
        print(f"segqc rank: warning: skipped {message}", file=sys.stderr)
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    engine = QCEngine(args.model, args.device)  # loaded here too so that a bad model fails before any case
    model_name = engine.model_info.get("name")
    if args.workers > 1:
        engine = ProcessWorkers(args.model, args.workers, args.device, args.threads_per_worker,
                                engine.model_info.get("sha256"))
    mode = args.progress or ("bar" if sys.stderr.isatty() else "lines")
    result = run_batch(cases, args.out, engine, postprocess_params_from_args(args), prefetch=args.prefetch,
                       thumbnails_per_case=args.thumbnails, resume=not args.no_resume,
                       progress=ProgressPrinter(mode, sys.stderr), notes=[f"Model: {model_name}"])
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
