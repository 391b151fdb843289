"""``segqc devices``: the GPUs (with memory) and the device ``--device auto`` will use, and why not a GPU."""

from __future__ import annotations

import argparse
import json

from ..network.devices import probe_devices

EXIT_OK = 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "devices", help="which GPU (and how much memory) QC would use, or why it falls back to the CPU",
        description="List the GPUs PyTorch can use with their memory, Apple MPS, and NVIDIA GPUs the driver sees, "
                    "and say which device `--device auto` picks.")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON line {"event": "devices", "report": {...}} (for programs)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = probe_devices()
    if args.json:
        print(json.dumps({"event": "devices", "report": report.to_dict()}), flush=True)
        return EXIT_OK
    print(report.summary())
    if report.torch_version:
        print(f"PyTorch {report.torch_version} (CUDA {report.torch_cuda or 'none: CPU build'}); "
              f"--device auto uses {report.auto_device()}")
    for gpu in report.gpus:
        print(f"  cuda:{gpu.index}  {gpu.describe()}")
    for gpu in report.driver_gpus:
        print(f"  nvidia-smi GPU {gpu.index}: {gpu.describe()}")
    return EXIT_OK
