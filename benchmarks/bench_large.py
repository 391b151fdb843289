"""Benchmark: ``segqc run`` on a 512x512x300 CT-like case with a large structure: time and peak memory.

The case is made by code: 300x512x512 (z, y, x) at 0.8x0.8x1.5 mm (x, y, z), a body ellipse of soft tissue
with air around it, and a two-class "organ" (a large ellipsoid split in two) that covers about a fifth of
the volume, segmented with a few defects (a missed slab, an extra blob) so that there are error regions to
box.  The command runs as a fresh process (``wait4`` gives its CPU time and peak RSS); the report's
``timing_s`` gives the stages.  Printed beside the peak RSS: the bytes of the inputs as SegQC holds them
(image float32 + labels uint8) and of one float32 map of the network's 1 mm grid, so the memory bound can
be read as a multiple of the case's own size.

Usage: python benchmarks/bench_large.py [--model PATH] [--runtime torch|openvino] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from measure import run_measured, write_volumes

REPOSITORY = Path(__file__).resolve().parents[1]
SHAPE_ZYX = (300, 512, 512)
SPACING_XYZ_MM = (0.8, 0.8, 1.5)


def write_case(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    depth, height, width = SHAPE_ZYX
    z, y, x = np.ogrid[:depth, :height, :width]
    body = ((y - height / 2) / (height * 0.45)) ** 2 + ((x - width / 2) / (width * 0.47)) ** 2 <= 1
    organ = (((z - depth / 2) / (depth * 0.42)) ** 2 + ((y - height * 0.5) / (height * 0.3)) ** 2
             + ((x - width * 0.45) / (width * 0.3)) ** 2) <= 1
    truth = np.where(organ, np.where(x < width * 0.45, 1, 2), 0).astype(np.uint8)
    image = np.where(body, 40.0, -1000.0).astype(np.float32) + np.where(organ, 60.0, 0.0).astype(np.float32)
    image += rng.normal(0, 12, SHAPE_ZYX).astype(np.float32)
    seg = truth.copy()
    seg[depth // 2:depth // 2 + 6] = 0  # a missed slab
    blob = ((z - depth * 0.2) ** 2 + (y - height * 0.8) ** 2 + (x - width * 0.5) ** 2) <= 15 ** 2
    seg[blob & body] = 2  # an extra blob
    image_path, seg_path = write_volumes(folder, {"image.nii.gz": image, "seg.nii.gz": seg}, SPACING_XYZ_MM)
    return image_path, seg_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPOSITORY / "Resources" / "Models" / "hippocampus"))
    parser.add_argument("--runtime", default="torch", choices=("torch", "openvino"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        started = time.perf_counter()
        image, seg = write_case(scratch)
        print(f"case {'x'.join(map(str, SHAPE_ZYX))} (z,y,x) at {SPACING_XYZ_MM} mm made in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        command = [sys.executable, "-m", "SegQCLib.commands.cli", "-q", "run", "--image", str(image), "--seg", str(seg),
                   "--out", str(scratch / "out"), "--model", args.model, "--progress", "none", "--device", "cpu",
                   "--runtime", args.runtime] + (["--threads", str(args.threads)] if args.threads else [])
        environment = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        try:
            wall, cpu_s, peak_mib = run_measured(command, environment)
        except RuntimeError as exc:
            print(exc)
            return 1
        report = json.loads((scratch / "out" / "report.json").read_text())
        map_bytes = sum(p.stat().st_size for p in (scratch / "out").glob("error_prob_*.nii.gz"))
    voxels = int(np.prod(SHAPE_ZYX))
    grid_1mm = int(np.prod([s * sp for s, sp in zip(SHAPE_ZYX, SPACING_XYZ_MM[::-1])]))
    inputs_mib = voxels * 5 / 2**20
    print(f"segqc run: {wall:.1f} s wall, {cpu_s:.1f} s CPU, peak RSS {peak_mib:.0f} MiB "
          f"= {peak_mib / inputs_mib:.1f} x the inputs held in memory ({inputs_mib:.0f} MiB); one float32 map of the "
          f"1 mm grid is {grid_1mm * 4 / 2**20:.0f} MiB")
    inference = report["parameters"]["inference"]
    print("stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report["timing_s"].items()))
    print(f"windows {inference['windows']} (batch {inference['window_batch']}), runtime {inference.get('runtime')}, "
          f"boxes {len(report['boxes'])}, error maps {map_bytes / 2**20:.1f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps({"wall_s": wall, "cpu_s": cpu_s,
                                               "peak_rss_mib": peak_mib, "timing_s": report["timing_s"],
                                               "windows": inference["windows"], "boxes": len(report["boxes"])},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
