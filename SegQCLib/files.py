"""Crash-safe, verified file writing and link-safe reading: checksums, fsync, atomic replacement.

An atomic write puts the new content in a temporary file in the target's folder (same file system, so
the final ``os.replace`` is a single atomic rename), fsyncs it, **reads it back** and only then renames it
over the target: a process killed at any point leaves either the old file or the new one under the final
name, never a half-written one, and a write that failed without saying so (some writers, SimpleITK's
among them, ignore ``ENOSPC``) is caught before it replaces anything.  Only the temporary file (named
``.<name>.<random><suffix>``) can be left behind by a kill.

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
from typing import IO, Any, Optional, Union

from .errors import InputError, WriteError

PathLike = Union[str, os.PathLike]

HASH_CHUNK_BYTES = 1 << 20
TEMP_SUFFIX = ".tmp"
# Permissions of a newly created file before the umask (what open() and SimpleITK use).
NEW_FILE_MODE = 0o666
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)

# Checks a freshly written temporary file (raises WriteError when it is not what was meant to be written).
Verifier = Callable[[Path], None]


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


def bytes_verifier(data: bytes) -> Verifier:
    """A verifier that reads the file back: exactly ``len(data)`` bytes with ``data``'s sha256."""
    expected = hashlib.sha256(data).hexdigest()

    def verify(path: Path) -> None:
        size = os.lstat(path).st_size
        if size != len(data):
            raise WriteError(f"{size} bytes are on disk, {len(data)} were written")
        if sha256_file(path, follow_links=False) != expected:
            raise WriteError("it reads back different from what was written")

    return verify


def write_bytes_synced(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path``, fsync and read it back (for files in a private folder committed as a whole).

    The file is created fresh (``O_NOFOLLOW``: a link planted under that name is not written through).
    """
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        if os.path.islink(path):
            raise NotARegularFileError(path, describe_path(path))
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW, NEW_FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        bytes_verifier(data)(path)
    except WriteError as exc:
        raise WriteError(incomplete_write_message(path, str(exc))) from exc


def incomplete_write_message(path: PathLike, detail: str) -> str:
    return f"{path} was not written completely: {detail} (is the disk full or failing?)"


def atomic_write(path: PathLike, write: Callable[[Path], None], suffix: str = TEMP_SUFFIX,
                 sync_dir: bool = False, durable: bool = True, verify: Optional[Verifier] = None) -> Path:
    """Replace ``path`` atomically with what ``write(temporary_path)`` writes, once ``verify`` accepts it.

    ``verify(temporary_path)`` reads the written file back and raises :class:`WriteError` (saying what
    differs) when it is not what was meant to be written; without one, only an empty file is refused.
    Either way the target is left as it was and WriteError names it.  ``suffix`` ends the
    temporary file's name, for writers that choose the format by extension (``".tmp.nii.gz"``).  With
    ``sync_dir`` the folder is fsynced too, so the rename survives a power cut.  ``durable=False`` skips the
    file's fsync, for derived files that are made again when missing (a killed process still leaves the old
    file or the new one; only a power cut may lose the new one).
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
        try:
            write(temporary)  # a writer that finds its own output damaged says so with WriteError
            if durable:
                fsync_file(temporary)
            if verify is not None:
                verify(temporary)
            elif temporary.stat().st_size == 0:
                raise WriteError("the file is empty")
        except WriteError as exc:
            raise WriteError(incomplete_write_message(path, str(exc))
                             + (f"; the earlier {path.name} is unchanged" if path.exists() else "")) from exc
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    if sync_dir:
        fsync_dir(path.parent)
    return path


def write_bytes_atomic(path: PathLike, data: bytes, sync_dir: bool = False) -> Path:
    return atomic_write(path, lambda temporary: temporary.write_bytes(data), sync_dir=sync_dir,
                        verify=bytes_verifier(data))


def write_text_atomic(path: PathLike, text: str, sync_dir: bool = False) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), sync_dir=sync_dir)


def json_bytes(data: Any, indent: int | None = 2) -> bytes:
    """Strict JSON (NaN and infinity refused: JSON has no such numbers) as UTF-8."""
    return json.dumps(data, indent=indent, allow_nan=False).encode("utf-8")


def write_json_atomic(path: PathLike, data: Any, sync_dir: bool = False) -> Path:
    return write_bytes_atomic(path, json_bytes(data), sync_dir=sync_dir)


_WRITE_PROBLEMS = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                   errno.EROFS: "a read-only file system", errno.ENOSPC: "the disk is full",
                   errno.EDQUOT: "the disk quota is exhausted"}


def check_output_folder(path: PathLike, option: str = "--out") -> Path:
    """InputError unless ``path`` is, or can be created as, a folder this process can write into.

    Called before any computation, so that a typo costs seconds, not a whole run: an existing file, FIFO or
    device in its place is refused ("--out must be a folder"), as is a folder (or, for a new one, the nearest
    existing parent) where a file cannot be created, which is tried with a hidden file removed at once.
    Nothing is created.
    """
    path = Path(path).expanduser()
    if os.path.lexists(path) and not path.is_dir():
        raise InputError(f"{option} must be a folder: {path} is {describe_path(path)}")
    existing = path
    while not existing.is_dir():
        if os.path.lexists(existing) and not existing.is_dir():
            raise InputError(f"{option} {path} cannot be created: {existing} is {describe_path(existing)}, not a "
                             "folder")
        if existing.parent == existing:
            break
        existing = existing.parent
    try:
        handle, probe = tempfile.mkstemp(prefix=".segqc-write-test-", dir=str(existing))
    except OSError as exc:
        reason = _WRITE_PROBLEMS.get(exc.errno, exc.strerror or str(exc))
        where = "" if existing == path else f" (its nearest existing folder {existing})"
        raise InputError(f"{option} {path}{where} is not writable: {reason}. Choose another folder.") from exc
    os.close(handle)
    os.unlink(probe)
    return path
