"""One QC run of the Slicer module, step by step, with the GUI thread never waiting on disk or network.

No Qt here.  The widget prepares the inputs from the scene (:meth:`SegQCLogic.prepareInputs`, MRML, GUI thread),
then :class:`QCRun` goes through its states each time the widget's timer calls :meth:`QCRun.poll`:

* ``WRITING_INPUTS``: the image(s) and the segmentation are written as plain NIfTI on a worker thread;
* ``RUNNING``: ``segqc run --progress json`` runs in a child process (:class:`~.process.QCProcess`);
* ``READING_RESULTS``: report, error maps and suggested edits are read back on a worker thread;
* then the result nodes are made on the GUI thread (the only step that touches the scene) and the run ends
  ``DONE``, or ``FAILED`` / ``CANCELLED`` with the scene as it was.

Whatever the end (a process that cannot start included), the temporary folder is removed and the run is
finished, so the widget's Cancel button turns back into Run QC.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from .logic import OverlaySettings, PreparedInputs, SegQCLogic, SegQCResult
from .process import Launcher, QCProcess

logger = logging.getLogger(__name__)

POLL_SLEEP_S = 0.05
LOG_LINES_KEPT = 5000


class RunState(str, Enum):
    WRITING_INPUTS = "writing inputs"
    RUNNING = "running"
    READING_RESULTS = "reading results"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunState.DONE, RunState.FAILED, RunState.CANCELLED)


@dataclass
class RunUpdate:
    """What changed since the last :meth:`QCRun.poll`: for the progress bar, the status line and the log."""

    fraction: Optional[float] = None
    message: Optional[str] = None
    logLines: list[str] = field(default_factory=list)


@dataclass
class QCRunSettings:
    """How to run ``segqc run``: the interpreter (``PythonSlicer`` in Slicer), model, device, environment."""

    python: str
    modelPath: Optional[str] = None
    device: str = "auto"
    environment: dict[str, str] = field(default_factory=dict)
    launcher: Optional[Launcher] = None
    keepSnapshot: bool = False
    overlay: Optional[OverlaySettings] = None  # what the panel shows; None: what the views show now
    strict: bool = False  # refuse results for inputs outside the model's domain (segqc run --strict)
    suggest: bool = True  # also the suggested edits of the error boxes (segqc run --suggest)


InputWriter = Callable[[PreparedInputs, str], tuple[list[str], str]]
# (report, error maps) or (report, error maps, suggestion or None), as SegQCLogic.readProcessResult returns them
ResultReader = Callable[[str, Any], tuple]


class QCRun:
    """One QC run: inputs -> process -> result nodes (see the module docstring)."""

    def __init__(self, logic: SegQCLogic, prepared: PreparedInputs, workDir: str, settings: QCRunSettings,
                 writeInputs: Optional[InputWriter] = None, readResults: Optional[ResultReader] = None) -> None:
        self.logic = logic
        self.prepared = prepared
        self.workDir = Path(workDir)
        self.settings = settings
        self.state: Optional[RunState] = None
        self.result: Optional[SegQCResult] = None
        self.error: Optional[str] = None  # why the run failed, for the user
        self.errorDetails: list[str] = []  # the process's last output lines
        self.log: list[str] = []
        self.process: Optional[QCProcess] = None
        self._writeInputs = writeInputs or SegQCLogic.writeProcessInputs
        self._readResults = readResults or SegQCLogic.readProcessResult
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="SegQC-io")
        self._future: Optional[Future] = None
        self._cancelRequested = False
        self._processError: Optional[str] = None
        self._pending = RunUpdate()

    # --- driving -------------------------------------------------------------------------------
    def start(self) -> None:
        """Begin writing the inputs (returns at once)."""
        self._setState(RunState.WRITING_INPUTS, "Writing the inputs for QC")
        self._future = self._executor.submit(self._writeInputs, self.prepared, str(self.workDir / "input"))

    @property
    def finished(self) -> bool:
        return self.state is not None and self.state.finished

    def poll(self) -> RunUpdate:
        """Advance the run as far as it can go without waiting; returns what changed."""
        try:
            if self.state is RunState.WRITING_INPUTS and self._future.done():
                self._afterInputsWritten()
            if self.state is RunState.RUNNING:
                self._pollProcess()
            if self.state is RunState.READING_RESULTS and self._future.done():
                self._afterResultsRead()
        except Exception as exc:  # anything unexpected ends the run cleanly and is shown to the user
            logger.exception("SegQC: QC run failed")
            self._fail(f"unexpected {type(exc).__name__}: {exc}")
        update, self._pending = self._pending, RunUpdate()
        return update

    def cancel(self) -> None:
        """Stop the run; nothing of it reaches the scene.  A step on a worker thread ends at the next poll."""
        self._cancelRequested = True
        if self.state is RunState.RUNNING and self.process is not None:
            self.process.cancel()
        self._note("Cancelling QC")

    def wait(self, timeout_s: Optional[float] = None) -> None:
        """Poll until the run is finished (scripts, tests and the self-test; the widget polls from a timer)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.finished:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"QC run still {self.state.value} after {timeout_s} s")
            self.poll()
            time.sleep(POLL_SLEEP_S)

    # --- steps ---------------------------------------------------------------------------------
    def _afterInputsWritten(self) -> None:
        try:
            images, segmentation = self._future.result()
        except Exception as exc:
            self._fail(f"could not write the inputs to {self.workDir}: {exc}")
            return
        if self._cancelRequested:
            self._end(RunState.CANCELLED, "QC cancelled")
            return
        command = self.logic.processCommand(self.settings.python, images, segmentation, str(self.workDir / "output"),
                                            self.settings.modelPath, self.settings.device, self.settings.strict,
                                            self.settings.suggest)
        self._log("$ " + " ".join(command))
        self.process = QCProcess(command, self.settings.environment, self.settings.launcher)
        try:
            self.process.start()
        except (OSError, ValueError, RuntimeError) as exc:  # no such interpreter, no permission, bad environment
            self.process = None
            self._fail(f"the QC process could not start ({self.settings.python}): {exc}")
            return
        self._setState(RunState.RUNNING, "Starting QC")

    def _pollProcess(self) -> None:
        process = self.process
        for event in process.poll():
            kind = event.get("event")
            if kind == "progress":
                self._pending.fraction = float(event.get("fraction", 0.0))
                self._note(str(event.get("message", "")))
            elif kind == "error":
                self._processError = str(event.get("message", "unknown error"))
                self._log(f"error: {self._processError}")
        for line in process.takeLogLines():
            self._log(line)
        if not process.finished:
            return
        if process.cancelled or self._cancelRequested:
            self._end(RunState.CANCELLED, "QC cancelled: the scene and the segmentation are unchanged")
        elif process.returncode != 0 or self._processError:
            self.errorDetails = list(process.outputTail)
            self._fail(self._processError or f"the QC process stopped with exit code {process.returncode}")
        else:
            self._setState(RunState.READING_RESULTS, "Reading the QC results")
            self._future = self._executor.submit(self._readResults, str(self.workDir / "output"),
                                                 self.prepared.case.geometry)

    def _afterResultsRead(self) -> None:
        try:
            report, errorProb, *rest = self._future.result()
        except Exception as exc:
            self._fail(f"could not read the QC results: {exc}")
            return
        if self._cancelRequested:
            self._end(RunState.CANCELLED, "QC cancelled: the scene and the segmentation are unchanged")
            return
        self.result = self.logic.applyResult(self.prepared, report, errorProb, self.settings.keepSnapshot,
                                             self.settings.overlay, suggestion=rest[0] if rest else None)
        self._end(RunState.DONE, "QC done")

    # --- bookkeeping ---------------------------------------------------------------------------
    def _setState(self, state: RunState, message: str) -> None:
        self.state = state
        self._note(message)

    def _note(self, message: str) -> None:
        self._pending.message = message
        self._log(message)

    def _log(self, line: str) -> None:
        self.log = (self.log + [line])[-LOG_LINES_KEPT:]
        self._pending.logLines.append(line)

    def _fail(self, message: str) -> None:
        self.error = message
        self._end(RunState.FAILED, f"QC failed: {message}")

    def _end(self, state: RunState, message: str) -> None:
        self._setState(state, message)
        self._executor.shutdown(wait=False)
        shutil.rmtree(self.workDir, ignore_errors=True)

