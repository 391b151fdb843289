"""An exclusive inter-process lock on a file that the OS releases when its holder dies.

``fcntl.flock`` on POSIX, ``filelock`` elsewhere: a killed process never leaves a stale lock behind,
so a lock file that exists but is not held means its writer is gone.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

LOCK_POLL_S = 0.05


class ProcessLock:
    """An exclusive inter-process lock on a file, released by the OS if the holder dies."""

    def __init__(self, path: Path):
        self.path = path
        self._handle: Any = None
        self._fallback: Any = None

    def acquire(self, timeout_s: float) -> bool:
        try:
            import fcntl
        except ImportError:  # Windows
            import filelock

            self._fallback = filelock.FileLock(str(self.path))
            try:
                self._fallback.acquire(timeout=timeout_s)
            except filelock.Timeout:
                return False
            return True
        handle = open(self.path, "a+b")  # noqa: SIM115 - kept open while the lock is held
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._handle = handle
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    return False
                time.sleep(LOCK_POLL_S)
            except OSError:
                handle.close()
                raise

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor drops the flock
            self._handle = None
        if self._fallback is not None:
            self._fallback.release()
            self._fallback = None


def drop_lock(lock: ProcessLock) -> None:
    """Delete a lock's file, then release it (idempotent)."""
    with contextlib.suppress(OSError):
        lock.path.unlink()
    lock.release()


def lock_is_held(path: Path) -> bool:
    """True while another process holds the lock on ``path``."""
    lock = ProcessLock(path)
    try:
        acquired = lock.acquire(timeout_s=0)
    except OSError:
        return False
    if acquired:
        lock.release()
    return not acquired
