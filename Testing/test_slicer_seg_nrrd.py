"""Segment colours and terminology survive SegQC: a .seg.nrrd that Slicer wrote, read and written again by SegQCLib,
loads back into Slicer (slicer-core's own segmentation storage node) with the same names, colours and terminology;
the Slicer module hands them on to the corrections it records."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core cannot be imported; pip install slicer-core")

import slicer  # noqa: E402
import vtk  # noqa: E402
from slicer_scene import CLASS_NAMES, add_segmentation, add_volume, apply_true_error, build_review, make_scene  # noqa: E402

from SegQCLib.geometry import Geometry  # noqa: E402
from SegQCLib.io.image_files import read_labelmap, write_labelmap  # noqa: E402
from SegQCLib.io.volumes import SegmentStyle  # noqa: E402

TERMINOLOGY = {
    "anterior": "Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
                "~SCT^5366008^Hippocampus~^^~Anatomic codes - DICOM master list~SCT^24028007^Right~^^",
    "posterior": "Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
                 "~SCT^5366008^Hippocampus~^^~Anatomic codes - DICOM master list~SCT^7771000^Left~^^",
}
COLORS = {"anterior": (0.9, 0.3, 0.1), "posterior": (0.1, 0.5, 0.8)}
GEOMETRY = Geometry((6, 7, 8), (0.8, 0.9, 1.5), (10.0, -4.0, 2.0))


def slicer_segmentation():
    """A segmentation made and styled in Slicer (what the Segment Editor and the terminology selector leave)."""
    scene = make_scene()
    labels = np.zeros(GEOMETRY.shape_zyx, dtype=np.uint8)
    labels[1:4, 2:5, 2:6] = 1
    labels[3:5, 4:6, 3:7] = 2
    reference = add_volume(scene, np.zeros(GEOMETRY.shape_zyx, np.float32), GEOMETRY, "image")
    node = add_segmentation(scene, labels, GEOMETRY, CLASS_NAMES, reference)
    segmentation = node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        segment.SetColor(*COLORS[segment.GetName()])
        segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), TERMINOLOGY[segment.GetName()])
    return scene, node, labels


def styles_in_slicer(node) -> dict[str, tuple]:
    segmentation = node.GetSegmentation()
    found = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        value = vtk.reference("")
        segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), value)
        found[segment.GetName()] = (tuple(round(c, 4) for c in segment.GetColor()), value.get())
    return found


def save_with_slicer(node, path) -> None:
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(node)


def load_with_slicer(path):
    scene = make_scene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    return node


def test_a_seg_nrrd_from_slicer_keeps_colours_and_terminology_through_segqc(tmp_path):
    _scene, node, labels = slicer_segmentation()
    save_with_slicer(node, tmp_path / "from_slicer.seg.nrrd")
    labelmap = read_labelmap(tmp_path / "from_slicer.seg.nrrd")
    by_name = {name: label for label, name in labelmap.names.items()}
    assert labelmap.styles[by_name["anterior"]] == SegmentStyle(COLORS["anterior"], TERMINOLOGY["anterior"])
    write_labelmap(tmp_path / "from_segqc.seg.nrrd", labelmap)
    reloaded = load_with_slicer(tmp_path / "from_segqc.seg.nrrd")
    assert styles_in_slicer(reloaded) == {name: (tuple(round(c, 4) for c in COLORS[name]), TERMINOLOGY[name])
                                          for name in ("anterior", "posterior")}
    np.testing.assert_array_equal(np.isin(read_labelmap(tmp_path / "from_segqc.seg.nrrd").array, [1, 2]),
                                  labels > 0)


def test_the_slicer_logic_hands_segment_styles_and_the_rating_to_the_correction_record(hippocampus_case, tmp_path):
    review = apply_true_error(build_review(*hippocampus_case))
    logic, segmentation = review["logic"], review["segmentation"].GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        segment.SetColor(*COLORS[segment.GetName()])
        segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), TERMINOLOGY[segment.GetName()])
    logic.setCaseRating("minor_fixes")
    record = logic.recordCorrection(str(tmp_path / "store"))
    metadata = json.loads((record / "record.json").read_text())
    assert metadata["rating"] == "minor_fixes"
    styles = {CLASS_NAMES[int(label)]: style for label, style in metadata["segment_styles"].items()}
    assert styles == {name: {"color_rgb": list(COLORS[name]), "terminology": TERMINOLOGY[name]}
                      for name in ("anterior", "posterior")}
