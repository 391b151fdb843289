"""The Case queue section of the module panel: Qt glue around :class:`~.queue_logic.CaseQueueLogic`.

A case's files are read on a worker thread (:func:`~.queue_logic.readCase`) while Slicer stays responsive; the
nodes are made on the GUI thread when the read is done.  Leaving a case with edits that were not recorded asks
first.  The reviewer's marks, rating and position are written to the folder's ``review_status.json`` after each
change, so a crash or another session loses nothing.
"""

from __future__ import annotations

import getpass
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional

import qt
import slicer

from SegQCLib.review.status_file import ReviewStatus

from .queue_logic import CaseQueueLogic, readCase

logger = logging.getLogger(__name__)

LOAD_POLL_INTERVAL_MS = 100


class QueuePanel:
    """Widgets of the Case queue section and what they do; ``widget`` is the module's SegQCWidget."""

    def __init__(self, widget: Any) -> None:
        self.widget = widget
        self.ui = widget.ui
        self.logic = CaseQueueLogic(widget.logic)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="SegQC-case")
        self._loading: Optional[Future] = None
        self._timer = qt.QTimer()
        self._timer.setInterval(LOAD_POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onLoadTimer)
        self.ui.openQueueButton.connect("clicked(bool)", self.onOpen)
        self.ui.nextCaseButton.connect("clicked(bool)", lambda: self.step(+1))
        self.ui.previousCaseButton.connect("clicked(bool)", lambda: self.step(-1))
        self.ui.caseReviewedButton.connect("clicked(bool)", lambda: self.finishCase(ReviewStatus.REVIEWED))
        self.ui.skipCaseButton.connect("clicked(bool)", lambda: self.finishCase(ReviewStatus.SKIPPED))
        self.ui.queueTableView.connect("clicked(QModelIndex)", lambda index: self.openCase(index.row()))
        self.ui.queueTableView.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        self.ui.queueTableView.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        self.updateButtons()

    # --- state -------------------------------------------------------------------------------
    @property
    def isOpen(self) -> bool:
        return self.logic.queue is not None

    def showsQueueCase(self) -> bool:
        """Whether the review in the scene is the queue's current case."""
        return self.isOpen and self.logic.currentIndex is not None and self.logic.currentCaseId() is not None and \
            self.widget.logic.reviewedSegmentationID() is not None

    def updateButtons(self) -> None:
        busy = self._loading is not None or self.widget.isRunning()
        for button in (self.ui.nextCaseButton, self.ui.previousCaseButton):
            button.enabled = self.isOpen and not busy
        for button in (self.ui.caseReviewedButton, self.ui.skipCaseButton):
            button.enabled = self.showsQueueCase() and not busy

    def showCounts(self, prefix: str = "") -> None:
        if not self.isOpen:
            self.ui.queueStatusLabel.text = prefix or "No case queue open."
            return
        counts = self.logic.queue.counts()
        done = counts["reviewed"] + counts["corrected"] + counts["skipped"]
        text = (f"{len(self.logic.queue)} cases: {done} done ({counts['corrected']} corrected), "
                f"{counts['in_progress']} in progress, {counts['pending']} pending")
        if counts["failed_qc"]:
            text += f"; {counts['failed_qc']} failed QC (failures.json)"
        self.ui.queueStatusLabel.text = "\n".join(part for part in (prefix, text) if part)

    # --- actions -----------------------------------------------------------------------------
    def onOpen(self) -> None:
        parameters = self.widget._parameterNode
        path = self.ui.queuePathLineEdit.currentPath
        with slicer.util.tryWithErrorDisplay("SegQC could not open the case queue.", waitCursor=True):
            if parameters is not None:
                parameters.rankingPath = path
            self.logic.reviewer = self.reviewerName()
            self.logic.open(path)
            self.ui.queueTableView.setMRMLTableNode(self.logic.tableNode())
            self.showCounts()
            first = self.logic.queue.first_to_review()
            if first is not None:
                self.openCase(first)
        self.updateButtons()

    def reopenFromScene(self) -> None:
        """A saved scene that had a queue open: list it again (quietly; the folder may be gone)."""
        path = self.logic.queuePathInScene()
        if not path:
            return
        try:
            self.logic.reviewer = self.reviewerName()
            self.logic.open(path)
        except Exception as exc:  # a moved or deleted folder must not stop the scene from loading
            logger.warning("SegQC: the case queue saved with the scene cannot be opened: %s", exc)
            return
        self.ui.queuePathLineEdit.currentPath = path
        self.ui.queueTableView.setMRMLTableNode(self.logic.tableNode())
        self.showCounts()
        self.updateButtons()

    def reset(self) -> None:
        """The scene is closing: its case nodes and queue table go with it."""
        self.logic.queue = None
        self.logic.currentIndex = None
        self.ui.queueTableView.setMRMLTableNode(None)
        self.showCounts()
        self.updateButtons()

    def syncReviewer(self) -> None:
        """The name in the Reviewer field, for the statuses written from now on."""
        self.logic.reviewer = self.reviewerName()
        if self.logic.queue is not None:
            self.logic.queue.reviewer = self.logic.reviewer

    def reviewerName(self) -> str:
        parameters = self.widget._parameterNode
        name = (parameters.reviewer if parameters is not None else "") or ""
        if not name:
            try:
                name = getpass.getuser()
            except Exception:  # no login name (some containers): leave it empty
                name = ""
        return name

    def step(self, step: int) -> None:
        if not self.isOpen or self._loading is not None:
            return
        skipDone = bool(self.widget._parameterNode.skipDoneCases) if self.widget._parameterNode else True
        target = self.logic.step(step, skipDone)
        if target is None:
            self.showCounts("No more cases " + ("after" if step > 0 else "before") + " this one"
                            + (" that are not done." if skipDone else "."))
            return
        self.openCase(target)

    def finishCase(self, status: ReviewStatus) -> None:
        self.syncReviewer()
        with slicer.util.tryWithErrorDisplay("SegQC could not write the case status."):
            self.logic.setCaseStatus(status)
            self.showCounts()
        self.step(+1)

    def openCase(self, index: int) -> None:
        """Read a case on a worker thread; it is shown when the read is done (see onLoadTimer)."""
        if self._loading is not None or self.widget.isRunning() or not self.confirmLeave():
            return
        self.saveReviewState()
        caseId = self.logic.queue.entry(index).case.case_id
        self.ui.queueStatusLabel.text = f"Loading case {caseId}..."
        self._loading = self._executor.submit(readCase, self.logic.queue, index)
        self._timer.start()
        self.updateButtons()

    def onLoadTimer(self) -> None:
        if self._loading is None or not self._loading.done():
            return
        self._timer.stop()
        future, self._loading = self._loading, None
        with slicer.util.tryWithErrorDisplay("SegQC could not open the case.", waitCursor=True):
            data = future.result()
            result = self.logic.showCase(data, self.widget.overlaySettings())
            self.widget.showQueueCase(result, data.review.current_box)
            self.ui.queueTableView.selectRow(data.index)
            self.showCounts(f"Case {data.index + 1}: {data.caseId}")
        self.updateButtons()

    def confirmLeave(self) -> bool:
        """Before another case replaces this one: record, discard or keep unrecorded edits (True: go on)."""
        if not self.showsQueueCase() or not self.logic.hasUnrecordedEdits():
            return True
        answer = qt.QMessageBox.question(
            slicer.util.mainWindow(), "SegQC: unrecorded edits",
            f"The segmentation of {self.logic.currentCaseId()} was edited and the correction is not recorded.\n"
            "Record it before opening the next case?",
            qt.QMessageBox.Save | qt.QMessageBox.Discard | qt.QMessageBox.Cancel, qt.QMessageBox.Save)
        if answer == qt.QMessageBox.Cancel:
            return False
        if answer == qt.QMessageBox.Save:
            return self.widget.onRecordCorrectionButton()
        return True

    def saveReviewState(self) -> None:
        """Write the current case's marks, rating and position (after every change, and before leaving it)."""
        if not self.showsQueueCase():
            return
        parameters = self.widget._parameterNode
        self.syncReviewer()
        with slicer.util.tryWithErrorDisplay("SegQC could not write the review status."):
            self.logic.saveReviewState(parameters.currentBox if parameters is not None else None)
            self.showCounts(f"Case {self.logic.currentIndex + 1}: {self.logic.currentCaseId()}")

    def cleanup(self) -> None:
        self._timer.stop()
        self._executor.shutdown(wait=False)
