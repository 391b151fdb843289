"""Benchmark: end-to-end ``segqc run`` (engine API, model loaded) vs one forward pass of a QCResUNet-size network.

For (a) a real hippocampus case and (b) a synthetic 256x256x64 (x, y, z) volume at 1 mm whose
segmentation fills most of it, measure in one run:

* end-to-end QC with the default configuration (an untrained package from ``init_model_package`` unless
  ``--model`` is given): reading the files, normalisation, crop, sliding window, report, writing;
* one forward pass of the reference network (``reference_qcresunet_config``: ResNet-34 3D encoder,
  widths 32/64/128/256, decoder from stage 3) on the same volume (normalised, padded to its stride),
  under ``torch.inference_mode`` and, on CUDA, the same float16 autocast the engine uses.

Each measurement runs in a fresh child process so its peak RSS (``resource.getrusage``) and CUDA peak
(``torch.cuda.max_memory_allocated``) belong to it alone; each child first warms up on a small input so
one-off library initialisation is not timed.  Network cost is counted with forward hooks (conv and
linear multiply-accumulates; GFLOPs = 2 x GMACs).

Target (issue 3): end-to-end QC of the 256x256x64 case at most 0.5x the reference forward time on CPU.

Usage: python benchmarks/bench_inference.py [--device cpu|cuda|auto] [--threads N] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Same OpenMP waiting policy as the `segqc run` CLI (see SegQCLib/commands/run.py); the spawned
# children of both measurements inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

LARGE_SHAPE_ZYX = (64, 256, 256)
SPACING_MM = 1.0
TARGET_RATIO = 0.5
KIB = 1024


def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / KIB / (KIB if sys.platform == "darwin" else 1)


def _setup_torch(threads: int | None):
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch


def _sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_end_to_end(model_path: str, image: str, seg: str, device_name: str, threads: int | None,
                       repeats: int) -> dict:
    """Child process: QC of one case through the engine, timed from file reading to files written."""
    torch = _setup_torch(threads)
    from SegQCLib.engine import QCEngine, run_qc_files
    from SegQCLib.quality.report import Report

    engine = QCEngine(model_path, device_name)
    device = torch.device(engine.device)
    with tempfile.TemporaryDirectory() as out:
        run_qc_files([image], seg, Path(out) / "warmup", engine=engine)  # library initialisation, not timed
        baseline_rss = _peak_rss_mib()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times, cpu_times = [], []
        for repeat in range(repeats):
            _sync(torch, device)
            started, cpu_started = time.perf_counter(), time.process_time()
            run_qc_files([image], seg, Path(out) / f"run{repeat}", engine=engine)
            _sync(torch, device)
            times.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu_started)
        report = Report.load(Path(out) / "run0")
    return {
        "seconds": statistics.median(times), "all_seconds": times, "cpu_seconds": statistics.median(cpu_times),
        "peak_rss_mib": _peak_rss_mib(),
        "rss_before_mib": baseline_rss,
        "cuda_peak_mib": torch.cuda.max_memory_allocated(device) / KIB**2 if device.type == "cuda" else None,
        "windows": report.parameters["inference"]["windows"], "timing_s": report.timing_s, "device": engine.device,
    }


def measure_reference_forward(image: str, device_name: str, threads: int | None, repeats: int) -> dict:
    """Child process: one forward pass of the QCResUNet-size network on the whole (padded) volume."""
    torch = _setup_torch(threads)
    from SegQCLib.io.image_files import read_image
    from SegQCLib.network.config import reference_qcresunet_config
    from SegQCLib.network.inference import normalize_intensity, pad_to_shape, select_device
    from SegQCLib.network.qcresunet import build_model

    device = select_device(device_name)
    config = reference_qcresunet_config()
    torch.manual_seed(0)
    model = build_model(config).eval().to(device)
    volume = read_image(image).array
    stride = config.total_stride_zyx
    padded_shape = [int(np.ceil(s / t) * t) for s, t in zip(volume.shape, stride)]
    image_tensor, _ = pad_to_shape(torch.from_numpy(normalize_intensity(volume, config.normalization))[None],
                                   padded_shape)
    image_tensor = image_tensor[None].to(device)
    mask = torch.zeros(1, len(config.mask_labels), *padded_shape, device=device)
    mask[:, 0] = 1.0
    autocast = dict(device_type="cuda", dtype=torch.float16, enabled=device.type == "cuda")
    with torch.inference_mode(), torch.autocast(**autocast):
        small = [2 * t for t in stride]
        model(torch.zeros(1, 1, *small, device=device), torch.zeros(1, 2, *small, device=device))  # warm-up
        baseline_rss = _peak_rss_mib()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times, cpu_times = [], []
        for _ in range(repeats):
            _sync(torch, device)
            started, cpu_started = time.perf_counter(), time.process_time()
            model(image_tensor, mask)
            _sync(torch, device)
            times.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu_started)
    return {
        "seconds": statistics.median(times), "all_seconds": times, "cpu_seconds": statistics.median(cpu_times),
        "peak_rss_mib": _peak_rss_mib(),
        "rss_before_mib": baseline_rss,
        "cuda_peak_mib": torch.cuda.max_memory_allocated(device) / KIB**2 if device.type == "cuda" else None,
        "input_zyx": padded_shape, "device": str(device),
    }


def in_child(function, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(function, args)


def network_costs(input_zyx, windows: int) -> dict:
    """Parameters and GFLOPs (2 x conv/linear MACs) of both networks, counted on the meta device."""
    import torch

    from SegQCLib.network.config import ModelConfig, reference_qcresunet_config
    from SegQCLib.network.qcresunet import build_model, count_conv_macs, count_parameters

    with torch.device("meta"):
        default = build_model(ModelConfig()).eval()
        reference = build_model(reference_qcresunet_config()).eval()
    stride = reference.config.total_stride_zyx
    padded = [int(np.ceil(s / t) * t) for s, t in zip(input_zyx, stride)]
    patch = ModelConfig().patch_size_zyx
    return {
        "default_params": count_parameters(default), "reference_params": count_parameters(reference),
        "default_gflops_per_patch": 2 * count_conv_macs(default, patch) / 1e9,
        "default_gflops_case": windows * 2 * count_conv_macs(default, patch) / 1e9,
        "reference_gflops_case": 2 * count_conv_macs(reference, padded) / 1e9,
        "default_gflops_160x192x160": 2 * count_conv_macs(default, (160, 192, 160)) / 1e9,
        "reference_gflops_160x192x160": 2 * count_conv_macs(reference, (160, 192, 160)) / 1e9,
    }


def write_large_case(folder: Path) -> tuple[str, str]:
    """256x256x64 volume at 1 mm; a two-class box segmentation covering ~65 % of it."""
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, s) for s in LARGE_SHAPE_ZYX), indexing="ij")
    inside = (np.abs(z) < 0.9) & (np.abs(y) < 0.85) & (np.abs(x) < 0.85)
    seg = np.where(inside, np.where(x < 0, 1, 2), 0).astype(np.uint8)
    image = (100 + 40 * seg + 20 * np.sin(3 * y) + rng.normal(0, 10, LARGE_SHAPE_ZYX)).astype(np.float32)
    paths = []
    for name, array in (("image.nii.gz", image), ("seg.nii.gz", seg)):
        volume = sitk.GetImageFromArray(array)
        volume.SetSpacing((SPACING_MM,) * 3)
        sitk.WriteImage(volume, str(folder / name))
        paths.append(str(folder / name))
    return paths[0], paths[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats per measurement (median)")
    parser.add_argument("--model", help="model package (default: an untrained default-configuration package)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    from SegQCLib.io.datasets import hippocampus_dir, list_nnunet_cases
    from SegQCLib.network.package import init_model_package

    results = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_path = args.model or str(init_model_package(scratch / "model"))
        cases = {}
        root = hippocampus_dir()
        if (root / "imagesTr").is_dir():
            first = list_nnunet_cases(root)[0]
            cases["hippocampus"] = (str(first.images[0]), str(first.label))
        else:
            print(f"hippocampus data not found at {root}: skipping that case")
        cases["256x256x64"] = write_large_case(scratch)
        for name, (image, seg) in cases.items():
            print(f"[{name}] end-to-end QC ...", flush=True)
            e2e = in_child(measure_end_to_end, model_path, image, seg, args.device, args.threads, args.repeats)
            print(f"[{name}] reference forward ...", flush=True)
            ref = in_child(measure_reference_forward, image, args.device, args.threads, args.repeats)
            from SegQCLib.io.image_files import read_image

            shape = read_image(image).array.shape
            results[name] = {"shape_zyx": list(shape), "end_to_end": e2e, "reference_forward": ref,
                             "costs": network_costs(shape, e2e["windows"]),
                             "ratio_time": e2e["seconds"] / ref["seconds"],
                             "ratio_cpu_time": e2e["cpu_seconds"] / ref["cpu_seconds"]}

    print()
    print(f"device {args.device}; torch threads {args.threads or 'default'}; repeats {args.repeats}; "
          f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY')}; load average "
          f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after (times: wall s, cpu = process CPU s)")
    header = (f"{'case':<12} {'shape zyx':<11} {'e2e s':>7} {'ref s':>7} {'ratio':>6} {'e2e cpu':>7} {'ref cpu':>7} "
              f"{'ratio':>6} {'e2e RSS':>8} {'ref RSS':>8} {'e2e GF':>6} {'ref GF':>6} {'win':>4}")
    print(header)
    for name, r in results.items():
        e2e, ref, costs = r["end_to_end"], r["reference_forward"], r["costs"]
        print(f"{name:<12} {'x'.join(map(str, r['shape_zyx'])):<11} {e2e['seconds']:7.2f} {ref['seconds']:7.2f} "
              f"{r['ratio_time']:6.3f} {e2e['cpu_seconds']:7.2f} {ref['cpu_seconds']:7.2f} {r['ratio_cpu_time']:6.3f} "
              f"{e2e['peak_rss_mib']:7.0f}M {ref['peak_rss_mib']:7.0f}M "
              f"{costs['default_gflops_case']:6.1f} {costs['reference_gflops_case']:6.1f} {e2e['windows']:4d}")
        if e2e["cuda_peak_mib"] is not None:
            print(f"{'':<12} CUDA peak: e2e {e2e['cuda_peak_mib']:.0f} MiB, reference {ref['cuda_peak_mib']:.0f} MiB")
        print(f"{'':<12} e2e stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in e2e["timing_s"].items()))
    costs = next(iter(results.values()))["costs"]
    print(f"parameters: default {costs['default_params'] / 1e6:.2f} M, reference "
          f"{costs['reference_params'] / 1e6:.2f} M (ratio {costs['default_params'] / costs['reference_params']:.3f})")
    print(f"GFLOPs at 160x192x160 (one pass): default {costs['default_gflops_160x192x160']:.1f}, "
          f"reference {costs['reference_gflops_160x192x160']:.1f}")
    large = results["256x256x64"]
    verdict = "MET" if large["ratio_time"] <= TARGET_RATIO else "NOT MET"
    print(f"target: end-to-end 256x256x64 <= {TARGET_RATIO}x reference forward -> wall {large['ratio_time']:.3f} "
          f"({verdict}), cpu {large['ratio_cpu_time']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
