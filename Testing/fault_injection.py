"""Helpers that make real system calls fail under a real ``segqc`` process: strace fault injection (a chosen
``write()`` returns ENOSPC or EIO, or the process is SIGKILLed at a chosen call), a file-size limit
(``RLIMIT_FSIZE``: writes beyond it fail with EFBIG) and a small tmpfs that really runs full."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(
    STRACE is None or os.name != "posix",
    reason="strace is not installed (Debian: apt-get install strace; .ci/run installs it)")
# A segqc command of these tests takes seconds; one that runs this long hangs.
HANG_S = 900

_CALL_RE = re.compile(r"^(?P<pid>\d+)\s+(?P<name>\w+)\((?P<args>.*)")
_FD_PATH_RE = re.compile(r"^\d+<(?P<path>[^>]*)>")
_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')


def segqc(*args: object) -> list[str]:
    return [sys.executable, "-m", "SegQCLib.commands.cli", *map(str, args)]


def environment() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def run(command: Sequence[str], prefix: Sequence[str] = (), preexec=None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([*prefix, *command], cwd=REPO, env=environment(), capture_output=True, text=True,
                              timeout=HANG_S, preexec_fn=preexec)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(command)} did not finish within {HANG_S} s (hangs)")


@dataclass(frozen=True)
class Call:
    """One traced system call: the process, its number among that process's calls of that name, its paths."""

    pid: int
    name: str
    number: int  # 1-based, as strace's inject ``when=`` counts (per process and system call)
    paths: tuple[str, ...]


def trace(command: Sequence[str], syscalls: str, log: Path) -> tuple[subprocess.CompletedProcess, list[Call]]:
    """Run ``command`` under ``strace -f -y`` and list the ``syscalls`` it made (with their file paths)."""
    result = run(command, [STRACE, "-f", "-y", "-s", "256", "-e", f"trace={syscalls}", "-o", str(log)])
    counts: dict[tuple[int, str], int] = {}
    calls = []
    for line in log.read_text(errors="replace").splitlines():
        match = _CALL_RE.match(line)
        if not match or "resumed>" in line:
            continue
        pid, name = int(match["pid"]), match["name"]
        counts[(pid, name)] = counts.get((pid, name), 0) + 1
        fd_path = _FD_PATH_RE.match(match["args"])
        paths = (fd_path["path"],) if fd_path else tuple(_QUOTED_RE.findall(match["args"]))
        calls.append(Call(pid, name, counts[(pid, name)], paths))
    return result, calls


def inject(command: Sequence[str], call: Call, error: Optional[str] = "ENOSPC",
           kill: bool = False) -> subprocess.CompletedProcess:
    """Run ``command`` with its ``call.number``-th ``call.name`` call failing with ``error`` (or SIGKILLing it)."""
    action = "signal=SIGKILL" if kill else f"error={error}"
    return run(command, [STRACE, "-f", "-o", os.devnull, "-e", f"trace={call.name}",
                         "-e", f"inject={call.name}:{action}:when={call.number}"])


def first_write_of_each_file(calls: Sequence[Call], inside: Path) -> list[Call]:
    """The first ``write`` into each file under ``inside`` (of the process that wrote most there)."""
    chosen: dict[str, Call] = {}
    for call in calls:
        if call.name == "write" and call.paths and call.paths[0].startswith(str(inside)):
            name = re.sub(r"\.[a-z0-9_]{8}\.tmp", ".tmp", Path(call.paths[0]).name)  # mkstemp's random part
            chosen.setdefault(name, call)
    return list(chosen.values())


def file_size_limit(limit_bytes: int):
    """A ``preexec_fn``: writes that would make a file larger than ``limit_bytes`` fail with EFBIG."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a SIGXFSZ kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (folders left out)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, size_kb: int) -> Iterator[Path]:
    """A real tmpfs of ``size_kb`` KB at ``mount_point`` (skips the test where mounting is not allowed)."""
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True) if shutil.which("mount") else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): "
                    + (mounted.stderr.strip() if mounted is not None else "no mount command"))
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
