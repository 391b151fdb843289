"""Scene logic of the SegQC module: MRML nodes <-> SegQCLib arrays, result nodes, navigation, corrections.

Everything here touches MRML but never Qt, so it runs (and is tested) under ``slicer-core`` from PyPI
as well as inside 3D Slicer.  The scene is passed in (``slicer-core`` has no ``slicer.mrmlScene``).

State lives in the scene, not in this object: every node SegQC makes carries the attribute
``SegQC.Role`` (and ``SegQC.Segmentation`` = the reviewed segmentation's node ID), the boxes table holds
the box geometry used for jumping, the report text node holds the report and the segment-to-class
mapping, and a hidden label map holds the snapshot of the segmentation taken when QC ran.  A saved scene
therefore resumes a review, and a fresh ``SegQCLogic`` on a loaded scene finds everything again.

RAS conversions go through :class:`SegQCLib.geometry.Geometry` only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from SegQCLib.errors import CancelledError, GeometryMismatchError, InputError, ModelError, SegQCError
from SegQCLib.geometry import Geometry
from SegQCLib.io.case import Case
from SegQCLib.io.image_files import write_array
from SegQCLib.io.volumes import LabelMap, SegmentStyle, Volume

try:  # inside Slicer the logic also provides the module's parameter node (ScriptedLoadableModuleLogic)
    from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic as _LogicBase
except ImportError:  # slicer-core has MRML but not the scripted-module framework
    _LogicBase = object

logger = logging.getLogger(__name__)

ROLE_ATTRIBUTE = "SegQC.Role"
SOURCE_ATTRIBUTE = "SegQC.Segmentation"
LABEL_ATTRIBUTE = "SegQC.Label"
RATING_ATTRIBUTE = "SegQC.Rating"  # on the report node: the reviewer's CaseRating value

# Overlay display defaults: error probabilities are in [0, 1]; below the threshold the overlay is transparent.
DEFAULT_OVERLAY_OPACITY = 0.5
DEFAULT_OVERLAY_THRESHOLD = 0.5
OVERLAY_COLOR_COUNT = 256

ProgressCallback = Callable[[float, str], None]
CancelCallback = Callable[[], bool]


class NodeRole(str, Enum):
    """What a node made by SegQC is for (stored in its ``SegQC.Role`` attribute)."""

    OVERLAY = "overlay"
    SUMMARY = "summary"
    SLICES = "slices"
    BOXES = "boxes"
    ROI = "roi"
    SNAPSHOT = "snapshot"
    REPORT = "report"
    COLORS = "colors"
    QUEUE = "queue"
    SUGGESTION = "suggestion"  # hidden label map: the suggested segmentation of the QC run (segqc run --suggest)
    EDITS = "edits"  # hidden label map per class (SegQC.Label): the ids of its suggested edits
    PREVIEW = "preview"  # label map shown while a suggested edit is previewed: 1 added, 2 removed, 3 other
    PREVIEW_COLORS = "preview colors"


class ItemKind(str, Enum):
    SLICE = "slice"
    BOX = "box"


class ItemStatus(str, Enum):
    """Review status of a ranked slice or box, shown in the tables' Status column."""

    PENDING = "pending"
    REVIEWED = "reviewed"
    FIXED = "fixed"  # fixed by hand (Segment Editor)
    FIXED_SUGGESTION = "fixed (suggestion)"  # the box's suggested edit was accepted
    REJECTED = "rejected"  # the box's suggested edit was rejected


# Voxel values of the preview label map, and their colours (distinct from the segments and the yellow-red overlay).
PREVIEW_ADDED, PREVIEW_REMOVED, PREVIEW_OTHER = 1, 2, 3
PREVIEW_COLORS = {PREVIEW_ADDED: ("added", (0.0, 1.0, 1.0)), PREVIEW_REMOVED: ("removed", (1.0, 0.0, 1.0)),
                  PREVIEW_OTHER: ("relabelled", (1.0, 1.0, 1.0))}
PREVIEW_OPACITY = 0.8


# Columns of the ranked tables; the logic reads box geometry back from these, so they are the contract.
STATUS_COLUMN = "Status"
SLICES_COLUMNS = ("Rank", "Slice", "Error score")
BOXES_COLUMNS = ("Rank", "Class", "Label", "Slice", "Score", "Max prob", "Area (mm2)",
                 "z0", "y0", "x0", "z1", "y1", "x1")
SUMMARY_COLUMNS = ("Class", "Label", "Dice est", "IoU est", "ARVD est", "Volume (mm3)", "Est. volume (mm3)")


@dataclass(frozen=True)
class OverlaySettings:
    """What the slice views show of the error overlays: one class, its opacity, the threshold below which nothing
    is drawn."""

    label: int
    opacity: float = DEFAULT_OVERLAY_OPACITY
    threshold: float = DEFAULT_OVERLAY_THRESHOLD


@dataclass
class PreparedInputs:
    """The scene's inputs as arrays on one voxel grid, ready for the engine."""

    case: Case
    imageNodeIDs: list[str]
    segmentationNodeID: str
    mapping: dict[str, int]  # segment ID -> model class label
    classNames: dict[int, str]
    notices: list[str] = field(default_factory=list)


@dataclass
class SegQCResult:
    """What :meth:`SegQCLogic.runQC` made: the report (as its JSON dict) and the nodes showing it."""

    report: dict[str, Any]
    overlayNodes: dict[int, Any]
    summaryTableNode: Any
    slicesTableNode: Any
    boxesTableNode: Any
    roiNode: Any
    reportNode: Any
    snapshotNode: Any
    notices: list[str] = field(default_factory=list)
    suggestion: Any = None  # SegQCLib.quality.suggestion.Suggestion of a run with --suggest, else None


@dataclass
class AcceptedSuggestion:
    """One accepted suggested edit, kept so that :meth:`SegQCLogic.undoSuggestion` can restore the segments.

    ``before`` / ``after``: the masks (on the QC grid) of the segments the accept changed, before and after it;
    ``previousStatuses``: the statuses of the boxes that frame the edit (every box of its 3D region) before it.
    """

    sourceID: str
    row: int
    editId: int
    voxels: int
    previousStatuses: dict[int, ItemStatus]
    before: dict[str, np.ndarray]
    after: dict[str, np.ndarray]


def useColumnHeaders(tableNode: Any) -> None:
    """Show column names as the table's header row.

    Slicer 5.6.1 renamed the switch to ``SetUseColumnTitleAsColumnHeader`` (a column's title falls back to its
    name, Libs/MRML/Widgets/qMRMLTableModel.cxx) and made ``SetUseColumnNameAsColumnHeader`` warn on every call;
    Slicer 5.6.0 has only the old name.
    """
    if hasattr(tableNode, "SetUseColumnTitleAsColumnHeader"):
        tableNode.SetUseColumnTitleAsColumnHeader(True)
    else:
        tableNode.SetUseColumnNameAsColumnHeader(True)


