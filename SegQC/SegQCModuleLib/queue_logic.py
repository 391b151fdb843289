"""The case queue in the Slicer scene: a ``segqc rank`` output folder's cases, worst first, with their review
status, loaded one at a time with their existing QC report (no re-run), and the reviewer's work written back to
the folder's ``review_status.json`` (through :mod:`SegQCLib.review`, which holds every file format).

MRML, never Qt: runs under slicer-core as in Slicer.  Reading a case's files touches no node
(:func:`readCase`, for a worker thread); :meth:`CaseQueueLogic.showCase` then makes the nodes on the calling
(GUI) thread: the image volume(s) and the segmentation, tagged ``SegQC.QueueCase``, and the result nodes of
:meth:`SegQCLogic.applyResult`.  The previous case's nodes are removed first, so a long queue does not fill the
scene; :meth:`CaseQueueLogic.hasUnrecordedEdits` tells the widget when that would drop edits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import slicer
import vtk

from SegQCLib.errors import InputError
from SegQCLib.io.volumes import LabelMap
from SegQCLib.review.queue import ReviewQueue
from SegQCLib.review.ranking_file import CaseFiles
from SegQCLib.review.status_file import CaseReview, ReviewStatus

from .logic import NodeRole, OverlaySettings, SegQCLogic, SegQCResult, useColumnHeaders

logger = logging.getLogger(__name__)

CASE_ATTRIBUTE = "SegQC.QueueCase"  # on the image and segmentation nodes the queue loaded: the case id
QUEUE_PATH_ATTRIBUTE = "SegQC.QueuePath"  # on the queue table node: the ranking folder
QUEUE_COLUMNS = ("Rank", "Case", "Dice est", "Dice pred", "QI", "Boxes", "Review", "Rating", "Reviewer")


@dataclass
class CaseData:
    """A case's files read into memory (no MRML): what :meth:`CaseQueueLogic.showCase` turns into nodes."""

    index: int
    caseId: str
    files: CaseFiles
    images: list[tuple[np.ndarray, Any]]  # (array z, y, x in the file's type, Geometry)
    segmentation: LabelMap
    report: dict[str, Any]
    errorProb: dict[int, np.ndarray]
    review: CaseReview


def readCase(queue: ReviewQueue, index: int) -> CaseData:
    """Read image(s), segmentation, report and error maps of a queued case; safe on a worker thread."""
    import SimpleITK as sitk

    from SegQCLib.geometry import Geometry
    from SegQCLib.io.image_files import read_labelmap
    from SegQCLib.quality.outputs import read_error_probs
    from SegQCLib.quality.report import Report

    entry = queue.entry(index)
    files = queue.files(index)
    images = []
    for path in files.images:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise InputError(f"Cannot read the image of case {entry.case.case_id}: {path}: {exc}") from exc
        images.append((sitk.GetArrayFromImage(image), Geometry.from_sitk(image)))
    segmentation = read_labelmap(files.segmentation)
    report = Report.load(files.report).to_dict()
    errorProb = read_error_probs(files.result_dir, images[0][1])
    return CaseData(index, entry.case.case_id, files, images, segmentation, report, errorProb, entry.review)


