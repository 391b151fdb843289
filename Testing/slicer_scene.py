"""Scenes built like 3D Slicer builds them, under ``slicer-core`` (shared by the Slicer module's tests).

``make_scene`` gives a scene with Slicer's application logic and the module logics the SegQC logic uses
(colours registered as "Colors", volumes, segmentations, markups) and the Red, Yellow and Green slice
nodes; ``offscreen_views.OffscreenSliceViews`` renders such a scene.  The other helpers do what loading
files in Slicer does: a volume node from an array and its geometry, a segmentation node from a label map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
import vtk

from SegQCLib.geometry import Geometry

SLICE_VIEWS = (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal"))


class SlicerApp:
    """A scene with Slicer's application logic, module logics and slice logics (what the desktop app sets up)."""

    def __init__(self) -> None:
        self.scene = slicer.vtkMRMLScene()
        crosshair = slicer.vtkMRMLCrosshairNode()  # as qSlicerCoreApplication::setMRMLScene adds it
        crosshair.SetCrosshairName("default")
        self.scene.AddNode(crosshair)
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.app_logic.SetSliceLogics(vtk.vtkCollection())
        self.app_logic.SetViewLogics(vtk.vtkCollection())
        colors = self.app_logic.GetColorLogic()
        colors.SetMRMLScene(self.scene)
        colors.AddDefaultColorNodes()
        self.module_logics = {}
        # The volumes logic finds the colour logic by this module name (vtkSlicerVolumesLogic::
        # SetAndObserveColorToDisplayNode); without it loaded volumes get no colour table.
        self.register("Colors", colors)
        for name, logic in (("Volumes", slicer.vtkSlicerVolumesLogic()),
                            ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic()),
                            ("Markups", slicer.vtkSlicerMarkupsLogic())):
            self.register(name, logic)
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene, True)
        self.slice_logics = {}
        for name, orientation in SLICE_VIEWS:
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLApplicationLogic(self.app_logic)
            logic.SetMRMLScene(self.scene)
            self.app_logic.GetSliceLogics().AddItem(logic)
            logic.AddSliceNode(name).SetOrientation(orientation)
            self.slice_logics[name] = logic
        self.scene.app = self  # the scene keeps its logics alive

    def register(self, name: str, logic) -> None:
        logic.SetMRMLScene(self.scene)
        logic.SetMRMLApplicationLogic(self.app_logic)
        self.app_logic.SetModuleLogic(name, logic)
        self.module_logics[name] = logic

    @property
    def volumes_logic(self):
        return self.module_logics["Volumes"]

    def slice_node(self, name: str):
        return self.slice_logics[name].GetSliceNode()


def make_scene():
    """A scene set up like Slicer's (see :class:`SlicerApp`); ``scene.app`` holds the logics."""
    return SlicerApp().scene


def add_volume(scene, array: np.ndarray, geometry: Geometry, name: str, class_name="vtkMRMLScalarVolumeNode"):
    node = scene.AddNewNodeByClass(class_name, name)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(geometry.ijk_to_ras_matrix()))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None and display.IsA("vtkMRMLScalarVolumeDisplayNode") and not display.IsA(
            "vtkMRMLLabelMapVolumeDisplayNode"):
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
        display.AutoWindowLevelOn()
    return node


