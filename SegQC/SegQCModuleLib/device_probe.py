"""Which device QC will run on, asked before a run without importing torch into Slicer's GUI process: ``segqc devices
--json`` runs in a child process (PythonSlicer in Slicer) and its answer becomes a :class:`DeviceReport`.  No Qt."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Optional

from SegQCLib.network.devices import DeviceReport

from .process import Launcher, QCProcess

logger = logging.getLogger(__name__)


def probeCommand(python: str) -> list[str]:
    return [python, "-m", "SegQCLib.commands.cli", "devices", "--json"]


class DeviceProbe:
    """One ``segqc devices --json`` process; :meth:`poll` returns its report once it has ended."""

    def __init__(self, python: str, environment: Optional[dict[str, str]] = None,
                 launcher: Optional[Launcher] = None) -> None:
        self.process = QCProcess(probeCommand(python), environment, launcher)
        self.report: Optional[DeviceReport] = None

    def start(self) -> None:
        try:
            self.process.start()
        except (OSError, ValueError) as exc:
            self.report = DeviceReport(problem=f"the device check could not start: {exc}")

    @property
    def finished(self) -> bool:
        return self.report is not None

    def poll(self) -> Optional[DeviceReport]:
        if self.report is not None:
            return self.report
        for event in self.process.poll():
            if event.get("event") == "devices" and isinstance(event.get("report"), dict):
                self.report = DeviceReport.from_dict(event["report"])
        if self.report is None and self.process.finished:
            self.report = DeviceReport(problem=_failure(self.process.returncode, self.process.outputTail))
        return self.report

    def cancel(self) -> None:
        self.process.cancel()


def _failure(returncode: Optional[int], tail: Sequence[str]) -> str:
    last = next((line for line in reversed(tail) if line.strip()), "no output")
    logger.warning("SegQC: device check failed (exit %s): %s", returncode, "\n".join(tail))
    return f"the device check failed (exit code {returncode}: {last})"