class CaseQueueLogic:
    """The queue of one ranking folder, shown as a table node and walked case by case."""

    def __init__(self, logic: SegQCLogic, reviewer: Optional[str] = None) -> None:
        self.logic = logic
        self.scene = logic.scene
        self.reviewer = reviewer
        self.queue: Optional[ReviewQueue] = None
        self.currentIndex: Optional[int] = None

    # --- opening and listing -----------------------------------------------------------------
    def open(self, path: str) -> ReviewQueue:
        """Open a ranking folder (or its ranking.csv) and list its cases in the queue table."""
        self.queue = ReviewQueue(path, reviewer=self.reviewer)
        self.currentIndex = None
        self.updateTable()
        return self.queue

    def queuePathInScene(self) -> Optional[str]:
        """The ranking folder of a queue saved with the scene (to reopen it after the scene is loaded)."""
        node = self.logic.findNode(NodeRole.QUEUE)
        return node.GetAttribute(QUEUE_PATH_ATTRIBUTE) if node is not None else None

    def tableNode(self) -> Any:
        node = self.logic.findNode(NodeRole.QUEUE)
        if node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", "SegQC case queue")
            node.SetAttribute("SegQC.Role", NodeRole.QUEUE.value)
        return node

    def updateTable(self) -> Any:
        """The queue table: one row per case, worst first, with the statuses every session has written."""
        queue = self._queue()
        queue.refresh()
        entries = queue.entries()
        node = self.tableNode()
        node.SetAttribute(QUEUE_PATH_ATTRIBUTE, str(queue.folder))
        rows = [[e.case.rank if e.case.rank is not None else index + 1, e.case.case_id, e.case.dice_est,
                 e.case.dice_pred, e.case.qi, e.case.n_boxes, e.review.status.value,
                 e.review.rating.label if e.review.rating else "", e.review.reviewer or ""]
                for index, e in enumerate(entries)]
        kinds = ("int", "str", "float", "float", "float", "int", "str", "str", "str")
        with slicer.util.NodeModify(node):
            node.RemoveAllColumns()
            useColumnHeaders(node)
            for column, (name, kind) in enumerate(zip(QUEUE_COLUMNS, kinds)):
                values = [row[column] for row in rows]
                if kind == "int":
                    values = [-1 if v is None else v for v in values]
                self.logic.addTableColumn(node, name, values, kind)
        return node

    # --- loading a case ----------------------------------------------------------------------
    def loadCase(self, index: int, overlay: Optional[OverlaySettings] = None) -> SegQCResult:
        """Read and show a case at once (scripts, tests, the self-test; the widget reads on a worker thread)."""
        return self.showCase(readCase(self._queue(), index), overlay)

    def showCase(self, data: CaseData, overlay: Optional[OverlaySettings] = None) -> SegQCResult:
        """Replace the previous case in the scene by this one, with its report, error maps and review state."""
        self.removeCaseNodes()
        imageNodes = [self._volumeNode(array, geometry, f"{data.caseId}" + (f" ({i + 1})" if i else ""), data.caseId)
                      for i, (array, geometry) in enumerate(data.images)]
        classNames = {int(c["label"]): str(c["name"]) for c in data.report.get("classes", [])}
        segmentationNode, mapping = self._segmentationNode(data, imageNodes[0], classNames)
        try:
            prepared = self.logic.prepareInputs(imageNodes, segmentationNode, classNames, mapping)
            result = self.logic.applyResult(prepared, data.report, data.errorProb, overlay=overlay)
        except BaseException:
            self.removeCaseNodes()
            raise
        for composite in self.logic.nodesByClass("vtkMRMLSliceCompositeNode"):
            composite.SetBackgroundVolumeID(imageNodes[0].GetID())
        self.logic.restoreReviewState(data.review.items)
        if data.review.rating is not None:
            self.logic.setCaseRating(data.review.rating)
        box = data.review.current_box
        if box is not None and 0 <= box < len(data.report.get("boxes", [])):
            self.logic.jumpToBox(box)
        self.currentIndex = data.index
        if data.review.status is ReviewStatus.PENDING:
            self._queue().update(data.index, status=ReviewStatus.IN_PROGRESS)
            self.updateTable()
        return result

    def removeCaseNodes(self) -> None:
        """Remove the nodes of the case the queue showed last (image(s), segmentation, its SegQC results)."""
        for node in self._caseNodes():
            if node.IsA("vtkMRMLSegmentationNode") and self.logic.findNode(NodeRole.REPORT, node.GetID()):
                self.logic.removeResults(node.GetID())
        for node in self._caseNodes():
            self.logic.removeNode(node)

    def _caseNodes(self) -> list[Any]:
        nodes = self.scene.GetNodes()
        found = [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
        return [node for node in found if node.GetAttribute(CASE_ATTRIBUTE)]

    def _volumeNode(self, array: np.ndarray, geometry: Any, name: str, caseId: str) -> Any:
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", self.scene.GenerateUniqueName(name))
        node.SetAttribute(CASE_ATTRIBUTE, caseId)
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(geometry.ijk_to_ras_matrix()))
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
        display.AutoWindowLevelOn()
        return node

    def _segmentationNode(self, data: CaseData, reference: Any,
                          classNames: dict[int, str]) -> tuple[Any, dict[str, int]]:
        """The case's segmentation as a segmentation node, one segment per label with its name, colour and
        terminology, and the segment -> class mapping QC used (by segment name where every name is a class,
        else by label value: what the engine does, SegQCLib.engine.align_labels_to_model)."""
        labels = data.segmentation
        byName = {name.strip().lower(): label for label, name in classNames.items()}
        present = labels.labels
        named = all(labels.names.get(v, "").strip().lower() in byName for v in present) and labels.names
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                            self.scene.GenerateUniqueName(f"{data.caseId} segmentation"))
        node.SetAttribute(CASE_ATTRIBUTE, data.caseId)
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        mapping = {}
        for value in present:
            target = byName[labels.names[value].strip().lower()] if named else value
            name = labels.names.get(value) or classNames.get(target, f"label_{value}")
            segmentId = self._importSegment(node, labels, value, name, reference)
            style = labels.styles.get(value)
            segment = node.GetSegmentation().GetSegment(segmentId)
            if style is not None and style.color_rgb is not None:
                segment.SetColor(*style.color_rgb)
            if style is not None and style.terminology:
                segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), style.terminology)
            mapping[segmentId] = int(target)
        return node, mapping

    def _importSegment(self, node: Any, labels: LabelMap, value: int, name: str, reference: Any) -> str:
        segmentId = node.GetSegmentation().AddEmptySegment(f"label_{value}", name)
        mask = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__SegQC_import__")
        try:
            mask.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(labels.geometry.ijk_to_ras_matrix()))
            slicer.util.updateVolumeFromArray(mask, (labels.array == value).astype(np.uint8))
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segmentId)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(mask, node, ids):
                raise InputError(f"Cannot import label {value} of {labels.path} as a segment")
        finally:
            self.logic.removeNode(mask)
        return segmentId

    # --- the reviewer's work, written back ----------------------------------------------------
    def currentCaseId(self) -> Optional[str]:
        if self.queue is None or self.currentIndex is None:
            return None
        return self.queue.entry(self.currentIndex).case.case_id

    def saveReviewState(self, currentBox: Optional[int] = None) -> Optional[CaseReview]:
        """Write the current case's marks, rating and position to the status file (after every change)."""
        if self.currentIndex is None or self.logic.reviewedSegmentationID() is None:
            return None
        review = self._queue().update(self.currentIndex, items=self.logic.reviewState(),
                                      rating=self.logic.caseRating(), current_box=currentBox)
        self.updateTable()
        return review

    def setCaseStatus(self, status: ReviewStatus) -> CaseReview:
        """Finish (or skip) the current case: reviewed, corrected or skipped, with its marks and rating."""
        if self.currentIndex is None:
            raise InputError("No case of the queue is open")
        review = self._queue().update(self.currentIndex, status=ReviewStatus(status),
                                      items=self.logic.reviewState(), rating=self.logic.caseRating())
        self.updateTable()
        return review

    def recordCorrection(self, storeDir: str) -> Path:
        """Record the current case's correction under its case id and mark the case corrected in the queue."""
        caseId = self.currentCaseId()
        if caseId is None:
            raise InputError("No case of the queue is open")
        record = self.logic.recordCorrection(storeDir, caseId=caseId, reviewer=self.reviewer)
        recordId = f"{record.parent.name}/{record.name}"
        self._queue().update(self.currentIndex, status=ReviewStatus.CORRECTED, correction_record=recordId,
                             items=self.logic.reviewState(), rating=self.logic.caseRating())
        self.updateTable()
        return record

    def hasUnrecordedEdits(self) -> bool:
        return self.currentIndex is not None and self.logic.reviewedSegmentationID() is not None and \
            self.logic.segmentationChangedSinceQC()

    def step(self, step: int, skipDone: bool = True) -> Optional[int]:
        """The index of the next (+1) or previous (-1) case to show, None at the end of the queue."""
        return self._queue().step(self.currentIndex, step, skip_done=skipDone)

    def _queue(self) -> ReviewQueue:
        if self.queue is None:
            raise InputError("Open a case queue first: the output folder of `segqc rank` or its ranking.csv")
        return self.queue