class SegQCLogic(_LogicBase):
    """MRML side of SegQC; see the module docstring.  ``scene`` defaults to ``slicer.mrmlScene``."""

    def __init__(self, scene: Any = None) -> None:
        if _LogicBase is not object:
            _LogicBase.__init__(self)
        self.scene = scene if scene is not None else slicer.mrmlScene
        self._engines: dict[tuple[str, str], Any] = {}
        self._accepted: list[AcceptedSuggestion] = []  # undo stack of accepted suggestions (all reviews)

    # ------------------------------------------------------------------------------------------
    # Model
    # ------------------------------------------------------------------------------------------
    def engine(self, modelPath: Optional[str] = None, device: str = "auto") -> Any:
        """The QC engine for a model (cached: loading a model takes longer than a small case's QC)."""
        key = (str(modelPath or ""), str(device))
        if key not in self._engines:
            from SegQCLib.engine import QCEngine

            try:
                self._engines[key] = QCEngine(model_path=modelPath or None, device=device)
            except SegQCError:
                raise
            except (OSError, RuntimeError, ValueError, KeyError) as exc:
                raise ModelError(f"Cannot load the QC model {modelPath or '(bundled default)'}: {exc}") from exc
        return self._engines[key]

    @staticmethod
    def modelConfig(modelPath: Optional[str] = None) -> Any:
        """The model package's configuration (classes, modalities) without its weights and without torch."""
        from SegQCLib.network.config import read_config
        from SegQCLib.network.model_files import default_model_path

        return read_config(modelPath or default_model_path())

    def modelClassNames(self, modelPath: Optional[str] = None) -> dict[int, str]:
        return {int(label): str(name) for label, name in self.modelConfig(modelPath).classes.items()}

    def modelModalityCount(self, modelPath: Optional[str] = None) -> int:
        return len(self.modelConfig(modelPath).modalities)

    # ------------------------------------------------------------------------------------------
    # Nodes -> arrays
    # ------------------------------------------------------------------------------------------
    @staticmethod
    def volumeGeometry(volumeNode: Any) -> Geometry:
        """Voxel grid of a volume node (IJK-to-RAS matrix and dimensions) as a :class:`Geometry`."""
        imageData = volumeNode.GetImageData() if volumeNode else None
        if imageData is None:
            raise InputError(f"Volume {volumeNode.GetName() if volumeNode else None} has no voxels")
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        dims_xyz = imageData.GetDimensions()
        return Geometry.from_ijk_to_ras_matrix(slicer.util.arrayFromVTKMatrix(matrix),
                                               (int(dims_xyz[2]), int(dims_xyz[1]), int(dims_xyz[0])))

    @staticmethod
    def segmentNames(segmentationNode: Any) -> dict[str, str]:
        """Segment ID -> segment name, in the segmentation's order."""
        segmentation = segmentationNode.GetSegmentation()
        ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        return {segmentId: segmentation.GetSegment(segmentId).GetName() for segmentId in ids}

    @staticmethod
    def segmentStyles(segmentationNode: Any, mapping: dict[str, int]) -> dict[int, SegmentStyle]:
        """Colour and terminology of each mapped segment, by class label (kept in any .seg.nrrd SegQC writes)."""
        segmentation = segmentationNode.GetSegmentation()
        styles = {}
        for segmentId, label in mapping.items():
            segment = segmentation.GetSegment(segmentId)
            if segment is None or not label:
                continue
            terminology = vtk.reference("")
            # The tag, not GetTerminology(): Slicer 5.6/5.8 have only the tag (Libs/vtkSegmentationCore/vtkSegment.h)
            found = segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology)
            styles[int(label)] = SegmentStyle(tuple(float(c) for c in segment.GetColor()),
                                              str(terminology.get()) if found and terminology.get() else None)
        return styles

    def defaultSegmentMapping(self, segmentationNode: Any,
                              classNames: dict[int, str]) -> tuple[dict[str, int], list[str]]:
        """Segment ID -> class label by name (case-insensitive); by order when no name matches and counts agree.

        Returns the mapping and notices; segments that map to no class are left out (see :meth:`checkMapping`).
        """
        names = self.segmentNames(segmentationNode)
        byName = {name.strip().lower(): label for label, name in classNames.items()}
        mapping = {segmentId: byName[name.strip().lower()] for segmentId, name in names.items()
                   if name.strip().lower() in byName}
        notices: list[str] = []
        if not mapping and len(names) == len(classNames):
            mapping = dict(zip(names, sorted(classNames)))
            pairs = ", ".join(f"'{names[s]}' -> {classNames[label]}" for s, label in mapping.items())
            notices.append(f"No segment is named like a model class; mapped by order: {pairs}. Check the mapping.")
        return mapping, notices

    def storedMapping(self, text: str, segmentationNode: Any) -> Optional[dict[str, int]]:
        """The segment-to-class mapping saved in the parameter node (JSON), if it still applies.

        None (match by name) when there is none, when it is unreadable, when it is for other segments, or when it
        maps every segment to 0: such a mapping was saved from a table that offered no class (the model's
        classes could not be read) and would make QC fail.
        """
        if not text or segmentationNode is None:
            return None
        try:
            mapping = {str(k): int(v) for k, v in json.loads(text).items()}
        except (ValueError, TypeError, AttributeError):
            logger.warning("SegQC: ignoring an unreadable segment-to-class mapping: %r", text)
            return None
        if set(mapping) != set(self.segmentNames(segmentationNode)) or not any(mapping.values()):
            return None
        return mapping

    def checkMapping(self, segmentationNode: Any, mapping: dict[str, int], classNames: dict[int, str]) -> None:
        """Raise InputError unless every segment maps to exactly one model class and no class twice."""
        names = self.segmentNames(segmentationNode)
        if not names:
            raise InputError(f"Segmentation '{segmentationNode.GetName()}' has no segments: nothing to check")
        wanted = ", ".join(f"{label}={name}" for label, name in sorted(classNames.items()))
        unmapped = [names[s] for s in names if s not in mapping]
        if unmapped:
            raise InputError(
                f"Segments {unmapped} do not map to the model's classes ({wanted}). Rename the segments after "
                "the classes or edit the segment-to-class mapping; segments of other structures can be mapped to 0 "
                "(ignored)."
            )
        unknown = sorted({label for label in mapping.values() if label != 0 and label not in classNames})
        if unknown:
            raise InputError(f"Mapping uses class labels {unknown} that the model does not have ({wanted})")
        used = [label for label in mapping.values() if label != 0]
        twice = sorted({label for label in used if used.count(label) > 1})
        if twice:
            raise InputError(f"Several segments map to class(es) {[classNames[c] for c in twice]}; map one each")
        if not used:
            raise InputError("Every segment is mapped to 0 (ignored): map at least one segment to a class")

    def segmentationGeometryNotice(self, segmentationNode: Any, imageGeometry: Geometry) -> Optional[str]:
        """A notice when the segmentation was made on another voxel grid than the image (it is resampled)."""
        segmentation = segmentationNode.GetSegmentation()
        serialized = segmentation.GetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
        if not serialized:
            return None
        oriented = slicer.vtkOrientedImageData()
        slicer.vtkSegmentationConverter.DeserializeImageGeometry(serialized, oriented)
        matrix = vtk.vtkMatrix4x4()
        oriented.GetImageToWorldMatrix(matrix)
        extent = oriented.GetExtent()
        shape_zyx = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
        if min(shape_zyx) < 1:
            return None
        # The extent may start away from 0: shift the origin to the first voxel so grids compare like for like.
        ijkToRas = slicer.util.arrayFromVTKMatrix(matrix)
        ijkToRas[:3, 3] = ijkToRas[:3, :3] @ np.array([extent[0], extent[2], extent[4]], dtype=float) + ijkToRas[:3, 3]
        differences = imageGeometry.differences(Geometry.from_ijk_to_ras_matrix(ijkToRas, shape_zyx))
        if not differences:
            return None
        return ("Segmentation resampled (nearest neighbour) onto the image grid for QC; the segmentation itself is "
                "unchanged: " + "; ".join(differences))

    def exportLabelArray(self, segmentationNode: Any, mapping: dict[str, int], referenceVolumeNode: Any) -> np.ndarray:
        """(z, y, x) label array of the mapped segments on the reference volume's grid (the node is not modified)."""
        shape = self.volumeGeometry(referenceVolumeNode).shape_zyx
        labels = np.zeros(shape, dtype=np.uint8 if max(mapping.values(), default=0) < 256 else np.int16)
        colorTablesBefore = {node.GetID() for node in self.nodesByClass("vtkMRMLColorTableNode")}
        labelmapNode = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__SegQC_export__")
        labelmapNode.SetHideFromEditors(True)
        try:
            for segmentId, label in mapping.items():
                if label == 0:
                    continue
                ids = vtk.vtkStringArray()
                ids.InsertNextValue(segmentId)
                if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                        segmentationNode, ids, labelmapNode, referenceVolumeNode):
                    raise InputError(f"Cannot export segment '{segmentId}' of {segmentationNode.GetName()}")
                mask = slicer.util.arrayFromVolume(labelmapNode) != 0
                if mask.shape != labels.shape:
                    raise GeometryMismatchError(f"Exported segment has shape {mask.shape}, image {labels.shape}")
                if np.any(labels[mask] != 0):
                    logger.warning("Segment %s overlaps another mapped segment; the overlap is given to it", segmentId)
                labels[mask] = label
        finally:
            self.removeNode(labelmapNode)
            # Export makes a colour table per call from the segment colours: remove those, never an existing one.
            for node in self.nodesByClass("vtkMRMLColorTableNode"):
                if node.GetID() not in colorTablesBefore:
                    self.scene.RemoveNode(node)
        return labels

    def prepareInputs(self, imageNodes: Sequence[Any], segmentationNode: Any,
                      classNames: dict[int, str], mapping: Optional[dict[str, int]] = None,
                      modalityCount: Optional[int] = None) -> PreparedInputs:
        """Check the inputs and turn them into a :class:`Case` on the first image's grid."""
        imageNodes = [node for node in (imageNodes or []) if node is not None]
        if not imageNodes:
            raise InputError("Select the image volume(s) to check the segmentation against")
        if segmentationNode is None:
            raise InputError("Select a segmentation: there is nothing to check")
        if modalityCount is not None and len(imageNodes) != modalityCount:
            raise InputError(f"The model needs {modalityCount} image volume(s) (modalities in the model's order), "
                             f"got {len(imageNodes)}")
        for node in [*imageNodes, segmentationNode]:
            if node.GetParentTransformNode() is not None:
                raise InputError(f"'{node.GetName()}' is under a transform: harden or remove it before QC")
        notices: list[str] = []
        if mapping is None:
            mapping, notices = self.defaultSegmentMapping(segmentationNode, classNames)
        mapping = {str(k): int(v) for k, v in mapping.items()}
        self.checkMapping(segmentationNode, mapping, classNames)

        reference = self.volumeGeometry(imageNodes[0])
        images = []
        for index, node in enumerate(imageNodes):
            geometry = self.volumeGeometry(node)
            differences = reference.differences(geometry)
            if differences:
                raise GeometryMismatchError(f"Image {index + 1} '{node.GetName()}' is not on the grid of the first "
                                            "image: " + "; ".join(differences) + ". Resample it first.")
            array = np.array(slicer.util.arrayFromVolume(node), dtype=np.float32)
            if array.ndim != 3:
                raise InputError(f"Image '{node.GetName()}' is not a scalar 3D volume (shape {array.shape})")
            images.append(Volume(array, reference, node.GetID()))
        notice = self.segmentationGeometryNotice(segmentationNode, reference)
        if notice:
            logger.warning(notice)
            notices.append(notice)
        labels = self.exportLabelArray(segmentationNode, mapping, imageNodes[0])
        names = {label: classNames[label] for label in sorted(set(mapping.values())) if label}
        styles = self.segmentStyles(segmentationNode, mapping)
        segmentation = LabelMap(labels, reference, names, segmentationNode.GetID(), styles=styles)
        case = Case(images, segmentation, notices=list(notices))
        return PreparedInputs(case, [n.GetID() for n in imageNodes], segmentationNode.GetID(), mapping,
                              dict(classNames), notices)

    # ------------------------------------------------------------------------------------------
    # Running QC
    # ------------------------------------------------------------------------------------------
    def runQC(self, imageNodes: Sequence[Any], segmentationNode: Any, modelPath: Optional[str] = None,
              device: str = "auto", progress: Optional[ProgressCallback] = None,
              cancel: Optional[CancelCallback] = None, mapping: Optional[dict[str, int]] = None,
              keepSnapshot: bool = False, strict: bool = False, suggest: bool = True) -> SegQCResult:
        """Run QC synchronously and create/update the result nodes.

        No node is created before the engine has finished, so a failed or cancelled run leaves the scene as
        it was; the segmentation node is only read.  ``strict``: an input outside the model's domain raises
        OutOfDomainError and creates no result.  ``suggest``: also the suggested edits (segqc run --suggest).
        """
        engine = self.engine(modelPath, device)
        classNames = {int(label): str(name) for label, name in engine.config.classes.items()}
        prepared = self.prepareInputs(imageNodes, segmentationNode, classNames, mapping,
                                      len(engine.config.modalities))
        qcResult = engine.run_case(prepared.case, progress=progress, cancel=cancel, strict=strict,
                                   suggest_edits=suggest)
        if cancel is not None and cancel():
            raise CancelledError("QC cancelled")
        return self.applyResult(prepared, qcResult.report.to_dict(), qcResult.error_prob, keepSnapshot,
                                suggestion=getattr(qcResult, "suggestion", None))

    @staticmethod
    def writeProcessInputs(prepared: PreparedInputs, workDir: str) -> tuple[list[str], str]:
        """Write the prepared case as files for a ``segqc run`` process; returns (image paths, seg path).

        Touches no MRML node, so it runs on a worker thread.  The files are uncompressed NIfTI: writing a
        300x512x512 float volume took 33 s with gzip and 0.7 s plain (``benchmarks/bench_slicer_io.py``).
        """
        work = Path(workDir)
        images = [str(write_array(work / f"image_{index:04d}.nii", volume.array, volume.geometry, compress=False))
                  for index, volume in enumerate(prepared.case.images)]
        segmentation = prepared.case.segmentation
        return images, str(write_array(work / "segmentation.nii", segmentation.array, segmentation.geometry,
                                       compress=False))

    @staticmethod
    def processCommand(python: str, imagePaths: Sequence[str], segmentationPath: str, outputDir: str,
                       modelPath: Optional[str] = None, device: str = "auto", strict: bool = False,
                       suggest: bool = True) -> list[str]:
        """Command line of a ``segqc run`` process that reports progress as JSON lines on stdout.

        ``suggest`` (the default): the run also writes the suggested segmentation and edits (``--suggest``).
        """
        command = [python, "-m", "SegQCLib.commands.cli", "run"]
        for path in imagePaths:
            command += ["--image", str(path)]
        command += ["--seg", str(segmentationPath), "--out", str(outputDir), "--device", str(device),
                    "--progress", "json"]
        if modelPath:
            command += ["--model", str(modelPath)]
        if suggest:
            command.append("--suggest")
        if strict:
            command.append("--strict")
        return command

    @staticmethod
    def domainWarning(report: dict[str, Any]) -> Optional[str]:
        """The banner text over the results of an input outside the model's domain (None when there is none)."""
        domain = report.get("domain") or {}
        if domain.get("in_domain") is False:
            reasons = "".join(f"\n• {reason}" for reason in domain.get("reasons", []))
            return ("Outside the model's domain: this input is unlike the data the QC model was trained on, so "
                    f"the estimates and error maps below are unreliable.{reasons}")
        if domain and not domain.get("checked", True):
            return "Not checked against the model's training data (the model has no domain profile)."
        return None

    @staticmethod
    def parseProcessLine(line: str) -> Optional[dict[str, Any]]:
        """One JSON event of ``segqc run --progress json`` (None for any other output line)."""
        line = line.strip()
        if not line.startswith("{"):
            return None
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            return None
        return event if isinstance(event, dict) and "event" in event else None

    @staticmethod
    def readProcessResult(outputDir: str, geometry: Geometry) -> tuple[dict[str, Any], dict[int, np.ndarray], Any]:
        """The report (as its JSON dict), error maps and suggestion (None without) of a ``segqc run`` output folder.

        Touches no MRML node, so it runs on a worker thread; :meth:`applyResult` then makes the nodes.
        """
        from SegQCLib.quality.outputs import read_error_probs
        from SegQCLib.quality.report import Report
        from SegQCLib.quality.suggestion_files import read_suggestion

        report = Report.load(outputDir)
        suggestion = read_suggestion(outputDir, report) if report.suggestion is not None else None
        if suggestion is not None and suggestion.geometry.differences(geometry):
            raise GeometryMismatchError(f"The suggestion in {outputDir} is not on the grid QC ran on: "
                                        + "; ".join(suggestion.geometry.differences(geometry)))
        return report.to_dict(), read_error_probs(outputDir, geometry), suggestion

    def loadProcessResult(self, prepared: PreparedInputs, outputDir: str, keepSnapshot: bool = False) -> SegQCResult:
        """Create the result nodes from a ``segqc run`` output folder, reading it on the calling thread."""
        report, errorProb, suggestion = self.readProcessResult(outputDir, prepared.case.geometry)
        return self.applyResult(prepared, report, errorProb, keepSnapshot, suggestion=suggestion)

    def applyResult(self, prepared: PreparedInputs, report: dict[str, Any], errorProb: dict[int, np.ndarray],
                    keepSnapshot: bool = False, overlay: Optional[OverlaySettings] = None,
                    suggestion: Any = None) -> SegQCResult:
        """Create or update overlays, tables, ROI, report and snapshot nodes; on failure remove what it added.

        ``keepSnapshot`` (Re-run QC after edits) keeps the segmentation snapshot of the earlier run, so a
        recorded correction covers every edit since the review began.  The overlay is shown with ``overlay``'s
        settings, else with those the views showed before (a re-run keeps the reviewer's class, opacity and
        threshold), else the first class with the default opacity and threshold.  ``suggestion`` (a
        :class:`SegQCLib.quality.suggestion.Suggestion` of the same run) is kept in hidden label maps; a result
        without one removes those of an earlier run, and either way the undo list of accepted suggestions of
        this segmentation is cleared (the boxes it refers to are gone).
        """
        report = dict(report)
        report["notices"] = list(dict.fromkeys([*report.get("notices", []), *prepared.notices]))
        sourceID = prepared.segmentationNodeID
        overlay = overlay or self.shownOverlaySettings(sourceID)
        created: list[Any] = []
        try:
            colorNode = self._overlayColorNode(created)
            overlays = {}
            for label, prob in sorted(errorProb.items()):
                name = prepared.classNames.get(int(label), f"label_{label}")
                overlays[int(label)] = self._overlayNode(sourceID, int(label), name, prob, prepared.case.geometry,
                                                         colorNode, created)
            summary = self._tableNode(NodeRole.SUMMARY, sourceID, "SegQC summary", created)
            self._fillSummary(summary, report)
            slices = self._tableNode(NodeRole.SLICES, sourceID, "SegQC slices", created)
            self._fillSlices(slices, report)
            boxes = self._tableNode(NodeRole.BOXES, sourceID, "SegQC boxes", created)
            self._fillBoxes(boxes, report)
            roi = self._roiNode(sourceID, created)
            snapshot = self._snapshotNode(prepared, created, keepSnapshot)
            reportNode = self._reportNode(prepared, report, created)
            if suggestion is not None:
                self._suggestionNodes(sourceID, suggestion, prepared.case.geometry, created)
        except BaseException:
            for node in created:
                self.removeNode(node)
            raise
        if suggestion is None:
            for role in (NodeRole.SUGGESTION, NodeRole.EDITS):
                for node in self.findNodes(role, sourceID):
                    self.removeNode(node)
        self.clearPreview(sourceID)
        self._accepted = [entry for entry in self._accepted if entry.sourceID != sourceID]
        result = SegQCResult(report, overlays, summary, slices, boxes, roi, reportNode, snapshot,
                             list(report["notices"]), suggestion)
        if report.get("boxes"):
            self.jumpToBox(0, sourceID)
        labels = sorted(overlays)
        if labels:
            settings = overlay if overlay is not None and overlay.label in overlays else OverlaySettings(labels[0])
            self.showOverlay(settings.label, settings.opacity, settings.threshold, sourceID=sourceID,
                             backgroundNodeID=prepared.imageNodeIDs[0])
        return result

    # ------------------------------------------------------------------------------------------
    # Finding SegQC nodes
    # ------------------------------------------------------------------------------------------
    def findNodes(self, role: NodeRole, sourceID: Optional[str] = None) -> list[Any]:
        """SegQC nodes of a role (for one reviewed segmentation, when given), in scene order."""
        found = []
        collection = self.scene.GetNodes()
        for index in range(collection.GetNumberOfItems()):
            node = collection.GetItemAsObject(index)
            if node.GetAttribute(ROLE_ATTRIBUTE) != role.value:
                continue
            if sourceID is not None and node.GetAttribute(SOURCE_ATTRIBUTE) != sourceID:
                continue
            found.append(node)
        return found

    def findNode(self, role: NodeRole, sourceID: Optional[str] = None) -> Any:
        nodes = self.findNodes(role, sourceID)
        return nodes[-1] if nodes else None

    def reviewedSegmentationID(self) -> Optional[str]:
        """The segmentation of the latest QC run in the scene (its report node's source)."""
        node = self.findNode(NodeRole.REPORT)
        return node.GetAttribute(SOURCE_ATTRIBUTE) if node else None

    def _sourceID(self, sourceID: Optional[str]) -> str:
        sourceID = sourceID or self.reviewedSegmentationID()
        if not sourceID:
            raise InputError("No QC results in the scene: run QC first")
        return sourceID

    def reviewImageNodes(self, sourceID: Optional[str] = None) -> list[Any]:
        """The image volume nodes QC ran on (first image, then the other modalities) that are still in the scene."""
        if not (sourceID or self.reviewedSegmentationID()):
            return []
        nodes = [self.scene.GetNodeByID(nodeID) for nodeID in self.reportData(sourceID).get("imageNodeIDs", [])]
        return [node for node in nodes if node is not None]

    def reportData(self, sourceID: Optional[str] = None) -> dict[str, Any]:
        """The stored report, segment mapping and input node IDs of a QC run."""
        node = self.findNode(NodeRole.REPORT, self._sourceID(sourceID))
        if node is None:
            raise InputError("No QC results in the scene: run QC first")
        return json.loads(node.GetText())

    # ------------------------------------------------------------------------------------------
    # Result nodes
    # ------------------------------------------------------------------------------------------
    def _tag(self, node: Any, role: NodeRole, sourceID: str) -> None:
        node.SetAttribute(ROLE_ATTRIBUTE, role.value)
        node.SetAttribute(SOURCE_ATTRIBUTE, sourceID)

    def _getOrCreate(self, className: str, role: NodeRole, sourceID: str, name: str, created: list[Any],
                     label: Optional[int] = None) -> Any:
        for node in self.findNodes(role, sourceID):
            if label is None or node.GetAttribute(LABEL_ATTRIBUTE) == str(label):
                return node
        node = self.scene.AddNewNodeByClass(className, self.scene.GenerateUniqueName(name))
        self._tag(node, role, sourceID)
        if label is not None:
            node.SetAttribute(LABEL_ATTRIBUTE, str(label))
        created.append(node)
        return node

    def _overlayColorNode(self, created: list[Any]) -> Any:
        """Transparent-to-yellow-to-red table for error probabilities 0..1 (shared by all overlays)."""
        for node in self.findNodes(NodeRole.COLORS):
            return node
        node = self.scene.AddNewNodeByClass("vtkMRMLColorTableNode", "SegQC error probability")
        node.SetAttribute(ROLE_ATTRIBUTE, NodeRole.COLORS.value)
        node.SetTypeToUser()
        node.SetNumberOfColors(OVERLAY_COLOR_COUNT)
        lookup = node.GetLookupTable()
        lookup.SetTableRange(0.0, 1.0)
        fraction = np.linspace(0.0, 1.0, OVERLAY_COLOR_COUNT)
        green = np.clip(2.0 - 2.0 * fraction, 0.0, 1.0)  # yellow at low probability, red at high
        for index in range(OVERLAY_COLOR_COUNT):
            node.SetColor(index, f"p{index / (OVERLAY_COLOR_COUNT - 1):.3f}", 1.0, float(green[index]), 0.0, 1.0)
        created.append(node)
        return node

    def _overlayNode(self, sourceID: str, label: int, className: str, prob: np.ndarray, geometry: Geometry,
                     colorNode: Any, created: list[Any]) -> Any:
        node = self._getOrCreate("vtkMRMLScalarVolumeNode", NodeRole.OVERLAY, sourceID, f"SegQC error {className}",
                                 created, label)
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(geometry.ijk_to_ras_matrix()))
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(prob, dtype=np.float32))
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(colorNode.GetID())
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0.0, 1.0)
        display.SetAutoThreshold(False)
        display.SetApplyThreshold(True)
        display.SetThreshold(DEFAULT_OVERLAY_THRESHOLD, 1.0)
        display.SetInterpolate(False)  # one colour per voxel: the reviewer sees which voxels are predicted wrong
        return node

    def _tableNode(self, role: NodeRole, sourceID: str, name: str, created: list[Any]) -> Any:
        node = self._getOrCreate("vtkMRMLTableNode", role, sourceID, name, created)
        node.RemoveAllColumns()
        useColumnHeaders(node)
        return node

    @staticmethod
    def addTableColumn(tableNode: Any, name: str, values: Sequence[Any], kind: str) -> None:
        if kind == "str":
            array = vtk.vtkStringArray()
            for value in values:
                array.InsertNextValue(str(value))
        else:  # numbers go in as one numpy array (reports can list thousands of boxes)
            numbers = (np.asarray(list(values), dtype=np.int32) if kind == "int" else
                       np.asarray([np.nan if v is None else v for v in values], dtype=np.float64))
            array = numpy_support.numpy_to_vtk(numbers, deep=True)
        array.SetName(name)
        tableNode.AddColumn(array)

    def _fillSummary(self, node: Any, report: dict[str, Any]) -> None:
        classes = report.get("classes", [])
        case = report.get("case", {})
        rows = [[c["name"], c["label"], c.get("dice_est"), c.get("iou_est"), c.get("arvd_est"), c.get("volume_mm3"),
                 c.get("volume_est_mm3")] for c in classes]
        rows.append([f"Case (QI = {case.get('qi', float('nan')):.3f})", 0, case.get("dice_est"), case.get("iou_est"),
                     None, sum(c.get("volume_mm3") or 0.0 for c in classes),
                     sum(c.get("volume_est_mm3") or 0.0 for c in classes)])
        kinds = ("str", "int", "float", "float", "float", "float", "float")
        with slicer.util.NodeModify(node):
            for column, (name, kind) in enumerate(zip(SUMMARY_COLUMNS, kinds)):
                self.addTableColumn(node, name, [row[column] for row in rows], kind)
            node.SetAttribute("SegQC.CaseDiceEst", str(case.get("dice_est")))
            node.SetAttribute("SegQC.QI", str(case.get("qi")))
            node.SetAttribute("SegQC.InDomain", str((report.get("domain") or {}).get("in_domain")))

    def _fillSlices(self, node: Any, report: dict[str, Any]) -> None:
        entries = report.get("slices", [])
        nameOf = {str(c["label"]): c["name"] for c in report.get("classes", [])}
        with slicer.util.NodeModify(node):
            self.addTableColumn(node, "Rank", range(1, len(entries) + 1), "int")
            self.addTableColumn(node, "Slice", [e["index"] for e in entries], "int")
            self.addTableColumn(node, "Error score", [e["error_score"] for e in entries], "float")
            for key, name in nameOf.items():
                values = [e.get("dice_est", {}).get(key) for e in entries]
                self.addTableColumn(node, f"Dice est {name}", values, "float")
            self.addTableColumn(node, STATUS_COLUMN, [ItemStatus.PENDING.value] * len(entries), "str")
            node.SetAttribute("SegQC.SliceAxis", str(report.get("slice_axis", 0)))

    def _fillBoxes(self, node: Any, report: dict[str, Any]) -> None:
        boxes = report.get("boxes", [])
        nameOf = {c["label"]: c["name"] for c in report.get("classes", [])}
        columns: list[tuple[str, list[Any], str]] = [
            ("Rank", list(range(1, len(boxes) + 1)), "int"),
            ("Class", [nameOf.get(b["label"], str(b["label"])) for b in boxes], "str"),
            ("Label", [b["label"] for b in boxes], "int"),
            ("Slice", [b["slice"] for b in boxes], "int"),
            ("Score", [b["score"] for b in boxes], "float"),
            ("Max prob", [b.get("max_prob", 0.0) for b in boxes], "float"),
            ("Area (mm2)", [b["area_mm2"] for b in boxes], "float"),
        ]
        for corner, prefix in ((0, ("z0", "y0", "x0")), (1, ("z1", "y1", "x1"))):
            for axis, name in enumerate(prefix):
                columns.append((name, [b["bbox_zyx"][corner][axis] for b in boxes], "int"))
        with slicer.util.NodeModify(node):
            for name, values, kind in columns:
                self.addTableColumn(node, name, values, kind)
            self.addTableColumn(node, STATUS_COLUMN, [ItemStatus.PENDING.value] * len(boxes), "str")

    def _roiNode(self, sourceID: str, created: list[Any]) -> Any:
        node = self._getOrCreate("vtkMRMLMarkupsROINode", NodeRole.ROI, sourceID, "SegQC box", created)
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        node.SetLocked(True)  # a reviewer drags the ROI by accident far more often than on purpose
        display = node.GetDisplayNode()
        display.SetFillVisibility(False)  # the ROI frames the overlay: a fill would hide what it points at
        display.SetHandlesInteractive(False)
        display.SetPropertiesLabelVisibility(False)
        display.SetPointLabelsVisibility(False)
        return node

    @staticmethod
    def _hideRoiCentre(roi: Any) -> None:
        """An ROI's one control point is its centre, drawn as a disc that would cover the error it frames."""
        for index in range(roi.GetNumberOfControlPoints()):
            roi.SetNthControlPointVisibility(index, False)

    def _snapshotNode(self, prepared: PreparedInputs, created: list[Any], keep: bool = False) -> Any:
        node = self._getOrCreate("vtkMRMLLabelMapVolumeNode", NodeRole.SNAPSHOT, prepared.segmentationNodeID,
                                 "SegQC snapshot", created)
        if keep and node not in created and node.GetImageData() is not None:
            if not self.volumeGeometry(node).differences(prepared.case.geometry):
                return node
        node.SetHideFromEditors(True)
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(prepared.case.geometry.ijk_to_ras_matrix()))
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(prepared.case.segmentation.array))
        return node

    def _reportNode(self, prepared: PreparedInputs, report: dict[str, Any], created: list[Any]) -> Any:
        node = self._getOrCreate("vtkMRMLTextNode", NodeRole.REPORT, prepared.segmentationNodeID, "SegQC report",
                                 created)
        node.SetText(json.dumps({
            "report": report,
            "mapping": prepared.mapping,
            "classNames": {str(k): v for k, v in prepared.classNames.items()},
            "imageNodeIDs": prepared.imageNodeIDs,
            "segmentationNodeID": prepared.segmentationNodeID,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "epoch": time.time(),
        }))
        return node

    def removeNode(self, node: Any) -> None:
        """Remove a node with its display and storage nodes.

        The node goes first: a volume shown in a slice view whose display node disappears gets a new default
        one from the slice layer logic, which would then be left behind.
        """
        if node is None or self.scene.GetNodeByID(node.GetID()) is None:
            return
        attached = []
        if hasattr(node, "GetNumberOfDisplayNodes"):
            attached += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if hasattr(node, "GetStorageNode"):
            attached.append(node.GetStorageNode())
        self.scene.RemoveNode(node)
        for other in attached:
            if other is not None and self.scene.GetNodeByID(other.GetID()) is not None:
                self.scene.RemoveNode(other)

    def removeResults(self, sourceID: Optional[str] = None) -> None:
        """Remove every SegQC node of a reviewed segmentation (the segmentation itself is untouched)."""
        sourceID = self._sourceID(sourceID)
        for role in NodeRole:
            if role in (NodeRole.COLORS, NodeRole.PREVIEW_COLORS):
                continue
            for node in self.findNodes(role, sourceID):
                self.removeNode(node)

    # ------------------------------------------------------------------------------------------
    # Display
    # ------------------------------------------------------------------------------------------
    def showOverlay(self, label: int, opacity: float = DEFAULT_OVERLAY_OPACITY,
                    threshold: float = DEFAULT_OVERLAY_THRESHOLD, sourceID: Optional[str] = None,
                    backgroundNodeID: Optional[str] = None) -> Any:
        """Show one class's error probability as the foreground of every slice view."""
        sourceID = self._sourceID(sourceID)
        overlay = next((n for n in self.findNodes(NodeRole.OVERLAY, sourceID)
                        if n.GetAttribute(LABEL_ATTRIBUTE) == str(int(label))), None)
        if overlay is None:
            raise InputError(f"No error overlay for class {label}: run QC first")
        display = overlay.GetDisplayNode()
        display.SetThreshold(float(threshold), 1.0)
        if backgroundNodeID is None:
            imageIDs = self.reportData(sourceID).get("imageNodeIDs", [])
            backgroundNodeID = imageIDs[0] if imageIDs else None
        for composite in self.nodesByClass("vtkMRMLSliceCompositeNode"):
            if backgroundNodeID and not composite.GetBackgroundVolumeID():
                composite.SetBackgroundVolumeID(backgroundNodeID)
            composite.SetForegroundVolumeID(overlay.GetID())
            composite.SetForegroundOpacity(float(opacity))
        return overlay

    def shownOverlaySettings(self, sourceID: Optional[str] = None) -> Optional[OverlaySettings]:
        """The overlay of a reviewed segmentation that the slice views show now, with its opacity and threshold."""
        sourceID = sourceID or self.reviewedSegmentationID()
        overlays = {node.GetID(): node for node in self.findNodes(NodeRole.OVERLAY, sourceID)} if sourceID else {}
        for composite in self.nodesByClass("vtkMRMLSliceCompositeNode"):
            node = overlays.get(composite.GetForegroundVolumeID())
            if node is not None and node.GetDisplayNode() is not None:
                return OverlaySettings(int(node.GetAttribute(LABEL_ATTRIBUTE)), float(composite.GetForegroundOpacity()),
                                       float(node.GetDisplayNode().GetLowerThreshold()))
        return None

    def nodesByClass(self, className: str) -> list[Any]:
        count = self.scene.GetNumberOfNodesByClass(className)
        return [self.scene.GetNthNodeByClass(i, className) for i in range(count)]

    # ------------------------------------------------------------------------------------------
    # Navigation
    # ------------------------------------------------------------------------------------------
    def itemCount(self, kind: ItemKind, sourceID: Optional[str] = None) -> int:
        node = self.findNode(NodeRole.BOXES if kind is ItemKind.BOX else NodeRole.SLICES, self._sourceID(sourceID))
        return node.GetNumberOfRows() if node else 0

    def _table(self, kind: ItemKind, sourceID: Optional[str]) -> Any:
        node = self.findNode(NodeRole.BOXES if kind is ItemKind.BOX else NodeRole.SLICES, self._sourceID(sourceID))
        if node is None:
            raise InputError("No QC results in the scene: run QC first")
        return node

    def _checkIndex(self, tableNode: Any, index: int, what: str) -> int:
        count = tableNode.GetNumberOfRows()
        if not 0 <= int(index) < count:
            raise InputError(f"No {what} {index + 1}: the list has {count}")
        return int(index)

    def _referenceGeometry(self, sourceID: str) -> Geometry:
        """Grid of the QC run, from a result volume node's IJK-to-RAS matrix (the snapshot shares the image grid)."""
        node = self.findNode(NodeRole.SNAPSHOT, sourceID) or self.findNode(NodeRole.OVERLAY, sourceID)
        if node is None:
            raise InputError("No QC results in the scene: run QC first")
        return self.volumeGeometry(node)

    def boxGeometry(self, index: int, sourceID: Optional[str] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(centre RAS, size along the volume's i, j, k axes in mm, 3x3 RAS directions of those axes) of a box."""
        sourceID = self._sourceID(sourceID)
        table = self._table(ItemKind.BOX, sourceID)
        row = self._checkIndex(table, index, "box")
        values = {name: int(table.GetCellText(row, table.GetColumnIndex(name)))
                  for name in ("z0", "y0", "x0", "z1", "y1", "x1")}
        start = np.array([values["z0"], values["y0"], values["x0"]], dtype=float)
        stop = np.array([values["z1"], values["y1"], values["x1"]], dtype=float)
        geometry = self._referenceGeometry(sourceID)
        centre = geometry.index_zyx_to_ras((start + stop - 1.0) / 2.0)
        size_xyz = ((stop - start) * np.asarray(geometry.spacing_zyx_mm))[::-1]
        axes = geometry.ijk_to_ras_matrix()[:3, :3] / np.asarray(geometry.spacing_xyz_mm)
        return centre, size_xyz, axes

    def jumpToPoint(self, pointRAS: Sequence[float]) -> None:
        """Centre every slice view of the scene on a RAS point."""
        for sliceNode in self.nodesByClass("vtkMRMLSliceNode"):
            sliceNode.JumpSliceByCentering(float(pointRAS[0]), float(pointRAS[1]), float(pointRAS[2]))

    def jumpToBox(self, index: int, sourceID: Optional[str] = None) -> np.ndarray:
        """Move every slice view to a ranked box and show it as the ROI; returns the box centre (RAS)."""
        sourceID = self._sourceID(sourceID)
        centre, size_xyz, axes = self.boxGeometry(index, sourceID)
        roi = self.findNode(NodeRole.ROI, sourceID)
        if roi is not None:
            # The ROI's axes follow the volume's i, j, k axes so that oblique volumes get a tight box.
            objectToNode = np.eye(4)
            objectToNode[:3, :3] = axes
            with slicer.util.NodeModify(roi):
                roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(objectToNode))
                roi.SetCenter(*[float(v) for v in centre])
                roi.SetSize(*[float(v) for v in size_xyz])
                self._hideRoiCentre(roi)
            roi.SetDisplayVisibility(True)
        self.jumpToPoint(centre)
        return centre

    def slicePoint(self, index: int, sourceID: Optional[str] = None) -> np.ndarray:
        """RAS point of a ranked slice: its plane, centred on its top box (or on the volume's centre)."""
        sourceID = self._sourceID(sourceID)
        table = self._table(ItemKind.SLICE, sourceID)
        row = self._checkIndex(table, index, "slice")
        sliceIndex = int(table.GetCellText(row, table.GetColumnIndex("Slice")))
        axis = int(table.GetAttribute("SegQC.SliceAxis") or 0)
        geometry = self._referenceGeometry(sourceID)
        point = (np.asarray(geometry.shape_zyx, dtype=float) - 1.0) / 2.0
        boxes = self._table(ItemKind.BOX, sourceID)
        sliceColumn, zyx = boxes.GetColumnIndex("Slice"), ("z", "y", "x")
        for boxRow in range(boxes.GetNumberOfRows()):  # ranked: the first box on this slice is its worst
            if int(boxes.GetCellText(boxRow, sliceColumn)) == sliceIndex:
                starts = np.array([int(boxes.GetCellText(boxRow, boxes.GetColumnIndex(a + "0"))) for a in zyx])
                stops = np.array([int(boxes.GetCellText(boxRow, boxes.GetColumnIndex(a + "1"))) for a in zyx])
                point = (starts + stops - 1.0) / 2.0
                break
        point[axis] = sliceIndex
        return geometry.index_zyx_to_ras(point)

    def jumpToSlice(self, index: int, sourceID: Optional[str] = None) -> np.ndarray:
        """Move every slice view to a ranked slice; returns the RAS point jumped to."""
        point = self.slicePoint(index, sourceID)
        self.jumpToPoint(point)
        return point

    def setItemStatus(self, kind: ItemKind, index: int, status: ItemStatus, sourceID: Optional[str] = None) -> None:
        kind, status = ItemKind(kind), ItemStatus(status)
        table = self._table(kind, sourceID)
        row = self._checkIndex(table, index, kind.value)
        table.SetCellText(row, table.GetColumnIndex(STATUS_COLUMN), status.value)

    def itemStatuses(self, kind: ItemKind, sourceID: Optional[str] = None) -> dict[int, ItemStatus]:
        """The items of a ranked list that the reviewer marked (0-based rank -> status)."""
        table = self._table(ItemKind(kind), sourceID)
        column = table.GetColumnIndex(STATUS_COLUMN)
        marked = {row: ItemStatus(table.GetCellText(row, column)) for row in range(table.GetNumberOfRows())}
        return {row: status for row, status in marked.items() if status is not ItemStatus.PENDING}

    def reviewState(self, sourceID: Optional[str] = None) -> dict[str, dict[str, str]]:
        """The reviewer's marks on boxes and slices, as the case queue's status file keeps them."""
        return {kind.value: {str(row): status.value for row, status in self.itemStatuses(kind, sourceID).items()}
                for kind in ItemKind}

    def restoreReviewState(self, items: dict[str, dict[str, str]], sourceID: Optional[str] = None) -> None:
        """Put marks saved by :meth:`reviewState` back into the tables (marks beyond a list's end are dropped)."""
        for kind in ItemKind:
            count = self.itemCount(kind, sourceID)
            for row, status in (items.get(kind.value) or {}).items():
                if 0 <= int(row) < count:
                    self.setItemStatus(kind, int(row), ItemStatus(status), sourceID)

    def segmentationChangedSinceQC(self, sourceID: Optional[str] = None) -> bool:
        """Whether the reviewed segmentation differs from the snapshot taken when QC ran (unrecorded edits)."""
        sourceID = self._sourceID(sourceID)
        data = self.reportData(sourceID)
        segmentationNode = self.scene.GetNodeByID(sourceID)
        snapshot = self.findNode(NodeRole.SNAPSHOT, sourceID)
        images = [self.scene.GetNodeByID(i) for i in data.get("imageNodeIDs", [])]
        if segmentationNode is None or snapshot is None or not images or images[0] is None:
            return False
        mapping = {str(k): int(v) for k, v in data["mapping"].items()}
        if any(segmentationNode.GetSegmentation().GetSegment(s) is None for s in mapping):
            return True
        current = self.exportLabelArray(segmentationNode, mapping, images[0])
        return not np.array_equal(current, slicer.util.arrayFromVolume(snapshot))

    def itemStatus(self, kind: ItemKind, index: int, sourceID: Optional[str] = None) -> ItemStatus:
        table = self._table(ItemKind(kind), sourceID)
        row = self._checkIndex(table, index, ItemKind(kind).value)
        return ItemStatus(table.GetCellText(row, table.GetColumnIndex(STATUS_COLUMN)))

    def boxLabel(self, index: int, sourceID: Optional[str] = None) -> int:
        table = self._table(ItemKind.BOX, sourceID)
        return int(table.GetCellText(self._checkIndex(table, index, "box"), table.GetColumnIndex("Label")))

    def segmentIdForLabel(self, label: int, sourceID: Optional[str] = None) -> Optional[str]:
        """The segment that was mapped to a class (for opening the Segment Editor on it)."""
        for segmentId, mapped in self.reportData(sourceID).get("mapping", {}).items():
            if int(mapped) == int(label):
                return segmentId
        return None

    # ------------------------------------------------------------------------------------------
    # Suggested edits (segqc run --suggest): preview, accept, reject, undo
    # ------------------------------------------------------------------------------------------
    def _suggestionNodes(self, sourceID: str, suggestion: Any, geometry: Geometry, created: list[Any]) -> None:
        """Keep a run's suggestion in the scene: the suggested segmentation and one edit-id map per class."""
        if suggestion.geometry.differences(geometry):
            raise GeometryMismatchError("The suggestion is not on the grid QC ran on: "
                                        + "; ".join(suggestion.geometry.differences(geometry)))
        arrays = [(NodeRole.SUGGESTION, None, "SegQC suggested segmentation", suggestion.segmentation)]
        arrays += [(NodeRole.EDITS, int(label), f"SegQC suggested edits {label}", edits)
                   for label, edits in sorted(suggestion.edit_maps.items())]
        wanted = {str(label) for _, label, _, _ in arrays[1:]}
        for node in self.findNodes(NodeRole.EDITS, sourceID):  # classes of an earlier run that this one lacks
            if node.GetAttribute(LABEL_ATTRIBUTE) not in wanted:
                self.removeNode(node)
        for role, label, name, array in arrays:
            node = self._getOrCreate("vtkMRMLLabelMapVolumeNode", role, sourceID, name, created, label)
            node.SetHideFromEditors(True)
            node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(geometry.ijk_to_ras_matrix()))
            slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))

    def suggestion(self, sourceID: Optional[str] = None) -> Any:
        """The suggestion of the QC run (a :class:`SegQCLib.quality.suggestion.Suggestion`), None without one.

        Built from the scene (hidden label maps and the report), so a saved and reopened scene keeps it.
        """
        from SegQCLib.quality.report import SuggestionSummary
        from SegQCLib.quality.suggestion import Suggestion

        sourceID = self._sourceID(sourceID)
        summary = self.reportData(sourceID).get("report", {}).get("suggestion")
        segmentationNode = self.findNode(NodeRole.SUGGESTION, sourceID)
        if not summary or segmentationNode is None or segmentationNode.GetImageData() is None:
            return None
        editMaps = {int(node.GetAttribute(LABEL_ATTRIBUTE)): np.array(slicer.util.arrayFromVolume(node))
                    for node in self.findNodes(NodeRole.EDITS, sourceID)}
        return Suggestion(np.array(slicer.util.arrayFromVolume(segmentationNode)), editMaps,
                          SuggestionSummary.from_dict(summary), self.volumeGeometry(segmentationNode))

    def boxEdit(self, index: int, sourceID: Optional[str] = None) -> Any:
        """The suggested edit (a :class:`SegQCLib.quality.report.SuggestedEdit`) of a ranked box, None when the run
        made no suggestion or the box has no edit (its class's suggestion changes nothing there)."""
        sourceID = self._sourceID(sourceID)
        row = self._checkIndex(self._table(ItemKind.BOX, sourceID), index, "box")
        boxes = self.reportData(sourceID).get("report", {}).get("boxes", [])
        editId = boxes[row].get("edit_id") if row < len(boxes) else None
        suggestion = self.suggestion(sourceID) if editId else None
        return suggestion.edit(int(editId)) if suggestion is not None else None

    def boxSuggestionText(self, index: int, sourceID: Optional[str] = None) -> str:
        """One line about a box's suggested edit for the module panel."""
        try:
            edit = self.boxEdit(index, sourceID)
        except InputError:
            return ""
        if edit is None:
            return "No suggested edit for this box."
        offered = "" if edit.offered else " (not offered: expected gain below the model's threshold)"
        return (f"Suggested edit {edit.id}: +{edit.added_voxels} / -{edit.removed_voxels} voxels "
                f"({edit.volume_mm3:.0f} mm3), expected Dice {edit.dice_est_before:.3f} -> "
                f"{edit.dice_est_after:.3f}{offered}")

    def _boxesOfEdit(self, editId: int, sourceID: str) -> list[int]:
        """Rows of the boxes that frame one edit (an error region seen on several slices has a box on each)."""
        boxes = self.reportData(sourceID).get("report", {}).get("boxes", [])
        count = self._table(ItemKind.BOX, sourceID).GetNumberOfRows()
        return [row for row, box in enumerate(boxes[:count]) if box.get("edit_id") == editId]

    def _editOfBox(self, index: int, sourceID: str, force: bool) -> tuple[Any, Any, int]:
        suggestion = self.suggestion(sourceID)
        if suggestion is None:
            raise InputError("This QC run made no suggested edits: run QC again (the module asks for them)")
        edit = self.boxEdit(index, sourceID)
        if edit is None:
            raise InputError(f"Box {index + 1} has no suggested edit: fix it by hand in the Segment Editor")
        if not edit.offered and not force:
            raise InputError(f"The suggested edit of box {index + 1} is not offered: its expected Dice gain "
                             f"{edit.gain_dice_est:+.4f} is below the model's threshold")
        return suggestion, edit, int(index)

    def _reviewInputs(self, sourceID: str) -> tuple[Any, dict[str, int], Any]:
        """(segmentation node, segment -> class mapping, first image node) of a QC run, checked to be there."""
        data = self.reportData(sourceID)
        segmentationNode = self.scene.GetNodeByID(sourceID)
        images = [self.scene.GetNodeByID(i) for i in data.get("imageNodeIDs", [])]
        if segmentationNode is None or not images or images[0] is None:
            raise InputError("The segmentation or image QC ran on is no longer in the scene")
        mapping = {str(k): int(v) for k, v in data["mapping"].items()}
        missing = [s for s in mapping if segmentationNode.GetSegmentation().GetSegment(s) is None]
        if missing:
            raise InputError(f"Segments {missing} were deleted since QC ran; re-run QC")
        return segmentationNode, mapping, images[0]

    def currentLabels(self, sourceID: Optional[str] = None) -> np.ndarray:
        """The reviewed segmentation now, as a label array of the model's classes on the QC grid."""
        segmentationNode, mapping, image = self._reviewInputs(self._sourceID(sourceID))
        return self.exportLabelArray(segmentationNode, mapping, image)

    def previewSuggestion(self, index: int, sourceID: Optional[str] = None, force: bool = False) -> Any:
        """Show what accepting a box's suggested edit would change, in every slice view's label layer.

        Only that edit, on the segmentation as it is now: voxels it adds to the box's class (cyan), removes from it
        (magenta) and, rarely, relabels between other classes (white).  Returns the
        :class:`SegQCLib.quality.edit_actions.EditPreview`.  Not-offered edits only with ``force``.
        """
        sourceID = self._sourceID(sourceID)
        suggestion, edit, _ = self._editOfBox(index, sourceID, force)
        preview = suggestion.preview(self.currentLabels(sourceID), edit.id)
        values = np.zeros(suggestion.segmentation.shape, dtype=np.uint8)
        crop = values[preview.crop]
        crop[preview.other] = PREVIEW_OTHER
        crop[preview.added] = PREVIEW_ADDED
        crop[preview.removed] = PREVIEW_REMOVED
        node = self._getOrCreate("vtkMRMLLabelMapVolumeNode", NodeRole.PREVIEW, sourceID, "SegQC suggestion preview",
                                 [])
        node.SetHideFromEditors(True)
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(suggestion.geometry.ijk_to_ras_matrix()))
        slicer.util.updateVolumeFromArray(node, values)
        node.SetAttribute("SegQC.EditId", str(edit.id))
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        node.GetDisplayNode().SetAndObserveColorNodeID(self._previewColorNode().GetID())
        for composite in self.nodesByClass("vtkMRMLSliceCompositeNode"):
            composite.SetLabelVolumeID(node.GetID())
            composite.SetLabelOpacity(PREVIEW_OPACITY)
        return preview

    def previewedEditId(self, sourceID: Optional[str] = None) -> Optional[int]:
        """The edit whose preview the slice views show now (None when none is shown)."""
        node = self.findNode(NodeRole.PREVIEW, self._sourceID(sourceID))
        if node is None:
            return None
        shown = any(c.GetLabelVolumeID() == node.GetID() for c in self.nodesByClass("vtkMRMLSliceCompositeNode"))
        return int(node.GetAttribute("SegQC.EditId")) if shown and node.GetAttribute("SegQC.EditId") else None

    def clearPreview(self, sourceID: Optional[str] = None) -> None:
        """Take the preview out of the slice views and the scene."""
        sourceID = sourceID or self.reviewedSegmentationID()
        for node in self.findNodes(NodeRole.PREVIEW, sourceID) if sourceID else []:
            for composite in self.nodesByClass("vtkMRMLSliceCompositeNode"):
                if composite.GetLabelVolumeID() == node.GetID():
                    composite.SetLabelVolumeID(None)
            self.removeNode(node)

    def _previewColorNode(self) -> Any:
        for node in self.findNodes(NodeRole.PREVIEW_COLORS):
            return node
        node = self.scene.AddNewNodeByClass("vtkMRMLColorTableNode", "SegQC suggestion preview colours")
        node.SetAttribute(ROLE_ATTRIBUTE, NodeRole.PREVIEW_COLORS.value)
        node.SetTypeToUser()
        node.SetNumberOfColors(max(PREVIEW_COLORS) + 1)
        node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
        for value, (name, rgb) in PREVIEW_COLORS.items():
            node.SetColor(value, name, *rgb, 1.0)
        return node

    def _segmentMasks(self, segmentationNode: Any, segmentIds: Sequence[str], image: Any) -> dict[str, np.ndarray]:
        return {sid: self.exportLabelArray(segmentationNode, {sid: 1}, image) != 0 for sid in segmentIds}

    def _writeSegmentMask(self, segmentationNode: Any, segmentId: str, mask: np.ndarray, image: Any) -> None:
        """Replace a segment's voxels by a mask on the image's grid (what the Segment Editor's undo would keep)."""
        colorTablesBefore = {node.GetID() for node in self.nodesByClass("vtkMRMLColorTableNode")}
        labelmapNode = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__SegQC_import__")
        labelmapNode.SetHideFromEditors(True)
        try:
            matrix = vtk.vtkMatrix4x4()
            image.GetIJKToRASMatrix(matrix)
            labelmapNode.SetIJKToRASMatrix(matrix)
            slicer.util.updateVolumeFromArray(labelmapNode, np.ascontiguousarray(mask, dtype=np.uint8))
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segmentId)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                    labelmapNode, segmentationNode, ids):
                raise InputError(f"Cannot write segment '{segmentId}' of {segmentationNode.GetName()}")
        finally:
            self.removeNode(labelmapNode)
            for node in self.nodesByClass("vtkMRMLColorTableNode"):
                if node.GetID() not in colorTablesBefore:
                    self.scene.RemoveNode(node)

    def acceptSuggestion(self, index: int, sourceID: Optional[str] = None,
                         force: bool = False) -> AcceptedSuggestion:
        """Apply a box's suggested edit to the reviewed segmentation: its voxels get the suggested labels.

        Only the segments whose voxels change are written (the box's class, and on a label swap the other class);
        their masks before are kept so :meth:`undoSuggestion` restores them exactly.  The box becomes
        *fixed (suggestion)*, and so does every other box framing the same edit (its region on other slices).
        Not-offered edits only with ``force``.
        """
        sourceID = self._sourceID(sourceID)
        suggestion, edit, row = self._editOfBox(index, sourceID, force)
        if self.itemStatus(ItemKind.BOX, row, sourceID) is ItemStatus.FIXED_SUGGESTION:
            raise InputError(f"The suggested edit of box {row + 1} is already accepted")
        segmentationNode, mapping, image = self._reviewInputs(sourceID)
        labels = self.exportLabelArray(segmentationNode, mapping, image)
        applied = suggestion.accept(labels, edit.id)
        changedLabels = {int(v) for v in np.unique(np.concatenate([applied.previous, applied.written]))} - {0}
        segmentOf = {label: segmentId for segmentId, label in mapping.items() if label}
        touched = [segmentOf[label] for label in sorted(changedLabels) if label in segmentOf]
        before = self._segmentMasks(segmentationNode, touched, image)
        after = {}
        for segmentId in touched:
            label = mapping[segmentId]
            mask = before[segmentId].copy().reshape(-1)
            concerned = (applied.previous == label) | (applied.written == label)
            mask[applied.indices[concerned]] = applied.written[concerned] == label
            after[segmentId] = mask.reshape(before[segmentId].shape)
        # Segments that lose voxels first, so a label swap never makes two segments overlap on the way.
        for segmentId in sorted(touched, key=lambda s: int(after[s].sum()) - int(before[s].sum())):
            self._writeSegmentMask(segmentationNode, segmentId, after[segmentId], image)
        rows = self._boxesOfEdit(int(edit.id), sourceID)
        entry = AcceptedSuggestion(sourceID, row, int(edit.id), applied.voxels,
                                   {r: self.itemStatus(ItemKind.BOX, r, sourceID) for r in rows}, before, after)
        self._accepted.append(entry)
        for r in rows:  # one accept fixes the whole error region, so every box framing it
            self.setItemStatus(ItemKind.BOX, r, ItemStatus.FIXED_SUGGESTION, sourceID)
        self.clearPreview(sourceID)
        logger.info("SegQC: suggested edit %d of box %d accepted (%d voxels)", edit.id, row + 1, applied.voxels)
        return entry

    def rejectSuggestion(self, index: int, sourceID: Optional[str] = None) -> None:
        """Refuse a box's suggested edit: the segmentation is left as it is and the box (with every other box of
        the same edit) becomes *rejected*."""
        sourceID = self._sourceID(sourceID)
        suggestion, edit, row = self._editOfBox(index, sourceID, force=True)
        if self.itemStatus(ItemKind.BOX, row, sourceID) is ItemStatus.FIXED_SUGGESTION:
            raise InputError(f"The suggested edit of box {row + 1} is accepted: undo it first")
        for r in self._boxesOfEdit(int(edit.id), sourceID):
            self.setItemStatus(ItemKind.BOX, r, ItemStatus.REJECTED, sourceID)
        self.clearPreview(sourceID)

    def canUndoSuggestion(self, sourceID: Optional[str] = None) -> bool:
        sourceID = sourceID or self.reviewedSegmentationID()
        return any(entry.sourceID == sourceID for entry in self._accepted)

    def undoSuggestion(self, sourceID: Optional[str] = None) -> AcceptedSuggestion:
        """Undo the latest accepted suggestion: its segments get back their voxels from before, bit for bit, and
        boxes of its edit their earlier statuses.

        Refused (InputError, nothing changed) when those segments were edited since the accept: restoring them
        would throw the hand edit away (Slicer's own undo, Ctrl+Z, can still go back step by step).
        """
        sourceID = self._sourceID(sourceID)
        entries = [entry for entry in self._accepted if entry.sourceID == sourceID]
        if not entries:
            raise InputError("No accepted suggestion to undo")
        entry = entries[-1]
        segmentationNode, _, image = self._reviewInputs(sourceID)
        now = self._segmentMasks(segmentationNode, list(entry.after), image)
        edited = [segmentationNode.GetSegmentation().GetSegment(s).GetName() for s in entry.after
                  if not np.array_equal(now[s], entry.after[s])]
        if edited:
            raise InputError(f"Segment(s) {edited} were edited after the suggestion was accepted: undo those edits "
                             "first (Ctrl+Z), or fix the box by hand")
        for segmentId in sorted(entry.before, key=lambda s: int(entry.before[s].sum()) - int(entry.after[s].sum())):
            self._writeSegmentMask(segmentationNode, segmentId, entry.before[segmentId], image)
        self._accepted.remove(entry)
        for row, status in entry.previousStatuses.items():
            self.setItemStatus(ItemKind.BOX, row, status, sourceID)
        logger.info("SegQC: suggested edit %d of box %d undone", entry.editId, entry.row + 1)
        return entry

    # ------------------------------------------------------------------------------------------
    # Corrections
    # ------------------------------------------------------------------------------------------
    def recordCorrection(self, outputDir: str, sourceID: Optional[str] = None, caseId: Optional[str] = None,
                         reviewer: Optional[str] = None) -> Path:
        """Store image(s), the segmentation as it was at QC time, the corrected one and |T - M| per class.

        The segmentation is compared with the snapshot taken when QC ran (on the image grid, same mapping)
        and the record goes into the corrections store at ``outputDir`` (crash-safe, versioned); returns
        the record's folder.
        """
        from SegQCLib.corrections.store import CorrectionStore

        sourceID = self._sourceID(sourceID)
        data = self.reportData(sourceID)
        segmentationNode = self.scene.GetNodeByID(sourceID)
        snapshot = self.findNode(NodeRole.SNAPSHOT, sourceID)
        imageNodes = [self.scene.GetNodeByID(i) for i in data.get("imageNodeIDs", [])]
        if segmentationNode is None or snapshot is None or not imageNodes or any(n is None for n in imageNodes):
            raise InputError("The segmentation or image(s) QC ran on are no longer in the scene: cannot record")
        geometry = self.volumeGeometry(snapshot)
        for node in imageNodes:
            if self.volumeGeometry(node).differences(geometry):
                raise GeometryMismatchError(f"Image '{node.GetName()}' changed grid since QC ran: re-run QC")
        mapping = {str(k): int(v) for k, v in data["mapping"].items()}
        missing = [s for s in mapping if segmentationNode.GetSegmentation().GetSegment(s) is None]
        if missing:
            raise InputError(f"Segments {missing} were deleted since QC ran; re-run QC to record a correction")
        classNames = {int(k): v for k, v in data.get("classNames", {}).items()}
        names = {label: classNames.get(label, f"label_{label}") for label in set(mapping.values()) if label}
        styles = self.segmentStyles(segmentationNode, mapping)
        original = LabelMap(np.array(slicer.util.arrayFromVolume(snapshot)), geometry, names, styles=styles)
        corrected = LabelMap(self.exportLabelArray(segmentationNode, mapping, imageNodes[0]), geometry, names,
                             styles=styles)
        images = [Volume(np.array(slicer.util.arrayFromVolume(n), dtype=np.float32), geometry, n.GetName())
                  for n in imageNodes]
        report = data.get("report", {})
        record = CorrectionStore(outputDir).add(
            caseId or imageNodes[0].GetName(), images, original, corrected, reviewer=reviewer,
            qc_report=report, model_info=report.get("model"),
            reviewed_boxes=self.reviewedBoxes(sourceID, original.array, corrected.array),
            review_duration_s=max(0.0, time.time() - float(data.get("epoch", time.time()))),
            rating=self.caseRating(sourceID),
        )
        logger.info("Correction recorded as %s (%d voxels changed)", record.record_id,
                    int(np.count_nonzero(original.array != corrected.array)))
        return Path(record.path)

    def setCaseRating(self, rating: Any, sourceID: Optional[str] = None) -> None:
        """The reviewer's verdict on the case (a CaseRating, its value, or None to clear), kept in the scene."""
        from SegQCLib.review.rating import parse_rating

        node = self.findNode(NodeRole.REPORT, self._sourceID(sourceID))
        if node is None:
            raise InputError("No QC results in the scene: run QC first")
        parsed = parse_rating(rating)
        node.SetAttribute(RATING_ATTRIBUTE, parsed.value if parsed is not None else "")

    def caseRating(self, sourceID: Optional[str] = None) -> Optional[str]:
        """The case's rating value (``"minor_fixes"``), or None when the reviewer gave none."""
        node = self.findNode(NodeRole.REPORT, self._sourceID(sourceID))
        return (node.GetAttribute(RATING_ATTRIBUTE) or None) if node is not None else None

    def reviewedBoxes(self, sourceID: Optional[str] = None, original: Optional[np.ndarray] = None,
                      corrected: Optional[np.ndarray] = None) -> list[dict[str, Any]]:
        """Boxes of the report that the reviewer marked (with their status), for the correction record.

        With a suggestion, each marked box also says what happened to its suggested edit (``decision``, see
        :mod:`SegQCLib.corrections.box_review`): *fixed (suggestion)* is ``accepted`` (``edited`` when the edit's
        voxels were changed by hand afterwards), *rejected* is ``rejected``, *fixed* (by hand) is ``edited``, and
        *reviewed* records no decision; and, given the label maps ``original`` (at QC time) and ``corrected``,
        where the edit's voxels ended up (``edit_outcome``).
        """
        from SegQCLib.corrections.box_review import BoxReview, SuggestionDecision, edit_outcome

        sourceID = self._sourceID(sourceID)
        boxes = self.reportData(sourceID).get("report", {}).get("boxes", [])
        table = self._table(ItemKind.BOX, sourceID)
        statusColumn = table.GetColumnIndex(STATUS_COLUMN)
        suggestion = self.suggestion(sourceID)
        decisions = {ItemStatus.FIXED_SUGGESTION: SuggestionDecision.ACCEPTED,
                     ItemStatus.REJECTED: SuggestionDecision.REJECTED, ItemStatus.FIXED: SuggestionDecision.EDITED}
        marked = []
        for row, box in enumerate(boxes[:table.GetNumberOfRows()]):
            status = ItemStatus(table.GetCellText(row, statusColumn))
            if status is ItemStatus.PENDING:
                continue
            entry = {**box, "rank": row + 1, "status": status.value}
            if suggestion is not None:
                review = BoxReview.from_dict(entry)
                review.decision = decisions.get(status)
                if box.get("edit_id") and original is not None and corrected is not None:
                    review.edit_outcome = edit_outcome(original, corrected, suggestion.segmentation,
                                                       suggestion.full_mask(int(box["edit_id"])))
                    outcome = review.edit_outcome
                    if review.decision is SuggestionDecision.ACCEPTED and outcome.as_suggested < outcome.voxels:
                        review.decision = SuggestionDecision.EDITED  # accepted, then changed by hand
                entry = review.to_dict()
            marked.append(entry)
        return marked
