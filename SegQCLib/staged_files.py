"""A set of files replaced together: written beside the old ones, moved into place only when all are whole.

A QC run replaces several files of its output folder (the error maps, then ``report.json``).  Writing
them one by one in place means a run killed or failing half-way leaves old and new files mixed, or (if
the old report is removed first) no report at all.  :class:`StagedFiles` writes every new file into a
hidden folder inside the target folder (``.segqc-staging-<random>/``, same file system, so moving a file
out of it is one atomic rename), each verified as it is written.  Only then does :meth:`StagedFiles.commit`
record the list of files in ``COMMIT.json`` inside the staging folder and move them into place (the
file named ``last`` -- the report -- is removed first and moved in last, so a folder with a report
always holds the matching maps).  Until that moment the earlier files are untouched: a run killed or
failing while writing leaves them as they were, and the staging folder is removed by the next writer.

A kill during the moves themselves (microseconds) leaves a staging folder with ``COMMIT.json``: the new
files are complete, so :func:`recover_staged` (called by every writer before it writes, and by readers
that can tell an unfinished folder, such as the resume of ``segqc rank``) finishes the moves.  A staging
folder whose writer is still alive (it holds the folder's lock) is left alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Optional, Union

from filelock import FileLock, Timeout

from .files import fsync_dir, write_bytes_synced

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

STAGING_PREFIX = ".segqc-staging-"
COMMIT_FILE = "COMMIT.json"
LOCK_FILE = ".lock"


def _move_into_place(staging: Path, folder: Path, names: list[str], last: Optional[str],
                     obsolete: list[str]) -> None:
    """Apply a commit (idempotent: a file already moved is not in ``staging`` any more)."""
    if last is not None and (staging / last).exists():
        (folder / last).unlink(missing_ok=True)  # no report may vouch for a folder that is being replaced
    for name in obsolete:
        (folder / name).unlink(missing_ok=True)
    for name in names:
        if (staging / name).exists():
            os.replace(staging / name, folder / name)
    fsync_dir(folder)
    shutil.rmtree(staging, ignore_errors=True)


def _read_commit(staging: Path) -> Optional[dict]:
    try:
        data = json.loads((staging / COMMIT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not all(isinstance(n, str) and "/" not in n and n not in ("", ".", "..")
                                             for n in [*data.get("names", []), *data.get("obsolete", [])]):
        return None
    return data


def pending_stagings(folder: PathLike) -> list[Path]:
    """Staging folders in ``folder`` (a writer's, in progress or interrupted)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(STAGING_PREFIX) and p.is_dir()
                  and not p.is_symlink())


def has_unfinished_commit(folder: PathLike) -> bool:
    """True when a writer was killed while moving complete new files into ``folder`` (its files are mixed)."""
    return any((staging / COMMIT_FILE).is_file() for staging in pending_stagings(folder))


def recover_staged(folder: PathLike) -> None:
    """Finish the commits interrupted in ``folder`` and remove the staging folders of writers that died earlier."""
    for staging in pending_stagings(folder):
        lock = FileLock(str(staging / LOCK_FILE))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # a live writer
        except OSError:
            continue  # removed meanwhile
        try:
            commit = _read_commit(staging)
            if commit is not None:
                logger.warning("Finishing an interrupted write in %s", folder)
                _move_into_place(staging, Path(folder), commit.get("names", []), commit.get("last"),
                                 commit.get("obsolete", []))
            else:
                logger.info("Removing %s, left by a writer that stopped before its files were complete", staging)
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            lock.release()


class StagedFiles:
    """Files written into a staging folder inside ``folder`` and moved into place together (module docstring).

    Use as a context manager: leaving it without :meth:`commit` (an error) removes the staging folder and
    leaves ``folder`` as it was.
    """

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        self.staging = self.folder / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        self._lock: Optional[FileLock] = None
        self._committed = False

    def __enter__(self) -> StagedFiles:
        self.folder.mkdir(parents=True, exist_ok=True)
        recover_staged(self.folder)
        self.staging.mkdir()
        self._lock = FileLock(str(self.staging / LOCK_FILE))
        self._lock.acquire(timeout=0)
        return self

    def path(self, name: str) -> Path:
        """Where to write the new file ``name``."""
        return self.staging / name

    def commit(self, names: list[str], last: Optional[str] = None, obsolete: Optional[list[str]] = None) -> None:
        """Move ``names`` (``last`` last) into the folder, removing ``obsolete`` files of the folder first."""
        order = [n for n in names if n != last] + ([last] if last is not None else [])
        missing = [n for n in order if not (self.staging / n).is_file()]
        if missing:
            raise FileNotFoundError(f"staged files missing: {missing}")
        commit = {"names": order, "last": last, "obsolete": sorted(obsolete or [])}
        fsync_dir(self.staging)
        write_bytes_synced(self.staging / COMMIT_FILE, json.dumps(commit).encode("utf-8"))
        fsync_dir(self.staging)
        _move_into_place(self.staging, self.folder, order, last, commit["obsolete"])
        self._committed = True

    def __exit__(self, *_exc: object) -> None:
        if not self._committed:
            shutil.rmtree(self.staging, ignore_errors=True)
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock.release()
