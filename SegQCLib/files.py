"""Crash-safe file writing: checksums, fsync, and atomic replacement of a file.

An atomic write puts the new content in a temporary file in the target's folder (same file system, so
the final ``os.replace`` is a single atomic rename), fsyncs it, then renames it over the target: a
process killed at any point leaves either the old file or the new one under the final name, never a
half-written one.  Only the temporary file (named ``.<name>.<random><suffix>``) can be left behind.

:func:`open_regular_file` opens a file for reading only when it is a regular file (not a FIFO, a
device or, with ``follow_links=False``, a symbolic link), so a planted link or ``/dev/zero`` can neither
hang a reader nor make it act on something outside the folder it works in.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Union

PathLike = Union[str, os.PathLike]

HASH_CHUNK_BYTES = 1 << 20
TEMP_SUFFIX = ".tmp"
# Permissions of a newly created file before the umask (what open() and SimpleITK use).
NEW_FILE_MODE = 0o666
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def _process_umask() -> int:
    # Read once at import.  Linux reports it without changing it; elsewhere it is set and restored, which
    # is not thread-safe, hence once and early rather than per write (writers run in threads).
    try:
        with open("/proc/self/status", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _process_umask()


class NotARegularFileError(OSError):
    """A path that should be a regular file is a link (when links are refused), a FIFO, a device or a folder."""

    def __init__(self, path: PathLike, kind: str) -> None:
        super().__init__(errno.EINVAL, f"{path} is {kind}, not a regular file")
        self.path = Path(path)
        self.kind = kind


def file_kind(mode: int) -> str:
    """What ``st_mode`` describes, in words."""
    kinds = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a regular file" if stat.S_ISREG(mode) else "special")


def describe_path(path: PathLike) -> str:
    """'a symbolic link to /dev/zero (a character device)', 'a FIFO (named pipe)', ... for messages."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "missing"
    if not stat.S_ISLNK(mode):
        return file_kind(mode)
    target = os.readlink(path)
    try:
        return f"a symbolic link to {target} ({file_kind(os.stat(path).st_mode)})"
    except OSError:
        return f"a symbolic link to {target} (which does not exist)"


def open_regular_file(path: PathLike, follow_links: bool = True) -> IO[bytes]:
    """Open ``path`` for binary reading when it is a regular file; NotARegularFileError otherwise.

    The file is opened non-blocking first, so a FIFO is refused instead of waiting forever for a writer;
    with ``follow_links=False`` a symbolic link is refused instead of followed (``O_NOFOLLOW``).
    """
    flags = os.O_RDONLY | _NONBLOCK | (0 if follow_links else _NOFOLLOW)
    try:
        fd = os.open(str(path), flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise NotARegularFileError(path, describe_path(path)) from exc
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFileError(path, describe_path(path) if follow_links else file_kind(mode))
        if _NONBLOCK:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: PathLike, follow_links: bool = True) -> bytes:
    with open_regular_file(path, follow_links) as handle:
        return handle.read()


def sha256_file(path: PathLike, follow_links: bool = True) -> str:
    """Hex sha256 of a regular file, read in chunks (model weights and images can be large)."""
    digest = hashlib.sha256()
    with open_regular_file(path, follow_links) as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_file(path: PathLike) -> None:
    """Flush a file that was written and closed elsewhere (e.g. by SimpleITK) to the disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: PathLike) -> None:
    """Make renames and new entries in a folder durable."""
    if os.name != "posix":  # Windows cannot open a folder for fsync; NTFS journals the rename itself
        return
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_synced(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (for files in a private folder that is committed as a whole)."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write(path: PathLike, write: Callable[[Path], None], suffix: str = TEMP_SUFFIX,
                 sync_dir: bool = False) -> Path:
    """Replace ``path`` atomically with what ``write(temporary_path)`` writes.

    ``suffix`` ends the temporary file's name, for writers that choose the format by extension
    (``".tmp.nii.gz"``).  With ``sync_dir`` the folder is fsynced too, so the rename survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=str(path.parent))
    os.close(handle)
    temporary = Path(tmp_name)
    try:
        # mkstemp makes the file private (0600); the result must be readable like any file the user
        # creates (a served HTML report, outputs shared with colleagues).
        os.chmod(temporary, NEW_FILE_MODE & ~_UMASK)
        write(temporary)
        fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    if sync_dir:
        fsync_dir(path.parent)
    return path


def write_bytes_atomic(path: PathLike, data: bytes, sync_dir: bool = False) -> Path:
    return atomic_write(path, lambda temporary: temporary.write_bytes(data), sync_dir=sync_dir)


def write_text_atomic(path: PathLike, text: str, sync_dir: bool = False) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), sync_dir=sync_dir)


def json_bytes(data: Any, indent: int | None = 2) -> bytes:
    """Strict JSON (NaN and infinity refused: JSON has no such numbers) as UTF-8."""
    return json.dumps(data, indent=indent, allow_nan=False).encode("utf-8")


def write_json_atomic(path: PathLike, data: Any, sync_dir: bool = False) -> Path:
    return write_bytes_atomic(path, json_bytes(data), sync_dir=sync_dir)
