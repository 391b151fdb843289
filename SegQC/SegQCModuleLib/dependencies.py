"""What the module needs beyond Slicer, installed on request (never when the module is loaded), and where the QC
process finds its interpreter and SegQCLib."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import slicer

# Python packages SegQCLib needs beyond what Slicer ships (import name -> pip requirement).
PIP_REQUIREMENTS = {"scipy": "scipy", "slicerio": "slicerio", "filelock": "filelock", "safetensors": "safetensors",
                    "psutil": "psutil"}
MINIMUM_TORCH_VERSION = "2.0"


def missingPipPackages() -> list[str]:
    return [requirement for name, requirement in PIP_REQUIREMENTS.items() if importlib.util.find_spec(name) is None]


def torchInstalled() -> bool:
    return importlib.util.find_spec("torch") is not None


def ensureDependencies() -> bool:
    """Install what SegQCLib needs: torch through the PyTorch extension, the rest with pip after one question."""
    torchMissing = not torchInstalled()
    if torchMissing:
        try:
            import PyTorchUtils
        except ModuleNotFoundError as exc:
            raise RuntimeError("SegQC needs the PyTorch extension: install it from the Extensions Manager, "
                               "restart Slicer and try again.") from exc
    missing = missingPipPackages()
    if missing:
        if not slicer.util.confirmOkCancelDisplay(
                "SegQC needs these Python packages, which are not installed yet:\n\n  " + "\n  ".join(missing)
                + "\n\nInstall them now? (this takes a minute or two)", "SegQC: install dependencies"):
            return False
        with slicer.util.WaitCursor():
            slicer.util.pip_install(missing)
    if torchMissing:
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=True, torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}")
        if torch is None:
            slicer.util.errorDisplay("SegQC needs PyTorch; it was not installed.")
            return False
    return True


def pythonExecutable() -> str:
    """The Python that runs the QC process: PythonSlicer (Slicer's Python with Slicer's environment)."""
    return shutil.which("PythonSlicer") or sys.executable


def segqcLibRoot() -> str:
    """Folder holding the SegQCLib package, so the QC process can import it wherever the extension is installed."""
    spec = importlib.util.find_spec("SegQCLib")
    return str(Path(spec.origin).resolve().parent.parent)


def processEnvironment() -> dict[str, str]:
    """PythonSlicer adds Slicer's own paths; SegQCLib may live elsewhere (extension folder or source checkout)."""
    return {"PYTHONPATH": segqcLibRoot()}
