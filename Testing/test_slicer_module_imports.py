"""The Slicer module loads in a fresh Slicer, before the first Run QC installs its Python dependencies: nothing the
module imports at start-up may need torch, scipy, slicerio, filelock, safetensors or psutil (Slicer ships numpy,
SimpleITK and VTK)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="slicer-core cannot be imported; pip install slicer-core")

ROOT = Path(__file__).resolve().parents[1]
INSTALLED_ON_FIRST_RUN = ("torch", "scipy", "slicerio", "filelock", "safetensors", "psutil")
# A hang guard, not a speed requirement: the probe needs under 2 s of CPU, but took 178 s of wall time at nice 15
# on 2 cores beside a training job.
PROBE_TIMEOUT_S = 900
PROBE = """
import importlib, json, sys
for name in {blocked!r}:
    sys.modules[name] = None  # `import name` now fails as it does before pip installed it
failures = {{}}
for module in {modules!r}:
    try:
        importlib.import_module(module)
    except Exception as exc:
        failures[module] = f"{{type(exc).__name__}}: {{exc}}"
print(json.dumps(failures))
"""


def start_up_imports() -> list[str]:
    """What SegQC.py imports when Slicer loads it (top-level imports of SegQCModuleLib and SegQCLib), and every
    SegQCModuleLib module."""
    tree = ast.parse((ROOT / "SegQC" / "SegQC.py").read_text(encoding="utf-8"))
    modules = {node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module
               and node.module.split(".")[0] in ("SegQCModuleLib", "SegQCLib")}
    modules |= {f"SegQCModuleLib.{p.stem}" for p in (ROOT / "SegQC" / "SegQCModuleLib").glob("*.py")
                if p.stem != "__init__"}
    return sorted(modules)


def test_the_module_imports_before_its_dependencies_are_installed():
    modules = start_up_imports()
    assert "SegQCModuleLib.queue_panel" in modules and "SegQCLib.review.rating" in modules
    qt_free = [m for m in modules if m not in ("SegQCModuleLib.queue_panel",)]  # needs Slicer's qt module
    code = PROBE.format(blocked=INSTALLED_ON_FIRST_RUN, modules=qt_free)
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                               timeout=PROBE_TIMEOUT_S,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "SegQC")])})
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == {}


def test_the_check_catches_a_module_that_needs_a_missing_package():
    code = PROBE.format(blocked=INSTALLED_ON_FIRST_RUN, modules=["SegQCLib.corrections.store"])
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                               timeout=PROBE_TIMEOUT_S,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "filelock" in json.loads(completed.stdout.strip().splitlines()[-1])["SegQCLib.corrections.store"]
