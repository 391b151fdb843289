"""The background QC process of the Slicer module: ``segqc run --progress json`` with its output read on a thread.

No Qt and no MRML here: :class:`~.qc_run.QCRun` calls :meth:`QCProcess.poll` from the widget's timer on the GUI
thread and turns the returned events into progress-bar updates, and :meth:`QCProcess.takeLogLines` into the
panel's process log; :meth:`QCProcess.cancel` stops the process and every process it started (``PythonSlicer``
is a launcher: killing it alone would leave Python running).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any, Optional

from .logic import SegQCLogic

logger = logging.getLogger(__name__)

OUTPUT_LINES_KEPT = 40  # last lines of the process log shown with an error
Launcher = Callable[..., subprocess.Popen]


class QCProcess:
    """One run of the QC engine in a child process."""

    def __init__(self, command: Sequence[str], environment: Optional[dict[str, str]] = None,
                 launcher: Optional[Launcher] = None) -> None:
        self.command = [str(part) for part in command]
        self.environment = dict(environment or {})
        self.launcher = launcher
        self.cancelled = False
        self.finished = False
        self.returncode: Optional[int] = None
        self.outputTail: list[str] = []
        self._newLogLines: list[str] = []
        self._lines: queue.Queue = queue.Queue()
        self._process: Optional[subprocess.Popen] = None
        self._reader: Optional[threading.Thread] = None

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Launch (``slicer.util.launchConsoleProcess`` inside Slicer, plain ``subprocess`` elsewhere)."""
        logger.info("SegQC: launching %s", " ".join(self.command))
        if self.launcher is not None:
            self._process = self.launcher(self.command, updateEnvironment=self.environment)
        else:
            self._process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                             text=True, env={**os.environ, **self.environment})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                line = self._process.stdout.readline()
            except UnicodeDecodeError:  # a log line in another code page; progress lines are ASCII JSON
                continue
            except ValueError:  # the pipe was closed by cancel()
                break
            if not line:
                break
            self._lines.put(line.rstrip())

    def poll(self) -> list[dict[str, Any]]:
        """Events that arrived since the last call; sets ``finished`` once the process ended and all is read."""
        events = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            event = SegQCLogic.parseProcessLine(line)
            if event is not None:
                events.append(event)
            elif line:
                logger.info("segqc: %s", line)
                self.outputTail = (self.outputTail + [line])[-OUTPUT_LINES_KEPT:]
                self._newLogLines.append(line)
        if (self._process is not None and self._process.poll() is not None and not self._reader.is_alive()
                and self._lines.empty()):
            self.returncode = self._process.returncode
            self.finished = True
        return events

    def takeLogLines(self) -> list[str]:
        """Output lines that are not events (the process's log) read by :meth:`poll` since the last call."""
        lines, self._newLogLines = self._newLogLines, []
        return lines

    def wait(self, timeout_s: Optional[float] = None) -> None:
        """Block until the process has ended and its output is read (scripts and tests)."""
        self._process.wait(timeout=timeout_s)
        self._reader.join(timeout=timeout_s)

    def cancel(self) -> None:
        """Kill the process tree.  Nothing of a cancelled run reaches the scene: results are loaded only on success."""
        self.cancelled = True
        if self._process is None or self._process.poll() is not None:
            return
        try:
            import psutil
        except ImportError:  # without psutil only the direct child can be stopped
            self._process.kill()
            return
        try:
            parent = psutil.Process(self._process.pid)
            children = parent.children(recursive=True)
            for process in [*children, parent]:
                process.kill()
            # Only the grandchildren are reaped here: psutil reaping our own child would leave subprocess
            # nothing to read, and it then reports exit code 0 for the killed process.
            psutil.wait_procs(children, timeout=5)
        except psutil.NoSuchProcess:
            pass  # it ended on its own meanwhile
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=5)