def set_segment(scene, segmentation_node, segment_id: str, mask: np.ndarray, geometry: Geometry) -> None:
    labelmap = add_volume(scene, mask.astype(np.uint8), geometry, "__mask__", "vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation_node, ids)
    display = labelmap.GetDisplayNode()
    scene.RemoveNode(labelmap)
    if display is not None:
        scene.RemoveNode(display)


# Fixed segment colours (Slicer would pick them from its palette): tests that look at pixels must not depend on it.
SEGMENT_COLORS = ((0.30, 0.85, 0.35), (0.25, 0.55, 1.00), (0.95, 0.45, 0.85))


def add_segmentation(scene, labels: np.ndarray, geometry: Geometry, names: dict[int, str], reference_node,
                     name: str = "Segmentation"):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    for index, (label, segment_name) in enumerate(names.items()):
        segment_id = node.GetSegmentation().AddEmptySegment(f"segment_{label}", segment_name)
        node.GetSegmentation().GetSegment(segment_id).SetColor(*SEGMENT_COLORS[index % len(SEGMENT_COLORS)])
        set_segment(scene, node, segment_id, labels == label, geometry)
    return node


def node_count(scene) -> int:
    return scene.GetNumberOfNodes()


def matrix_of(volume_node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def slice_nodes(scene) -> dict[str, object]:
    count = scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")
    return {node.GetName(): node for node in (scene.GetNthNodeByClass(i, "vtkMRMLSliceNode") for i in range(count))}


def slice_to_ras(scene) -> dict[str, np.ndarray]:
    return {name: slicer.util.arrayFromVTKMatrix(node.GetSliceToRAS()) for name, node in slice_nodes(scene).items()}


def save_scene(scene, folder: Path) -> Path:
    """Save every node and the scene file, as Slicer's Save dialog does."""
    folder.mkdir(parents=True, exist_ok=True)
    scene.SetRootDirectory(str(folder))
    nodes = scene.GetNodes()
    for index in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(index)
        if not node.IsA("vtkMRMLStorableNode") or not node.GetSaveWithScene():
            continue
        if node.GetStorageNode() is None:
            node.AddDefaultStorageNode()
        storage = node.GetStorageNode()
        if storage is not None:
            storage.SetFileName(str(folder / f"{node.GetID()}.{storage.GetDefaultWriteFileExtension()}"))
            assert storage.WriteData(node), node.GetName()
    scene.SetURL(str(folder / "review.mrml"))
    assert scene.Commit()
    return folder / "review.mrml"


def reopen_scene(scene_file: Path):
    """A fresh Slicer-like scene with a saved scene file loaded into it."""
    reopened = make_scene()
    reopened.SetURL(str(scene_file))
    assert reopened.Connect()
    return reopened


# ----------------------------------------------------------------------------------------------
# A review: a real image with a perturbed segmentation, and results from its true error

CLASS_NAMES = {1: "anterior", 2: "posterior"}


def perturbed(truth: np.ndarray) -> np.ndarray:
    """A plausible wrong segmentation: class 1 eroded, class 2 shifted two voxels along x."""
    from scipy import ndimage

    wrong = np.zeros_like(truth)
    wrong[ndimage.binary_erosion(truth == 1)] = 1
    wrong[np.roll(truth == 2, 2, axis=2) & (wrong == 0)] = 2
    return wrong


def true_error(segmentation: np.ndarray, truth: np.ndarray) -> dict[int, np.ndarray]:
    return {label: ((segmentation == label) != (truth == label)).astype(np.float32) for label in CLASS_NAMES}


def segmentation_arrays(logic, segmentation_node, reference_node) -> dict[str, np.ndarray]:
    """Every segment of a segmentation node as a mask on the reference grid (to prove it is untouched)."""
    names = logic.segmentNames(segmentation_node)
    return {sid: logic.exportLabelArray(segmentation_node, {sid: 1}, reference_node) for sid in names}


def build_review(image, truth, scene=None) -> dict:
    """A scene holding ``image`` and a perturbed segmentation of ``truth``, and a SegQC logic bound to it."""
    from SegQCModuleLib.logic import SegQCLogic

    scene = scene if scene is not None else make_scene()
    volume = add_volume(scene, image.array, image.geometry, "hippocampus")
    wrong = perturbed(truth.array)
    segmentation = add_segmentation(scene, wrong, image.geometry, CLASS_NAMES, volume)
    return {"scene": scene, "logic": SegQCLogic(scene), "volume": volume, "segmentation": segmentation,
            "image": image, "truth": truth.array, "wrong": wrong}


def apply_true_error(review: dict, suggest: bool = False, **options) -> dict:
    """Apply results made from the true error of the review's segmentation (exact, so checkable); with ``suggest``
    also the suggested edits made from it (as ``segqc run --suggest`` would, with the true error as Ê)."""
    from SegQCLib.quality.postprocess import build_report
    from SegQCLib.quality.suggestion import suggest as suggest_edits

    logic = review["logic"]
    prepared = logic.prepareInputs([review["volume"]], review["segmentation"], CLASS_NAMES)
    error = true_error(prepared.case.segmentation.array, review["truth"])
    report = build_report(prepared.case.segmentation, error, class_names=CLASS_NAMES)
    suggestion = suggest_edits(prepared.case.segmentation, error, report) if suggest else None
    report = report.to_dict()
    review.update(prepared=prepared, error=error, report=report, suggestion=suggestion,
                  result=logic.applyResult(prepared, report, error, suggestion=suggestion, **options))
    return review
