"""Benchmark: the ``segqc run`` command end to end against the anchor network as a command, in one run.

Case: a 64x256x256 (z, y, x) MR-like volume at 1x1x2 mm (x, y, z) whose two-class segmentation fills most
of it, made by code.  Commands, each a fresh process, interleaved (anchor, then each SegQC variant, per
repeat) after one untimed warm-up of each, medians of ``--repeats``:

* anchor: ``benchmarks/anchor_qcresunet.py`` (start Python, import torch and SimpleITK, read, resample to
  1 mm, one forward pass of the QCResUNet-size network on the whole volume, write one float32 map);
* ``segqc run`` with each model: by default today's bundled model and an untrained package of the v2
  architecture (``benchmarks/configs/hippocampus_v2_arch.json``: widths 16-128, full-resolution width 16,
  2.07 GMAC per 48x64x48 window); ``--model PATH`` (repeatable) measures those packages instead, e.g. the
  final v2 model;  ``--runtime`` (repeatable: torch, openvino) picks what runs the windows.

Printed per command: wall seconds, CPU seconds (user + system of the process, from ``wait4``), peak RSS,
and the ratio to the anchor (target: wall <= 0.5).  Also: the stages of the last ``segqc run``
(report.json ``timing_s``), the error maps' size and writing time against SimpleITK's gzip float32, and the
start-up of the commands that need no network.  On a loaded machine compare the ratios, which are measured
in the same run; CPU seconds are less disturbed by other jobs than wall seconds.

Usage: python benchmarks/bench_inference.py [--model PATH ...] [--runtime torch|openvino ...]
       [--device cpu|cuda] [--threads N] [--repeats N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from measure import run_measured, write_volumes

logger = logging.getLogger("bench_inference")

REPOSITORY = Path(__file__).resolve().parents[1]
ANCHOR_SCRIPT = REPOSITORY / "benchmarks" / "anchor_qcresunet.py"
V2_ARCHITECTURE_CONFIG = REPOSITORY / "benchmarks" / "configs" / "hippocampus_v2_arch.json"
BUNDLED_MODEL = REPOSITORY / "Resources" / "Models" / "hippocampus"
CASE_SHAPE_ZYX = (64, 256, 256)
CASE_SPACING_XYZ_MM = (1.0, 1.0, 2.0)
TARGET_RATIO = 0.5
STARTUP_TARGET_S = 0.5
KIB = 1024


@dataclass
class Measurement:
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    peak_rss_mib: list[float] = field(default_factory=list)

    def add(self, wall_s: float, cpu_s: float, rss_mib: float) -> None:
        self.wall_s.append(wall_s)
        self.cpu_s.append(cpu_s)
        self.peak_rss_mib.append(rss_mib)

    @property
    def wall(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_s)

    @property
    def rss(self) -> float:
        return max(self.peak_rss_mib)


def write_case(folder: Path) -> tuple[Path, Path]:
    """64x256x256 MR-like volume at 1x1x2 mm, two classes covering ~65 % of it."""

    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, s) for s in CASE_SHAPE_ZYX), indexing="ij")
    inside = (np.abs(z) < 0.9) & (np.abs(y) < 0.85) & (np.abs(x) < 0.85)
    seg = np.where(inside, np.where(x < 0, 1, 2), 0).astype(np.uint8)
    image = (100 + 40 * seg + 20 * np.sin(3 * y) + rng.normal(0, 10, CASE_SHAPE_ZYX)).astype(np.float32)
    image_path, seg_path = write_volumes(folder, {"image.nii.gz": image, "seg.nii.gz": seg}, CASE_SPACING_XYZ_MM)
    return image_path, seg_path


def v2_architecture_package(folder: Path) -> Path:
    out = folder / "v2_architecture"
    subprocess.run([sys.executable, "-m", "SegQCLib.commands.cli", "-q", "model", "init", "--config",
                    str(V2_ARCHITECTURE_CONFIG), "--out", str(out)], check=True, cwd=REPOSITORY)
    return out


def map_writing(report_dir: Path, repeats: int) -> dict[str, float]:
    """Size and CPU time of writing the run's error maps: SegQC's 8-bit maps against SimpleITK gzip float32."""
    import SimpleITK as sitk

    from SegQCLib.io.image_files import read_image, write_probability_map

    maps = sorted(report_dir.glob("error_prob_*.nii.gz"))
    volumes = [read_image(path) for path in maps]
    results: dict[str, list[float]] = {"float32_s": [], "uint8_s": []}
    sizes = {"float32_bytes": 0, "uint8_bytes": 0}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(repeats):
            for volume in volumes:
                image = sitk.GetImageFromArray(volume.array)
                volume.geometry.apply_to(image)
                target = Path(scratch) / "float32.nii.gz"
                started = time.process_time()
                sitk.WriteImage(image, str(target), True)
                results["float32_s"].append(time.process_time() - started)
                sizes["float32_bytes"] = target.stat().st_size
                target = Path(scratch) / "uint8.nii.gz"
                started = time.process_time()
                write_probability_map(target, volume.array, volume.geometry)
                results["uint8_s"].append(time.process_time() - started)
                sizes["uint8_bytes"] = target.stat().st_size
    return {**{k: statistics.median(v) * len(maps) for k, v in results.items()}, **sizes, "maps": len(maps)}


def startup_commands(model: Path) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "SegQCLib.commands.cli"]
    return {"python -c pass (floor)": [sys.executable, "-c", "pass"],
            "segqc --help": [*cli, "--help"],
            "segqc estimate --help": [*cli, "estimate", "--help"],
            "segqc corrections --help": [*cli, "corrections", "--help"],
            "segqc model info": [*cli, "model", "info", str(model)],
            "segqc run --help": [*cli, "run", "--help"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="model package (repeatable; default: bundled + v2 "
                                                         "architecture, untrained)")
    parser.add_argument("--runtime", action="append", choices=("torch", "openvino"),
                        help="segqc run --runtime (repeatable; default torch)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="threads of both commands (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per command (median)")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up timings")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    environment = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        image, seg = write_case(scratch)
        models = {Path(m).name: Path(m) for m in args.model} if args.model else {
            "bundled": BUNDLED_MODEL, "v2-architecture": v2_architecture_package(scratch)}
        threads = ["--threads", str(args.threads)] if args.threads else []
        commands = {"anchor": [sys.executable, str(ANCHOR_SCRIPT), "--image", str(image), "--out",
                               str(scratch / "anchor.nii.gz"), "--device", args.device, *threads]}
        for name, path in models.items():
            for runtime in args.runtime or ["torch"]:
                commands[f"segqc {name} {runtime}"] = [
                    sys.executable, "-m", "SegQCLib.commands.cli", "-q", "run", "--image", str(image), "--seg",
                    str(seg), "--out", str(scratch / f"out_{name}_{runtime}"), "--model", str(path), "--device",
                    args.device, "--progress", "none", "--runtime", runtime, *threads]
        measured = {name: Measurement() for name in commands}
        for name, command in commands.items():
            logger.info("warm-up: %s", name)
            run_measured(command, environment, REPOSITORY)
        for repeat in range(args.repeats):
            for name, command in commands.items():
                measured[name].add(*run_measured(command, environment, REPOSITORY))
                logger.info("repeat %d %-40s %7.2f s wall %7.2f s cpu", repeat + 1, name, measured[name].wall_s[-1],
                            measured[name].cpu_s[-1])
        reports = {name: json.loads((scratch / f"out_{name.split()[1]}_{name.split()[2]}" / "report.json")
                                    .read_text()) for name in commands if name != "anchor"}
        writing = map_writing(scratch / f"out_{next(iter(models))}_{(args.runtime or ['torch'])[0]}", args.repeats)
        startup = {}
        if not args.no_startup:
            for name, command in startup_commands(next(iter(models.values()))).items():
                startup[name] = Measurement()
                for _ in range(args.repeats):
                    startup[name].add(*run_measured(command, environment, REPOSITORY))

    anchor = measured["anchor"]
    print()
    print(f"case {'x'.join(map(str, CASE_SHAPE_ZYX))} (z,y,x) at {CASE_SPACING_XYZ_MM} mm (x,y,z); device "
          f"{args.device}; threads {args.threads or 'default'}; repeats {args.repeats}; load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'command':<40} {'wall s':>8} {'cpu s':>8} {'RSS MiB':>8} {'wall ratio':>10} {'cpu ratio':>9}")
    for name, m in measured.items():
        print(f"{name:<40} {m.wall:8.2f} {m.cpu:8.2f} {m.rss:8.0f} {m.wall / anchor.wall:10.3f} "
              f"{m.cpu / anchor.cpu:9.3f}")
    for name, report in reports.items():
        inference = report["parameters"]["inference"]
        print(f"  {name}: stages (s) " + ", ".join(f"{k} {v:.2f}" for k, v in report["timing_s"].items())
              + f"; windows {inference['windows']} (batch {inference['window_batch']})")
    print(f"error maps ({writing['maps']}): SimpleITK gzip float32 {writing['float32_bytes'] / 2**20:.1f} MiB each, "
          f"{writing['float32_s']:.2f} s CPU; 8-bit scaled gzip-1 {writing['uint8_bytes'] / 2**20:.2f} MiB each, "
          f"{writing['uint8_s']:.2f} s CPU (ratio {writing['uint8_s'] / max(writing['float32_s'], 1e-9):.3f})")
    for name, m in startup.items():
        print(f"start-up {name:<32} {m.wall:6.2f} s wall {m.cpu:6.2f} s cpu")
    verdicts = []
    for name, m in measured.items():
        if name != "anchor":
            ratio = m.wall / anchor.wall
            verdicts.append(ratio <= TARGET_RATIO)
            print(f"target {name}: wall {ratio:.3f} <= {TARGET_RATIO} {'MET' if ratio <= TARGET_RATIO else 'NOT MET'}"
                  f" (cpu ratio {m.cpu / anchor.cpu:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "commands": {name: asdict(m) for name, m in measured.items()}, "reports_timing_s": {
                name: r["timing_s"] for name, r in reports.items()}, "map_writing": writing,
            "startup": {name: asdict(m) for name, m in startup.items()}}, indent=2))
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
