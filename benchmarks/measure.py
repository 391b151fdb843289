"""What the command-level benchmarks share: writing a synthetic case to files, and one measured command run."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

KIB = 1024


def write_volumes(folder: Path, arrays: dict[str, np.ndarray], spacing_xyz_mm: tuple[float, ...]) -> list[Path]:
    """Each (z, y, x) array as ``folder/<name>`` with ``spacing_xyz_mm``; the paths in the given order."""
    import SimpleITK as sitk

    paths = []
    for name, array in arrays.items():
        volume = sitk.GetImageFromArray(array)
        volume.SetSpacing(spacing_xyz_mm)
        sitk.WriteImage(volume, str(folder / name))
        paths.append(folder / name)
    return paths


def run_measured(command: list[str], environment: dict[str, str], cwd: Optional[Path] = None
                 ) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system, from ``wait4``) and peak RSS (MiB) of one command; RuntimeError
    with the end of its stderr when it fails.  Its output goes to files (a pipe would need ``communicate``, which
    reaps the process before ``wait4`` can)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=environment, cwd=cwd)
        _pid, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed:\n{err.read().decode(errors='replace')[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / KIB
