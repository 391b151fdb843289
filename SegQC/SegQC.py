"""SegQC 3D Slicer module: segmentation quality control with interactive review.

Module / Widget / Test.  The scene logic (everything MRML, nothing Qt) is ``SegQCLogic`` in
``SegQCModuleLib/logic.py``, one QC run (inputs written and results read on a worker thread, ``segqc run
--progress json`` in a ``PythonSlicer`` process) ``QCRun`` in ``SegQCModuleLib/qc_run.py`` (a package, so that
Slicer does not load them as modules); all computation is in ``SegQCLib``.  The GUI stays responsive and Cancel
stops a run at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import qt
import slicer
import vtk
from SegQCModuleLib.dependencies import ensureDependencies, processEnvironment, pythonExecutable, torchInstalled
from SegQCModuleLib.device_probe import DeviceProbe
from SegQCModuleLib.logic import (
    DEFAULT_OVERLAY_OPACITY,
    DEFAULT_OVERLAY_THRESHOLD,
    ItemKind,
    ItemStatus,
    NodeRole,
    OverlaySettings,
    SegQCLogic,
)
from SegQCModuleLib.qc_run import QCRun, QCRunSettings, RunState
from SegQCModuleLib.queue_panel import QueuePanel
from SegQCModuleLib.report_view import summarizeReport
from SegQCModuleLib.shortcuts import SHORTCUTS, ShortcutAction, shortcutFor, shortcutsHelpText
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from SegQCLib.review.rating import CaseRating

PROCESS_POLL_INTERVAL_MS = 100
PROGRESS_BAR_MAXIMUM = 1000
IGNORE_CLASS_TEXT = "(ignore)"
NOT_RATED_TEXT = "(not rated)"
DEFAULT_CORRECTIONS_DIR = str(Path.home() / "SegQC" / "corrections")


#
# Module
#


class SegQC(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SegQC"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SegQC project (segqc organisation)"]
        self.parent.helpText = """
Segmentation quality control without ground truth: a QC network predicts where a segmentation is wrong.
Run QC on an image and its segmentation, then walk through the ranked error boxes and slices, fix each error
in the Segment Editor and record the correction as training data.<br>
Keys while the module is shown (none of them is a key of the slice views or the Segment Editor):<br>
""" + "<br>".join(f"<b>{s.keys}</b>: {s.description}" for s in SHORTCUTS)
        self.parent.acknowledgementText = """
Method after QCResUNet (Qiu et al.), SegQC (Specktor-Fadida et al.) and Zhang &amp; Chung. Default model trained on
the Medical Segmentation Decathlon hippocampus task (CC-BY-SA 4.0). Sample case: a crop of the ICBM 2009a MNI152
template (Fonov et al., McConnell Brain Imaging Centre) segmented by SegQC's bundled segmenter.
"""
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """The module's sample case in the Sample Data module (SegQCModuleLib/sample_data.py)."""
    try:
        from SegQCModuleLib.sample_data import registerSampleData as register

        register()
    except Exception:  # Sample Data missing or changed: the module still works
        logging.exception("SegQC: could not register the sample data")


#
# State saved with the scene
#


class Device(Enum):
    auto = "auto"
    cpu = "cpu"


class ReviewItem(Enum):
    box = "box"
    slice = "slice"


@parameterNodeWrapper
class SegQCParameterNode:
    """Module state in the scene: inputs, display settings and where the review is."""

    imageVolume: vtkMRMLScalarVolumeNode
    extraImageVolumes: list[vtkMRMLScalarVolumeNode]
    segmentation: vtkMRMLSegmentationNode
    segmentMapping: str = ""  # JSON {segment ID: class label}; empty = match by name
    modelPath: str = ""  # empty = bundled default model
    device: Device = Device.auto
    overlayLabel: int = 0
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = DEFAULT_OVERLAY_OPACITY
    overlayThreshold: Annotated[float, WithinRange(0.0, 0.99)] = DEFAULT_OVERLAY_THRESHOLD
    currentItem: ReviewItem = ReviewItem.box
    currentBox: int = 0
    currentSlice: int = 0
    correctionsDir: str = DEFAULT_CORRECTIONS_DIR
    strictDomain: bool = False  # refuse results for inputs outside the model's domain (segqc run --strict)
    rankingPath: str = ""  # case queue: a segqc rank output folder or its ranking.csv
    reviewer: str = ""  # written with statuses and corrections; empty: the login name
    skipDoneCases: bool = True


#
# Widget
#


class SegQCWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[SegQCLogic] = None
        self._parameterNode: Optional[SegQCParameterNode] = None
        self._parameterNodeGuiTag = None
        self._run: Optional[QCRun] = None
        self._runTimer = qt.QTimer()
        self._runTimer.setInterval(PROCESS_POLL_INTERVAL_MS)
        self._runTimer.connect("timeout()", self.onRunTimer)
        self._shortcuts: list[Any] = []
        self._deviceProbe: Optional[DeviceProbe] = None
        self._deviceReport = None
        self._probeTimer = qt.QTimer()
        self._probeTimer.setInterval(PROCESS_POLL_INTERVAL_MS)
        self._probeTimer.connect("timeout()", self.onProbeTimer)
        self.queuePanel: Optional[QueuePanel] = None
        self._updatingGui = False
        self._shownOverlay: Optional[OverlaySettings] = None  # what the views show, as far as this widget knows

    # --- set-up ------------------------------------------------------------------------------
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SegQC.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SegQCLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.rerunButton.connect("clicked(bool)", self.onRerunButton)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateMappingTable)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.extraImagesSelector.connect("checkedNodesChanged()", self.onExtraImagesChanged)
        self.ui.overlayClassComboBox.connect("currentIndexChanged(int)", self.onOverlayClassChanged)
        self.ui.correctionsDirLineEdit.connect("currentPathChanged(QString)", self.onCorrectionsDirChanged)
        self.ui.previousBoxButton.connect("clicked(bool)", lambda: self.stepItem(ReviewItem.box, -1))
        self.ui.nextBoxButton.connect("clicked(bool)", lambda: self.stepItem(ReviewItem.box, 1))
        self.ui.previousSliceButton.connect("clicked(bool)", lambda: self.stepItem(ReviewItem.slice, -1))
        self.ui.nextSliceButton.connect("clicked(bool)", lambda: self.stepItem(ReviewItem.slice, 1))
        self.ui.markReviewedButton.connect("clicked(bool)", lambda: self.markCurrentItem(ItemStatus.REVIEWED))
        self.ui.markFixedButton.connect("clicked(bool)", lambda: self.markCurrentItem(ItemStatus.FIXED))
        self.ui.segmentEditorButton.connect("clicked(bool)", self.onSegmentEditorButton)
        self.ui.previewSuggestionButton.connect("clicked(bool)", self.onPreviewSuggestion)
        self.ui.acceptSuggestionButton.connect("clicked(bool)", self.onAcceptSuggestion)
        self.ui.rejectSuggestionButton.connect("clicked(bool)", self.onRejectSuggestion)
        self.ui.undoSuggestionButton.connect("clicked(bool)", self.onUndoSuggestion)
        self.ui.recordCorrectionButton.connect("clicked(bool)", self.onRecordCorrectionButton)
        self.ui.boxesTableView.connect("clicked(QModelIndex)", lambda index: self.goToItem(ReviewItem.box, index.row()))
        self.ui.slicesTableView.connect("clicked(QModelIndex)",
                                        lambda index: self.goToItem(ReviewItem.slice, index.row()))
        for view in (self.ui.summaryTableView, self.ui.slicesTableView, self.ui.boxesTableView):
            view.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
            view.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        self.ui.mappingTable.horizontalHeader().setSectionResizeMode(0, qt.QHeaderView.Stretch)
        self.ui.ratingComboBox.addItem(NOT_RATED_TEXT, "")
        for rating in CaseRating:
            self.ui.ratingComboBox.addItem(rating.label, rating.value)
        self.ui.ratingComboBox.connect("currentIndexChanged(int)", self.onRatingChanged)
        self.ui.queuePathLineEdit.nameFilters = ["ranking.csv"]
        self.queuePanel = QueuePanel(self)
        self.showShortcutsInPanel()

        self.initializeParameterNode()
        self.restoreResults()
        self.queuePanel.reopenFromScene()

    def cleanup(self) -> None:
        self.cancelProcess()
        self._runTimer.stop()
        self._probeTimer.stop()
        if self._deviceProbe is not None:
            self._deviceProbe.cancel()
        if self.queuePanel is not None:
            self.queuePanel.cleanup()
        self.removeShortcuts()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.installShortcuts()
        self.checkDevices()

    def exit(self) -> None:
        self.removeShortcuts()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.cancelProcess()
        self.setParameterNode(None)
        self.queuePanel.reset()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()
        self.restoreResults()

    def onSceneEndImport(self, caller, event) -> None:
        """A scene (.mrb) was loaded: its parameter node, review and case queue replace what the panel showed."""
        if self.parent.isEntered:
            self.initializeParameterNode()
        self.restoreResults()
        self.queuePanel.reopenFromScene()

    # --- parameter node ------------------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        self.setParameterNode(SegQCParameterNode(self.logic.getParameterNode()))
        if not self._parameterNode.imageVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.imageVolume = first
        if not self._parameterNode.segmentation:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
            if first:
                self._parameterNode.segmentation = first

    def setParameterNode(self, inputParameterNode: Optional[SegQCParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._updatingGui = True
            try:
                self.ui.modelPathLineEdit.currentPath = self._parameterNode.modelPath
                self.ui.correctionsDirLineEdit.currentPath = self._parameterNode.correctionsDir
                self.ui.queuePathLineEdit.currentPath = self._parameterNode.rankingPath
            finally:
                self._updatingGui = False
            self.updateMappingTable()
        self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        self.showExtraImages()
        running = self._run is not None
        ready = bool(self._parameterNode and self._parameterNode.imageVolume and self._parameterNode.segmentation)
        self.ui.applyButton.enabled = running or ready
        self.ui.applyButton.text = "Cancel" if running else "Run QC"
        self.ui.applyButton.toolTip = ("Stop QC; the scene is left as it was" if running else
                                       "Run QC on the segmentation (in a background process)")
        hasResults = self._hasResults()
        for button in (self.ui.previousBoxButton, self.ui.nextBoxButton, self.ui.previousSliceButton,
                       self.ui.nextSliceButton, self.ui.markReviewedButton, self.ui.markFixedButton,
                       self.ui.segmentEditorButton, self.ui.recordCorrectionButton,
                       self.ui.previewSuggestionButton, self.ui.acceptSuggestionButton,
                       self.ui.rejectSuggestionButton, self.ui.undoSuggestionButton):
            button.enabled = hasResults and not running
        self.ui.rerunButton.enabled = hasResults and ready and not running
        self.ui.ratingComboBox.enabled = hasResults and not running
        self.showDeviceInfo()
        if self.queuePanel is not None:
            self.queuePanel.updateButtons()
        if hasResults and self._parameterNode and self._parameterNode.overlayLabel and not self._updatingGui:
            if self.overlaySettings() != self._shownOverlay:  # only display changes touch the views (keeps layers)
                self.showOverlay()

    def _hasResults(self) -> bool:
        return self.logic is not None and self.logic.reviewedSegmentationID() is not None

    def isRunning(self) -> bool:
        return self._run is not None

    # --- device: which one QC will use, asked in a separate process ----------------------------------
    def checkDevices(self, again: bool = False) -> None:
        """Ask `segqc devices` (once, or again after PyTorch was installed) without importing torch here."""
        if self._deviceProbe is not None or (self._deviceReport is not None and not again):
            return
        self._deviceProbe = DeviceProbe(pythonExecutable(), processEnvironment(), slicer.util.launchConsoleProcess)
        self._deviceProbe.start()
        self._probeTimer.start()
        self.showDeviceInfo()

    def onProbeTimer(self) -> None:
        probe = self._deviceProbe
        if probe is None or probe.poll() is None:
            return
        self._probeTimer.stop()
        self._deviceReport, self._deviceProbe = probe.report, None
        if self._deviceReport.problem:
            logging.info("SegQC device check: %s", self._deviceReport.problem)
        self.showDeviceInfo()

    def showDeviceInfo(self) -> None:
        device = self._parameterNode.device.value if self._parameterNode else "auto"
        if self._deviceReport is not None:
            self.ui.deviceInfoLabel.text = self._deviceReport.summary(device)
        elif self._deviceProbe is not None:
            self.ui.deviceInfoLabel.text = "Checking for a GPU..."
        else:
            self.ui.deviceInfoLabel.text = ""

    def onModelPathChanged(self, path: str) -> None:
        if self._parameterNode and not self._updatingGui:
            self._parameterNode.modelPath = path
            self._parameterNode.segmentMapping = ""
            self.updateMappingTable()

    def onCorrectionsDirChanged(self, path: str) -> None:
        if self._parameterNode and not self._updatingGui:
            self._parameterNode.correctionsDir = path

    def onExtraImagesChanged(self) -> None:
        if self._parameterNode and not self._updatingGui:
            self._parameterNode.extraImageVolumes = list(self.ui.extraImagesSelector.checkedNodes())

    def showExtraImages(self) -> None:
        """Check the parameter node's extra images in the selector.

        parameterNodeWrapper has no GUI connector for qMRMLCheckableNodeComboBox
        (Base/Python/slicer/parameterNodeWrapper/guiConnectors.py), so a reopened scene's extra images were in the
        parameter node but not checked; qMRMLCheckableNodeComboBox::setCheckState (Libs/MRML/Widgets/
        qMRMLCheckableNodeComboBox.h) shows them.
        """
        if not self._parameterNode:
            return
        wanted = {node.GetID() for node in self._parameterNode.extraImageVolumes if node is not None}
        selector = self.ui.extraImagesSelector
        shown = {node.GetID() for node in selector.checkedNodes()}
        if wanted == shown:
            return
        updating, self._updatingGui = self._updatingGui, True
        try:
            for node in selector.checkedNodes():
                if node.GetID() not in wanted:
                    selector.setCheckState(node, qt.Qt.Unchecked)
            for node in self._parameterNode.extraImageVolumes:
                if node is not None:
                    selector.setCheckState(node, qt.Qt.Checked)
        finally:
            self._updatingGui = updating

    # --- segment-to-class mapping -----------------------------------------------------------
    def modelClassNames(self) -> dict[int, str]:
        """Classes of the selected model ({} while its dependencies are not installed yet)."""
        try:
            return self.logic.modelClassNames(self._parameterNode.modelPath or None)
        except ImportError:
            return {}
        except Exception as exc:  # a broken model must not break the panel; Run reports it clearly
            logging.warning("SegQC: cannot read the model's classes: %s", exc)
            return {}

    def currentMapping(self, segmentation=None) -> Optional[dict[str, int]]:
        """The edited mapping, or None (match by name) when there is none or it no longer applies."""
        text = self._parameterNode.segmentMapping if self._parameterNode else ""
        segmentation = segmentation or (self._parameterNode.segmentation if self._parameterNode else None)
        return self.logic.storedMapping(text, segmentation)

    def updateMappingTable(self, _node=None) -> None:
        table = self.ui.mappingTable
        table.setRowCount(0)
        # The selector, not the parameter node: this slot may run before the node has the new selection.
        segmentation = self.ui.segmentationSelector.currentNode()
        if not segmentation or not self._parameterNode:
            return
        classNames = self.modelClassNames()
        mapping = self.currentMapping(segmentation)
        if mapping is None and classNames:
            mapping, notices = self.logic.defaultSegmentMapping(segmentation, classNames)
            for notice in notices:
                self.ui.statusLabel.text = notice
        mapping = mapping or {}
        names = self.logic.segmentNames(segmentation)
        table.setRowCount(len(names))
        for row, (segmentId, name) in enumerate(names.items()):
            item = qt.QTableWidgetItem(name)
            item.setFlags(qt.Qt.ItemIsEnabled)
            item.setData(qt.Qt.UserRole, segmentId)
            table.setItem(row, 0, item)
            combo = qt.QComboBox()
            combo.addItem(IGNORE_CLASS_TEXT, 0)
            for label, className in sorted(classNames.items()):
                combo.addItem(f"{label}: {className}", label)
            combo.setCurrentIndex(max(0, combo.findData(mapping.get(segmentId, 0))))
            combo.connect("currentIndexChanged(int)", self.onMappingEdited)
            table.setCellWidget(row, 1, combo)

    def onMappingEdited(self, _index=None) -> None:
        table = self.ui.mappingTable
        if not self.modelClassNames():  # a table without classes offers only "(ignore)": never save that
            return
        mapping = {table.item(row, 0).data(qt.Qt.UserRole): int(table.cellWidget(row, 1).currentData)
                   for row in range(table.rowCount)}
        self._parameterNode.segmentMapping = json.dumps(mapping)

    # --- running QC ------------------------------------------------------------------------------
    def imageNodes(self) -> list[Any]:
        return [self._parameterNode.imageVolume, *self._parameterNode.extraImageVolumes]

    def onApplyButton(self) -> None:
        if self._run is not None:
            self.cancelProcess()
            return
        self.runQC()

    def onRerunButton(self) -> None:
        """Re-run after edits: the snapshot stays the one from the first run, so the correction covers all edits."""
        self.runQC(keepSnapshot=True)

    def runQC(self, wait: bool = False, keepSnapshot: bool = False) -> None:
        """Prepare the inputs from the scene, then let a QCRun write them, run segqc and read the results back."""
        if self._run is not None:
            return
        with slicer.util.tryWithErrorDisplay("SegQC could not start QC.", waitCursor=True):
            hadTorch = torchInstalled()
            if not ensureDependencies():
                return
            if not hadTorch:  # the device check ran without torch: ask again what the new install can use
                self.checkDevices(again=True)
            self.updateMappingTable()  # classes may have been unreadable before the dependencies were installed
            modelPath = self._parameterNode.modelPath or None
            classNames = self.logic.modelClassNames(modelPath)
            prepared = self.logic.prepareInputs(self.imageNodes(), self._parameterNode.segmentation, classNames,
                                                self.currentMapping(), self.logic.modelModalityCount(modelPath))
            settings = QCRunSettings(pythonExecutable(), modelPath, self._parameterNode.device.value,
                                     processEnvironment(), slicer.util.launchConsoleProcess, keepSnapshot,
                                     self.overlaySettings(), self._parameterNode.strictDomain)
            self._run = QCRun(self.logic, prepared, slicer.util.tempDirectory("SegQC"), settings)
            self.ui.processLogTextEdit.clear()
            self.ui.progressBar.setMaximum(PROGRESS_BAR_MAXIMUM)
            self.ui.progressBar.setValue(0)
            self.ui.progressBar.visible = True
            self._run.start()
            self.showRunUpdate(self._run.poll())
            for notice in prepared.notices:
                self.ui.processLogTextEdit.appendPlainText(f"Note: {notice}")
            self._runTimer.start()
            self._onParameterNodeModified()
        if wait and self._run is not None:
            self._run.wait()
            self.onRunTimer()

    def onRunTimer(self) -> None:
        run = self._run
        if run is None:
            self._runTimer.stop()
            return
        self.showRunUpdate(run.poll())
        if run.finished:
            self._runTimer.stop()
            self.onRunFinished(run)

    def showRunUpdate(self, update) -> None:
        if update.fraction is not None:
            self.ui.progressBar.setValue(int(update.fraction * PROGRESS_BAR_MAXIMUM))
        if update.message:
            self.ui.statusLabel.text = update.message
        for line in update.logLines:
            self.ui.processLogTextEdit.appendPlainText(line)

    def onRunFinished(self, run: QCRun) -> None:
        self._run = None
        self.ui.progressBar.visible = False
        try:
            if run.state is RunState.DONE:
                self._shownOverlay = None  # the new overlay nodes show what the panel says (see showResults)
                self.showResults(run.result.report)
            elif run.state is RunState.FAILED:
                slicer.util.errorDisplay(f"QC failed: {run.error}", detailedText="\n".join(run.errorDetails))
        finally:
            self._onParameterNodeModified()

    def cancelProcess(self) -> None:
        if self._run is not None:
            self._run.cancel()
            self.ui.statusLabel.text = "Cancelling QC..."

    # --- results -----------------------------------------------------------------------------
    def restoreResults(self) -> None:
        """Show the results of a review saved in the scene (reopened scene, or module re-entered)."""
        self._shownOverlay = None  # the views of a reopened scene show what was saved, not what this panel showed
        if self._hasResults() and self._parameterNode and not self._parameterNode.imageVolume:
            # A scene saved without the module's parameters: the inputs of its review are in the report node.
            images = self.logic.reviewImageNodes()
            if images:
                self._parameterNode.imageVolume = images[0]
                self._parameterNode.extraImageVolumes = images[1:]
        if self._hasResults():
            self.showResults(self.logic.reportData()["report"], jump=False)
        else:
            self.ui.caseQualityLabel.text = "Run QC to see the estimated quality."
            self.ui.domainWarningLabel.visible = False
        self._onParameterNodeModified()

    def showResults(self, report: dict, jump: bool = True) -> None:
        sourceID = self.logic.reviewedSegmentationID()
        self.ui.summaryTableView.setMRMLTableNode(self.logic.findNode(NodeRole.SUMMARY, sourceID))
        self.ui.slicesTableView.setMRMLTableNode(self.logic.findNode(NodeRole.SLICES, sourceID))
        self.ui.boxesTableView.setMRMLTableNode(self.logic.findNode(NodeRole.BOXES, sourceID))
        summary = summarizeReport(report)  # every report field the panel shows goes through this
        self.ui.caseQualityLabel.text = summary.text()
        warning = self.logic.domainWarning(report)
        self.ui.domainWarningLabel.text = warning or ""
        self.ui.domainWarningLabel.visible = warning is not None
        self._updatingGui = True
        try:
            self.ui.overlayClassComboBox.clear()
            for label, name in summary.classes:
                self.ui.overlayClassComboBox.addItem(name, label)
            self.showRating()
        finally:
            self._updatingGui = False
        if jump:
            self._parameterNode.currentBox = 0
            self._parameterNode.currentSlice = 0
            if report.get("boxes"):
                self.goToItem(ReviewItem.box, 0)
            elif report.get("slices"):
                self.goToItem(ReviewItem.slice, 0)
        self.onOverlayClassChanged(self.ui.overlayClassComboBox.currentIndex)

    def showQueueCase(self, result, currentBox: Optional[int]) -> None:
        """A case the queue loaded: the panel follows its nodes, results and the position it was left at."""
        reportData = self.logic.reportData()
        images = [slicer.mrmlScene.GetNodeByID(i) for i in reportData.get("imageNodeIDs", [])]
        self._parameterNode.imageVolume = images[0]
        self._parameterNode.extraImageVolumes = images[1:]
        self._parameterNode.segmentation = slicer.mrmlScene.GetNodeByID(self.logic.reviewedSegmentationID())
        self._parameterNode.segmentMapping = json.dumps(reportData.get("mapping", {}))
        self._shownOverlay = None
        slicer.util.resetSliceViews()
        self.showResults(result.report)
        if currentBox and self.logic.itemCount(ItemKind.BOX) > currentBox:
            self.goToItem(ReviewItem.box, currentBox)

    def showRating(self) -> None:
        rating = self.logic.caseRating() if self._hasResults() else None
        self.ui.ratingComboBox.setCurrentIndex(max(0, self.ui.ratingComboBox.findData(rating or "")))

    def onRatingChanged(self, index: int) -> None:
        if self._updatingGui or index < 0 or not self._hasResults():
            return
        with slicer.util.tryWithErrorDisplay("SegQC could not store the rating."):
            self.logic.setCaseRating(self.ui.ratingComboBox.itemData(index) or None)
            self.queuePanel.saveReviewState()

    def onOverlayClassChanged(self, index: int) -> None:
        if self._updatingGui or index < 0 or not self._parameterNode:
            return
        self._parameterNode.overlayLabel = int(self.ui.overlayClassComboBox.itemData(index))

    def overlaySettings(self) -> Optional[OverlaySettings]:
        """The overlay the panel shows (None before the first run: the logic picks the first class)."""
        parameters = self._parameterNode
        if not parameters or not parameters.overlayLabel:
            return None
        return OverlaySettings(parameters.overlayLabel, parameters.overlayOpacity, parameters.overlayThreshold)

    def showOverlay(self) -> None:
        with slicer.util.tryWithErrorDisplay("SegQC could not show the error overlay."):
            settings = self.overlaySettings()
            self._shownOverlay = settings
            self.logic.showOverlay(settings.label, settings.opacity, settings.threshold)

    # --- review ------------------------------------------------------------------------------------
    def goToItem(self, kind: ReviewItem, index: int) -> None:
        with slicer.util.tryWithErrorDisplay("SegQC could not jump to the item."):
            itemKind = ItemKind.BOX if kind is ReviewItem.box else ItemKind.SLICE
            count = self.logic.itemCount(itemKind)
            if count == 0:
                self.ui.statusLabel.text = f"No {kind.value}s in the report."
                return
            index = index % count  # wrap around: after the last item comes the first
            if kind is ReviewItem.box:
                self.logic.jumpToBox(index)
                self._parameterNode.currentBox = index
                self.ui.boxesTableView.selectRow(index)
                label = self.logic.boxLabel(index)
                comboIndex = self.ui.overlayClassComboBox.findData(label)
                if comboIndex >= 0:
                    self.ui.overlayClassComboBox.setCurrentIndex(comboIndex)
            else:
                self.logic.jumpToSlice(index)
                self._parameterNode.currentSlice = index
                self.ui.slicesTableView.selectRow(index)
            self._parameterNode.currentItem = kind
            self.ui.statusLabel.text = f"{kind.value.capitalize()} {index + 1} of {count}"
            if kind is ReviewItem.box:
                self.logic.clearPreview()
                self.ui.suggestionLabel.text = self.logic.boxSuggestionText(index)

    def stepItem(self, kind: ReviewItem, step: int) -> None:
        current = self._parameterNode.currentBox if kind is ReviewItem.box else self._parameterNode.currentSlice
        if self._parameterNode.currentItem is not kind:
            step = 0  # switching lists starts where that list was left
        self.goToItem(kind, current + step)

    def markCurrentItem(self, status: ItemStatus) -> None:
        with slicer.util.tryWithErrorDisplay("SegQC could not mark the item."):
            kind = self._parameterNode.currentItem
            if kind is ReviewItem.box:
                self.logic.setItemStatus(ItemKind.BOX, self._parameterNode.currentBox, status)
            else:
                self.logic.setItemStatus(ItemKind.SLICE, self._parameterNode.currentSlice, status)
        self.queuePanel.saveReviewState()  # a queued case's marks are written at once

    def onSegmentEditorButton(self) -> None:
        with slicer.util.tryWithErrorDisplay("SegQC could not open the Segment Editor."):
            label = self._parameterNode.overlayLabel
            if self._parameterNode.currentItem is ReviewItem.box and self.logic.itemCount(ItemKind.BOX):
                label = self.logic.boxLabel(self._parameterNode.currentBox)
            segmentId = self.logic.segmentIdForLabel(label)
            segmentation = slicer.mrmlScene.GetNodeByID(self.logic.reviewedSegmentationID())
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
            editor.setSegmentationNode(segmentation)
            editor.setSourceVolumeNode(self._parameterNode.imageVolume)
            if segmentId:
                editor.setCurrentSegmentID(segmentId)

    # --- suggested edits of the current box: the logic does the work ---------------------------
    def _suggestionAction(self, action: Callable[[int], Any], done: str) -> None:
        with slicer.util.tryWithErrorDisplay("SegQC: suggested edit not applied.", waitCursor=True):
            if self._parameterNode.currentItem is not ReviewItem.box:
                self.stepItem(ReviewItem.box, 0)  # the suggestion belongs to a box: go to the current one
            index = self._parameterNode.currentBox
            action(index)
            self.ui.statusLabel.text = done.format(box=index + 1)
        self.queuePanel.saveReviewState()

    def onPreviewSuggestion(self) -> None:
        self._suggestionAction(self.logic.previewSuggestion, "Box {box}: suggested edit shown (cyan added, magenta "
                               "removed)")

    def onAcceptSuggestion(self) -> None:
        self._suggestionAction(self.logic.acceptSuggestion, "Box {box}: suggested edit accepted")

    def onRejectSuggestion(self) -> None:
        self._suggestionAction(self.logic.rejectSuggestion, "Box {box}: suggested edit rejected")

    def onUndoSuggestion(self) -> None:
        with slicer.util.tryWithErrorDisplay("SegQC could not undo the suggested edit.", waitCursor=True):
            entry = self.logic.undoSuggestion()
            self.ui.statusLabel.text = f"Box {entry.row + 1}: accepted suggestion undone"
        self.queuePanel.saveReviewState()

    def onRecordCorrectionButton(self) -> bool:
        """Record the correction (a queued case also becomes `corrected` in the queue); True when recorded."""
        with slicer.util.tryWithErrorDisplay("SegQC could not record the correction.", waitCursor=True):
            folder = self._parameterNode.correctionsDir or DEFAULT_CORRECTIONS_DIR
            if self.queuePanel.showsQueueCase():
                self.queuePanel.syncReviewer()
                record = self.queuePanel.logic.recordCorrection(folder)
                self.queuePanel.showCounts(f"Correction of {self.queuePanel.logic.currentCaseId()} recorded")
            else:
                record = self.logic.recordCorrection(folder, reviewer=self._parameterNode.reviewer or None)
            self.ui.statusLabel.text = f"Correction recorded in {record}"
            slicer.util.showStatusMessage(f"SegQC: correction recorded in {record}", 5000)
            return True
        return False

    # --- keyboard shortcuts (only while the module is shown) --------------------------------------
    def shortcutCallbacks(self) -> dict[ShortcutAction, Callable[[], None]]:
        return {
            ShortcutAction.NEXT_BOX: lambda: self.stepItem(ReviewItem.box, 1),
            ShortcutAction.PREVIOUS_BOX: lambda: self.stepItem(ReviewItem.box, -1),
            ShortcutAction.NEXT_SLICE: lambda: self.stepItem(ReviewItem.slice, 1),
            ShortcutAction.PREVIOUS_SLICE: lambda: self.stepItem(ReviewItem.slice, -1),
            ShortcutAction.MARK_REVIEWED: lambda: self.markCurrentItem(ItemStatus.REVIEWED),
            ShortcutAction.MARK_FIXED: lambda: self.markCurrentItem(ItemStatus.FIXED),
            ShortcutAction.SEGMENT_EDITOR: self.onSegmentEditorButton,
            ShortcutAction.NEXT_CASE: lambda: self.queuePanel.step(+1),
            ShortcutAction.PREVIOUS_CASE: lambda: self.queuePanel.step(-1),
            ShortcutAction.PREVIEW_SUGGESTION: self.onPreviewSuggestion,
            ShortcutAction.ACCEPT_SUGGESTION: self.onAcceptSuggestion,
            ShortcutAction.REJECT_SUGGESTION: self.onRejectSuggestion,
            ShortcutAction.UNDO_SUGGESTION: self.onUndoSuggestion,
        }

    def installShortcuts(self) -> None:
        """One QShortcut per entry of SHORTCUTS on the main window (keys checked against Slicer's in shortcuts.py)."""
        if self._shortcuts:
            return
        callbacks = self.shortcutCallbacks()
        for entry in SHORTCUTS:
            callback = callbacks[entry.action]
            caseAction = entry.action in (ShortcutAction.NEXT_CASE, ShortcutAction.PREVIOUS_CASE)
            shortcut = qt.QShortcut(qt.QKeySequence(entry.keys), slicer.util.mainWindow())
            shortcut.connect("activated()",
                             lambda callback=callback, caseAction=caseAction: self._onShortcut(callback, caseAction))
            self._shortcuts.append(shortcut)

    def showShortcutsInPanel(self) -> None:
        """Tooltips and the keys line of the panel from the one table of shortcuts."""
        buttons = {ShortcutAction.NEXT_BOX: self.ui.nextBoxButton,
                   ShortcutAction.PREVIOUS_BOX: self.ui.previousBoxButton,
                   ShortcutAction.NEXT_SLICE: self.ui.nextSliceButton,
                   ShortcutAction.PREVIOUS_SLICE: self.ui.previousSliceButton,
                   ShortcutAction.MARK_REVIEWED: self.ui.markReviewedButton,
                   ShortcutAction.MARK_FIXED: self.ui.markFixedButton,
                   ShortcutAction.SEGMENT_EDITOR: self.ui.segmentEditorButton,
                   ShortcutAction.NEXT_CASE: self.ui.nextCaseButton,
                   ShortcutAction.PREVIOUS_CASE: self.ui.previousCaseButton,
                   ShortcutAction.PREVIEW_SUGGESTION: self.ui.previewSuggestionButton,
                   ShortcutAction.ACCEPT_SUGGESTION: self.ui.acceptSuggestionButton,
                   ShortcutAction.REJECT_SUGGESTION: self.ui.rejectSuggestionButton,
                   ShortcutAction.UNDO_SUGGESTION: self.ui.undoSuggestionButton}
        for action, button in buttons.items():
            entry = shortcutFor(action)
            button.toolTip = f"{entry.description[0].upper()}{entry.description[1:]} (key: {entry.keys})"
        self.ui.shortcutsLabel.text = "Keys while this module is shown: " + shortcutsHelpText()

    def _onShortcut(self, callback: Callable[[], None], caseAction: bool = False) -> None:
        if self._run is not None:
            return
        if (self.queuePanel.isOpen if caseAction else self._hasResults()):
            callback()

    def removeShortcuts(self) -> None:
        for shortcut in self._shortcuts:
            shortcut.disconnect("activated()")
            shortcut.setParent(None)
        self._shortcuts = []


#
# Self-test: the whole review on the module's sample case, through the widget (Testing/test_slicer_*.py test the
# same logic under slicer-core)
#


class SegQCTest(ScriptedLoadableModuleTest):
    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SegQCReview()

    def test_SegQCReview(self) -> None:
        import tempfile

        import numpy as np
        from SegQCModuleLib.sample_data import SAMPLE_NAME, loadSampleData

        self.delayDisplay("SegQC: dependencies (installed on first use, after a question)")
        self.assertTrue(ensureDependencies(), "SegQC needs PyTorch and its Python packages to run the self-test")

        self.delayDisplay(f"SegQC: load the sample case {SAMPLE_NAME} through Sample Data")
        volume, segmentation = loadSampleData()
        self.assertIsNotNone(volume)
        self.assertEqual(sorted(SegQCLogic.segmentNames(segmentation).values()), ["anterior", "posterior"])

        widget = slicer.modules.segqc.widgetRepresentation().self()
        slicer.util.selectModule("SegQC")
        parameters = widget._parameterNode
        parameters.imageVolume = volume
        parameters.segmentation = segmentation
        parameters.device = Device.cpu
        parameters.modelPath = ""  # the bundled model

        self.delayDisplay("SegQC: run QC in a background process (bundled model, CPU)")
        widget.runQC(wait=True)
        logic = widget.logic
        self.assertIsNotNone(logic.reviewedSegmentationID(), widget.ui.statusLabel.text)
        report = logic.reportData()["report"]
        self.assertEqual([c["name"] for c in report["classes"]], ["anterior", "posterior"])
        self.assertTrue(report["boxes"], "the bundled model finds errors in the sample segmentation")
        self.assertIn("Process log", widget.ui.processLogCollapsibleButton.text)
        self.assertTrue(widget.ui.processLogTextEdit.toPlainText())

        self.delayDisplay("SegQC: the overlay is on the image's grid and shown in every slice view")
        ijkToRas = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(ijkToRas)
        for overlay in logic.findNodes(NodeRole.OVERLAY):
            overlayMatrix = vtk.vtkMatrix4x4()
            overlay.GetIJKToRASMatrix(overlayMatrix)
            np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(overlayMatrix),
                                       slicer.util.arrayFromVTKMatrix(ijkToRas))
        parameters.overlayOpacity = 0.35
        composite = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
        self.assertAlmostEqual(composite.GetForegroundOpacity(), 0.35, places=5)
        self.assertEqual(slicer.mrmlScene.GetNodeByID(composite.GetForegroundVolumeID()).GetAttribute("SegQC.Role"),
                         NodeRole.OVERLAY.value)

        self.delayDisplay("SegQC: walk the boxes and slices, mark them")
        widget.stepItem(ReviewItem.box, 1)
        index = 1 % len(report["boxes"])
        box = report["boxes"][index]
        red = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        self.assertAlmostEqual(red.GetSliceOffset(), box["center_ras"][2], places=4)
        centre = [0.0, 0.0, 0.0]
        logic.findNode(NodeRole.ROI).GetCenter(centre)
        np.testing.assert_allclose(centre, box["center_ras"], atol=1e-4)
        widget.markCurrentItem(ItemStatus.FIXED)
        self.assertEqual(logic.itemStatus(ItemKind.BOX, index), ItemStatus.FIXED)
        widget.stepItem(ReviewItem.slice, 1)
        widget.markCurrentItem(ItemStatus.REVIEWED)
        self.assertEqual(logic.itemStatus(ItemKind.SLICE, parameters.currentSlice), ItemStatus.REVIEWED)

        self.delayDisplay("SegQC: rate the case")
        widget.ui.ratingComboBox.setCurrentIndex(widget.ui.ratingComboBox.findData(CaseRating.MINOR_FIXES.value))
        self.assertEqual(logic.caseRating(), CaseRating.MINOR_FIXES.value)

        self.delayDisplay("SegQC: fix the segment of the top box and record the correction")
        segmentId = logic.segmentIdForLabel(box["label"])
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
        (z0, y0, x0), (z1, y1, x1) = box["bbox_zyx"]
        mask[z0:z1, y0:y1, x0:x1] = 0
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, segmentId, volume)
        parameters.correctionsDir = tempfile.mkdtemp(prefix="SegQCTestCorrections")
        self.assertTrue(widget.onRecordCorrectionButton())
        records = sorted(Path(parameters.correctionsDir).glob("records/*/v0001"))
        self.assertEqual(len(records), 1)
        record = json.loads((records[0] / "record.json").read_text())
        self.assertEqual(record["rating"], CaseRating.MINOR_FIXES.value)
        self.assertEqual([b["status"] for b in record["reviewed_boxes"]], ["fixed"])
        self.assertEqual(record["segment_styles"]["1"]["terminology"].split("~")[2], "SCT^5366008^Hippocampus")
        for name in ("original.nii.gz", "corrected.nii.gz", "image_0000.nii.gz"):
            self.assertTrue((records[0] / name).is_file(), name)
        self.delayDisplay("SegQC test passed")
