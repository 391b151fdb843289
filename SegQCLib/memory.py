"""How much memory this process may still allocate, and a check to run before a large allocation.

Three limits can stop an allocation: the machine's available memory (``MemAvailable``, which counts
reclaimable page cache), the process's cgroup limit (containers, batch schedulers) and its address-space
limit (``ulimit -v``, ``RLIMIT_AS``).  :func:`available_memory_bytes` returns the smallest of those it can
read, so that a file whose header asks for more is refused with a message instead of the process being
killed by the kernel or failing with a traceback half-way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .errors import ResourceError

GIB = 1 << 30
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read_int(path: Path) -> Optional[int]:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available() -> Optional[int]:
    try:
        with open("/proc/meminfo", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_available() -> Optional[int]:
    """Room left under the process's cgroup memory limit (v2, else v1), or None without a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _controllers, relative = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0":  # cgroup v2
            folder = _CGROUP_ROOT / relative.lstrip("/")
            limit, used = _read_int(folder / "memory.max"), _read_int(folder / "memory.current")
            if limit is not None and used is not None:
                return max(0, limit - used)
    limit = _read_int(_CGROUP_ROOT / "memory" / "memory.limit_in_bytes")
    used = _read_int(_CGROUP_ROOT / "memory" / "memory.usage_in_bytes")
    if limit is not None and used is not None and limit < (1 << 60):  # v1 reports "no limit" as a huge number
        return max(0, limit - used)
    return None


def _address_space_available() -> Optional[int]:
    """Room left under ``RLIMIT_AS`` (``ulimit -v``), or None without one."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as stream:
            size = next(int(line.split()[1]) * 1024 for line in stream if line.startswith("VmSize:"))
    except (OSError, ValueError, StopIteration):
        return None
    return max(0, soft - size)


def available_memory_bytes() -> Optional[int]:
    """The least of what the machine, the cgroup and the address-space limit leave; None when none is known."""
    known = [v for v in (_meminfo_available(), _cgroup_available(), _address_space_available()) if v is not None]
    return min(known) if known else None


def format_bytes(count: float) -> str:
    for unit, size in (("TB", 1 << 40), ("GB", GIB), ("MB", 1 << 20), ("KB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} bytes"


def require_memory(needed_bytes: int, what: str) -> None:
    """ResourceError when ``needed_bytes`` more than this process can still allocate (``what`` says for what)."""
    available = available_memory_bytes()
    if available is not None and needed_bytes > available:
        raise ResourceError(f"{what} needs about {format_bytes(needed_bytes)} of memory, but only "
                            f"{format_bytes(available)} is available to this process. Close other programs, "
                            "raise the memory limit, or use a machine with more memory.")
