"""Which devices QC can run on here: the GPUs PyTorch can use (with their memory), Apple MPS, and the NVIDIA
GPUs the driver sees even where PyTorch cannot use them (a CPU build of torch), with one line saying what
``--device auto`` will do and why.

``segqc devices --json`` prints it for programs: the Slicer module asks before a run, in a separate process,
so that Slicer's GUI process never imports torch.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

GIB = 1024**3
NVIDIA_SMI_TIMEOUT_S = 10
NVIDIA_SMI_QUERY = ("--query-gpu=index,name,memory.total,memory.free", "--format=csv,noheader,nounits")


@dataclass
class GpuInfo:
    index: int
    name: str
    total_memory_bytes: Optional[int] = None
    free_memory_bytes: Optional[int] = None

    def describe(self) -> str:
        if self.total_memory_bytes is None:
            return self.name
        memory = f"{self.total_memory_bytes / GIB:.1f} GiB"
        if self.free_memory_bytes is not None:
            memory += f", {self.free_memory_bytes / GIB:.1f} GiB free"
        return f"{self.name} ({memory})"


@dataclass
class DeviceReport:
    """What this machine offers QC (see the module docstring)."""

    torch_version: Optional[str] = None  # None: torch cannot be imported
    torch_cuda: Optional[str] = None  # CUDA version torch was built with; None for a CPU build
    gpus: list[GpuInfo] = field(default_factory=list)  # usable by torch
    mps: bool = False
    driver_gpus: list[GpuInfo] = field(default_factory=list)  # seen by nvidia-smi
    problem: Optional[str] = None  # why torch could not be asked

    def auto_device(self) -> str:
        """What ``--device auto`` picks (as SegQCLib.network.inference.select_device does)."""
        if self.gpus:
            return "cuda"
        return "mps" if self.mps else "cpu"

    def summary(self, requested: str = "auto") -> str:
        """One line for the user: the device QC will use for ``requested``, and why not a GPU when it is a CPU."""
        requested = (requested or "auto").lower()
        if self.torch_version is None:
            found = f" {self.driver_gpus[0].describe()} found: the PyTorch extension installs a build for it." \
                if self.driver_gpus else " No NVIDIA GPU found: QC will run on the CPU."
            return f"PyTorch is not installed yet (it is installed on the first Run QC).{found}"
        if requested == "cpu":
            spare = f" ({self.gpus[0].describe()} is not used)" if self.gpus else ""
            return f"QC runs on the CPU, as chosen{spare}."
        if self.gpus:
            extra = f" (+{len(self.gpus) - 1} more GPU)" if len(self.gpus) > 1 else ""
            return f"GPU: {self.gpus[0].describe()}{extra}. QC runs on it."
        if self.mps:
            return "Apple GPU (MPS): QC runs on it."
        if self.driver_gpus:
            why = self.problem or ("a CPU-only build" if not self.torch_cuda
                                   else f"built for CUDA {self.torch_cuda}, which the driver does not run")
            return (f"{self.driver_gpus[0].describe()} found, but PyTorch {self.torch_version} cannot use it ({why}): "
                    "QC falls back to the CPU (slower, same results). Install a CUDA build of PyTorch (PyTorch "
                    "extension, PyTorch Utils module) to use the GPU.")
        if self.problem:
            return f"No usable GPU ({self.problem}): QC runs on the CPU (slower than a GPU, same results)."
        return "No GPU found: QC runs on the CPU (slower than a GPU, same results)."

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "auto_device": self.auto_device(), "summary": self.summary()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceReport:
        return cls(data.get("torch_version"), data.get("torch_cuda"),
                   [GpuInfo(**gpu) for gpu in data.get("gpus", [])], bool(data.get("mps")),
                   [GpuInfo(**gpu) for gpu in data.get("driver_gpus", [])], data.get("problem"))


def probe_devices() -> DeviceReport:
    """Ask torch (imported here) and nvidia-smi; never raises."""
    report = DeviceReport(driver_gpus=nvidia_smi_gpus())
    try:
        import torch
    except Exception as exc:  # not installed, or a broken install: the report says so
        report.problem = f"cannot import torch: {exc}"
        return report
    report.torch_version = str(torch.__version__)
    report.torch_cuda = getattr(torch.version, "cuda", None)
    try:
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                properties = torch.cuda.get_device_properties(index)
                free, total = torch.cuda.mem_get_info(index)
                report.gpus.append(GpuInfo(index, str(properties.name), int(total), int(free)))
        report.mps = bool(hasattr(torch.backends, "mps") and torch.backends.mps.is_available())
    except Exception as exc:  # a driver problem: QC then runs on the CPU, and the user should know why
        report.problem = f"PyTorch could not query the GPU: {exc}"
        report.gpus = []
    return report


def nvidia_smi_gpus() -> list[GpuInfo]:
    """The NVIDIA GPUs the driver sees (empty without nvidia-smi or when it fails)."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return []
    try:
        completed = subprocess.run([executable, *NVIDIA_SMI_QUERY], capture_output=True, text=True,
                                   timeout=NVIDIA_SMI_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(completed.stdout) if completed.returncode == 0 else []


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """``index, name, memory.total, memory.free`` lines (MiB, no units) -> GpuInfo; unreadable lines skipped."""
    gpus = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 4:
            continue
        try:
            index, total_mib, free_mib = int(parts[0]), float(parts[-2]), float(parts[-1])
        except ValueError:
            continue
        gpus.append(GpuInfo(index, ", ".join(parts[1:-2]), int(total_mib * 2**20), int(free_mib * 2**20)))
    return gpus
