"""Throughput of ``segqc rank --ray`` on a real local Ray cluster of 1 and of 2 worker nodes (1 CPU each),
against the same cases ranked in one local process in the same run.

Builds ``--cases`` (default 200) synthetic cases of the shared hippocampus volumes' size in a temporary folder
(nothing of the shared data is copied), then ranks them:

* local (reference): one process, the default pipeline, one torch thread, measured before and after the
  cluster runs (the mean is the reference; the two tell how much the machine's load drifted);
* ray, 1 node: a head node with 1 CPU started by ``ray start --head`` (tasks of 1 CPU: one case at a time);
* ray, 2 nodes: the head plus a node joined with ``ray start --address`` (two cases at a time).

Each Ray figure includes what a user waits for once the cluster is up: connecting, starting the worker
processes (torch import, model load) and shipping the tasks.  The cluster's start-up is printed apart.

    python benchmarks/bench_rank_ray.py [--cases 200] [--model PKG] [--json-out FILE]

On a 2-core machine the point is correctness and per-case overhead, not speed-up: two 1-CPU nodes, their
raylets and the driver share two cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "Testing"))

from bench_rank import build_synthetic, resolve_model  # noqa: E402  (benchmarks/, the script's folder)
from ray_cluster import LocalRayCluster  # noqa: E402  (Testing/)

from SegQCLib.batch.ray_connect import connect, disconnect  # noqa: E402
from SegQCLib.batch.ray_workers import RayWorkers  # noqa: E402
from SegQCLib.batch.runner import run_batch  # noqa: E402
from SegQCLib.engine import QCEngine  # noqa: E402


def rank_on_cluster(cases, out: Path, model: Path, sha256: str, worker_nodes: int, scratch: Path,
                    thumbnails: int) -> dict:
    started = time.perf_counter()
    with LocalRayCluster(scratch / f"ray{worker_nodes}", worker_nodes=worker_nodes - 1, cpus_per_node=1) as cluster:
        startup_s = time.perf_counter() - started
        began = time.perf_counter()
        info = connect(str(cluster.address))
        try:
            result = run_batch(cases, out, RayWorkers(str(model), "cpu", 1.0, 0.0, model_sha256=sha256),
                               thumbnails_per_case=thumbnails, resume=False)
        finally:
            disconnect()
        wall_s = time.perf_counter() - began
    return {"nodes": info.nodes, "cpus": info.cpus, "cluster_start_s": round(startup_s, 1), "wall_s": round(wall_s, 2),
            "cases_per_s": round(len(cases) / wall_s, 4), "failed": len(result.failed),
            "compute_s": round(result.stats.compute_s, 2), "read_s": round(result.stats.read_s, 2),
            "write_s": round(result.stats.write_s, 2)}


def rank_locally(cases, out: Path, engine: QCEngine, thumbnails: int) -> dict:
    began = time.perf_counter()
    result = run_batch(cases, out, engine, thumbnails_per_case=thumbnails, resume=False)
    wall_s = time.perf_counter() - began
    return {"wall_s": round(wall_s, 2), "cases_per_s": round(len(cases) / wall_s, 4), "failed": len(result.failed),
            "compute_s": round(result.stats.compute_s, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--model", help="model package (default: the bundled model, else an untrained one)")
    parser.add_argument("--thumbnails", type=int, default=3)
    parser.add_argument("--json-out", help="also write the results as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="segqc-bench-ray-") as scratch_name:
        scratch = Path(scratch_name)
        (scratch / "images").mkdir()
        (scratch / "segs").mkdir()
        cases = build_synthetic(scratch, args.cases, np.random.default_rng(0))
        model, origin = resolve_model(args.model, scratch)
        engine = QCEngine(model, "cpu")
        sha256 = engine.model_info["sha256"]
        print(f"{len(cases)} synthetic cases; model {engine.model_info.get('name')} ({origin}), 1 torch thread")
        run_batch(cases[:2], scratch / "warmup", engine, thumbnails_per_case=args.thumbnails)

        results: dict = {"local_before": rank_locally(cases, scratch / "local0", engine, args.thumbnails)}
        for nodes in (1, 2):
            results[f"ray_{nodes}_node"] = rank_on_cluster(cases, scratch / f"ray{nodes}", model, sha256, nodes,
                                                           scratch, args.thumbnails)
        results["local_after"] = rank_locally(cases, scratch / "local1", engine, args.thumbnails)
        reference = (results["local_before"]["cases_per_s"] + results["local_after"]["cases_per_s"]) / 2
        before, after = results["local_before"]["cases_per_s"], results["local_after"]["cases_per_s"]
        print(f"local, one process (reference): {reference:.3f} cases/s (before {before:.3f}, after {after:.3f})")
        for nodes in (1, 2):
            run = results[f"ray_{nodes}_node"]
            run["ratio_to_local"] = round(run["cases_per_s"] / reference, 3)
            print(f"ray, {nodes} node(s) x 1 CPU: {run['cases_per_s']:.3f} cases/s = {run['ratio_to_local']:.2f} x "
                  f"local ({run['wall_s']:.1f} s, {run['failed']} failed; cluster start "
                  f"{run['cluster_start_s']:.1f} s, "
                  "not included)")
        two, one = results["ray_2_node"], results["ray_1_node"]
        results["ratio_2_to_1_node"] = round(two["cases_per_s"] / max(one["cases_per_s"], 1e-9), 3)
        print(f"ray 2 nodes / 1 node: {results['ratio_2_to_1_node']:.2f}x")
        results.update(cases=len(cases), model_origin=origin, reference_cases_per_s=round(reference, 4))
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
