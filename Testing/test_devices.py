"""Which device QC runs on, said before a run: GPUs with their memory, or why it falls back to the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from SegQCModuleLib.device_probe import DeviceProbe

from SegQCLib.network.devices import GIB, DeviceReport, GpuInfo, parse_nvidia_smi

ROOT = Path(__file__).resolve().parents[1]
H200 = GpuInfo(0, "NVIDIA H200", 140 * GIB, 137 * GIB)
RTX = GpuInfo(0, "NVIDIA GeForce RTX 3060", 12 * GIB, 11 * GIB)


def segqc_devices_json(*python_prefix: str) -> dict:
    command = [sys.executable, *python_prefix]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_the_modules_probe_runs_segqc_devices_and_says_what_auto_picks_as_the_engine_would():
    from SegQCLib.network.inference import select_device

    probe = DeviceProbe(sys.executable, {"PYTHONPATH": str(ROOT)})
    probe.start()
    probe.process.wait(120)
    report = None
    while report is None:
        report = probe.poll()
    assert report.torch_version and report.problem is None
    assert report.auto_device() == select_device("auto").type
    if not report.gpus:
        assert "CPU" in report.summary()


def test_without_torch_the_report_says_it_will_be_installed():
    code = ("import sys, json; sys.modules['torch'] = None; from SegQCLib.commands.cli import main; "
            "raise SystemExit(main(['devices', '--json']))")
    report = DeviceReport.from_dict(segqc_devices_json("-c", code)["report"])
    assert report.torch_version is None and "cannot import torch" in report.problem
    assert report.summary().startswith("PyTorch is not installed yet")


@pytest.mark.parametrize("report, requested, expected", [
    (DeviceReport("2.5.1+cu124", "12.4", [H200]), "auto",
     "GPU: NVIDIA H200 (140.0 GiB, 137.0 GiB free). QC runs on it."),
    (DeviceReport("2.5.1+cu124", "12.4", [H200]), "cpu", "QC runs on the CPU, as chosen (NVIDIA H200"),
    (DeviceReport("2.5.1+cpu", None, [], False, [RTX]), "auto",
     "NVIDIA GeForce RTX 3060 (12.0 GiB, 11.0 GiB free) found, but PyTorch 2.5.1+cpu cannot use it (a CPU-only "
     "build): QC falls back to the CPU"),
    (DeviceReport("2.5.1", None, [], True), "auto", "Apple GPU (MPS): QC runs on it."),
    (DeviceReport("2.5.1+cpu"), "auto", "No GPU found: QC runs on the CPU"),
    (DeviceReport(None, driver_gpus=[RTX]), "auto", "PyTorch is not installed yet (it is installed on the first Run "
                                                    "QC). NVIDIA GeForce RTX 3060"),
])
def test_the_panel_line_names_the_gpu_and_its_memory_or_why_the_cpu_is_used(report, requested, expected):
    assert report.summary(requested).startswith(expected)


def test_a_report_survives_its_json_form():
    report = DeviceReport("2.5.1+cu124", "12.4", [H200, GpuInfo(1, "NVIDIA H200", 140 * GIB, None)], False, [H200])
    assert DeviceReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_nvidia_smi_lines_are_read_and_broken_ones_skipped():
    text = "0, NVIDIA H200, 143771, 140519\n1, Tesla V100-SXM2-32GB, 32768, 30000\nNo devices were found\n"
    gpus = parse_nvidia_smi(text)
    assert [(g.index, g.name) for g in gpus] == [(0, "NVIDIA H200"), (1, "Tesla V100-SXM2-32GB")]
    assert gpus[0].total_memory_bytes == 143771 * 2**20 and gpus[0].free_memory_bytes == 140519 * 2**20


def test_a_probe_that_cannot_start_says_so():
    probe = DeviceProbe(str(ROOT / "no" / "PythonSlicer"))
    probe.start()
    assert probe.finished and "could not start" in probe.poll().problem
    assert "CPU" in probe.poll().summary() or "not installed" in probe.poll().summary()
