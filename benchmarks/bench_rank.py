"""Throughput of ``segqc rank``: cases per second and where the time goes (disk I/O vs network).

Builds ``--cases`` (default 200) cases of the shared dataset's size in a temporary folder at run time
(the real hippocampus cases, cycled, each copy's segmentation perturbed so no two are identical; or
synthetic volumes of the same size with ``--synthetic`` or when the data is absent; nothing is kept),
then ranks them twice with one loaded model in the same run, alternating block by block (``--blocks``)
so both modes see the same background load:

* reference: strictly serial (``prefetch=0``: read, network, write, one case after another)
* pipelined: the default (reader thread prefetching, writer thread compressing and drawing thumbnails)
* processes: ``--workers`` worker processes (``segqc rank --workers``), model loaded once per worker;
  their start-up (spawn, torch import, model load) is included in the wall time, once per block

and prints cases/s of both, their ratio, and the share of per-case time spent in I/O (reading inputs,
writing error maps, report and thumbnails) vs the network and report.

    python benchmarks/bench_rank.py [--cases 200] [--model PKG] [--threads 2] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from SegQCLib.batch.cases import BatchCase
from SegQCLib.batch.results import BatchStats
from SegQCLib.batch.runner import run_batch
from SegQCLib.batch.workers import ProcessWorkers
from SegQCLib.engine import QCEngine
from SegQCLib.io.datasets import hippocampus_dir, list_nnunet_cases
from SegQCLib.network.config import ModelConfig
from SegQCLib.network.package import default_model_path, init_model_package

# Size of the shared hippocampus volumes (z, y, x), used for synthetic cases.
SHARED_SHAPE_ZYX = (36, 50, 35)


def build_from_shared(root: Path, count: int, rng: np.random.Generator) -> list[BatchCase]:
    sources = list_nnunet_cases(hippocampus_dir())
    cases = []
    for index in range(count):
        source = sources[index % len(sources)]
        case_id = f"case{index:04d}"
        image = root / "images" / f"{case_id}_0000.nii.gz"
        shutil.copyfile(source.images[0], image)
        seg_image = sitk.ReadImage(str(source.label))
        array = sitk.GetArrayFromImage(seg_image)
        shift = int(rng.integers(-2, 3))  # a different "segmenter mistake" per copy
        perturbed = sitk.GetImageFromArray(np.roll(array, shift, axis=2).astype(np.uint8))
        perturbed.CopyInformation(seg_image)
        seg = root / "segs" / f"{case_id}.nii.gz"
        sitk.WriteImage(perturbed, str(seg), True)
        cases.append(BatchCase(case_id, (image,), seg))
    return cases


def build_synthetic(root: Path, count: int, rng: np.random.Generator) -> list[BatchCase]:
    z, y, x = np.ogrid[: SHARED_SHAPE_ZYX[0], : SHARED_SHAPE_ZYX[1], : SHARED_SHAPE_ZYX[2]]
    cases = []
    for index in range(count):
        centre = np.array(SHARED_SHAPE_ZYX) / 2 + rng.normal(0, 2, 3)
        radius = rng.uniform(6, 10)
        distance = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
        seg = (distance < radius).astype(np.uint8) + (distance < radius / 2).astype(np.uint8)
        image = (200 * (distance < radius) + rng.normal(300, 40, SHARED_SHAPE_ZYX)).astype(np.int16)
        case_id = f"case{index:04d}"
        paths = root / "images" / f"{case_id}_0000.nii.gz", root / "segs" / f"{case_id}.nii.gz"
        for array, path in zip((image, seg), paths):
            sitk.WriteImage(sitk.GetImageFromArray(array), str(path), True)
        cases.append(BatchCase(case_id, (paths[0],), paths[1]))
    return cases


def add_stats(total: BatchStats, part: BatchStats) -> None:
    for name in ("cases", "read_s", "compute_s", "write_s", "read_wait_s", "write_wait_s", "wall_s"):
        setattr(total, name, getattr(total, name) + getattr(part, name))


def resolve_model(requested: str | None, scratch: Path) -> tuple[Path, str]:
    if requested:
        return Path(requested), "given"
    try:
        return default_model_path(), "bundled default"
    except Exception:  # no bundled model in this checkout: same architecture, random weights, same cost
        return init_model_package(scratch / "model", ModelConfig(), seed=0), "untrained default architecture"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--model", help="model package (default: the bundled model, else an untrained one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (in-process modes, and per worker process)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="worker processes (processes mode)")
    parser.add_argument("--thumbnails", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="synthetic cases even when shared data exists")
    parser.add_argument("--blocks", type=int, default=4, help="serial and pipelined runs alternate over blocks")
    parser.add_argument("--skip-serial", action="store_true", help="only the pipelined run")
    parser.add_argument("--json-out", help="also write the results as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="segqc-bench-rank-") as scratch_name:
        scratch = Path(scratch_name)
        (scratch / "images").mkdir()
        (scratch / "segs").mkdir()
        started = time.perf_counter()
        shared = not args.synthetic and (hippocampus_dir() / "imagesTr").is_dir()
        cases = (build_from_shared if shared else build_synthetic)(scratch, args.cases, rng)
        print(f"{len(cases)} {'shared-data' if shared else 'synthetic'} cases prepared in "
              f"{time.perf_counter() - started:.1f} s")
        model, origin = resolve_model(args.model, scratch)
        engine = QCEngine(model, args.device)
        print(f"model: {engine.model_info.get('name')} ({origin}) on {engine.device}, torch threads {args.threads}")
        run_batch(cases[:2], scratch / "warmup", engine, thumbnails_per_case=args.thumbnails)  # lazy init, caches

        # Modes alternate block by block so that both see the same background load on a shared machine.
        workers = ProcessWorkers(str(model), args.workers, args.device, args.threads)
        modes = [("serial", 0), ("pipelined", 2), ("processes", workers)]
        if args.skip_serial:
            modes = modes[1:]
        totals = {name: BatchStats() for name, _ in modes}
        failed = dict.fromkeys(totals, 0)
        block_size = max(1, -(-len(cases) // args.blocks))
        for start in range(0, len(cases), block_size):
            for name, how in modes:
                runner, prefetch = (how, 0) if isinstance(how, ProcessWorkers) else (engine, how)
                result = run_batch(cases[start:start + block_size], scratch / name / str(start), runner,
                                   prefetch=prefetch, thumbnails_per_case=args.thumbnails, resume=False)
                add_stats(totals[name], result.stats)
                failed[name] += len(result.failed)
        results = {}
        for name, stats in totals.items():
            summary = {"cases_per_s": round(stats.cases_per_s, 4), "wall_s": round(stats.wall_s, 2),
                       "checked": stats.cases, "failed": failed[name], "io_fraction": round(stats.io_fraction, 4),
                       "read_s": round(stats.read_s, 2), "write_s": round(stats.write_s, 2),
                       "compute_s": round(stats.compute_s, 2), "read_wait_s": round(stats.read_wait_s, 2),
                       "write_wait_s": round(stats.write_wait_s, 2)}
            results[name] = summary
            print(f"{name:9s}: {summary['cases_per_s']:.3f} cases/s ({summary['wall_s']:.1f} s for "
                  f"{summary['checked']} cases, {summary['failed']} failed); per-case time: I/O "
                  f"{100 * summary['io_fraction']:.1f}% (read {summary['read_s']:.1f} s, write+thumbnails "
                  f"{summary['write_s']:.1f} s) vs network+report {100 * (1 - summary['io_fraction']):.1f}% "
                  f"({summary['compute_s']:.1f} s); main thread waited: read {summary['read_wait_s']:.1f} s, "
                  f"write {summary['write_wait_s']:.1f} s")
        if "serial" in results:
            for name in ("pipelined", "processes"):
                ratio = results[name]["cases_per_s"] / max(results["serial"]["cases_per_s"], 1e-9)
                results[f"speedup_{name}_vs_serial"] = round(ratio, 3)
                print(f"{name} / serial throughput: {ratio:.2f}x")
        results.update(cases=len(cases), data="shared" if shared else "synthetic", model_origin=origin,
                       device=engine.device, threads=args.threads)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
