"""Named segmentations (Slicer .seg.nrrd) are checked class by class by segment name, not by label value."""

import json

import numpy as np

from SegQCLib.commands.cli import main
from SegQCLib.engine import align_labels_to_model
from SegQCLib.geometry import Geometry
from SegQCLib.io.image_files import read_labelmap, write_labelmap
from SegQCLib.io.volumes import LabelMap, SegmentStyle

MODEL_CLASSES = {1: "anterior", 2: "posterior"}


def two_part_labels() -> np.ndarray:
    array = np.zeros((4, 6, 6), np.uint8)
    array[1:3, 1:3, 1:5] = 1
    array[1:3, 3:5, 1:5] = 2
    return array


def test_swapped_label_values_are_mapped_to_the_model_classes_by_name():
    swapped = LabelMap(two_part_labels(), Geometry((4, 6, 6)), {1: "Posterior", 2: "anterior"})
    aligned, notices = align_labels_to_model(swapped, MODEL_CLASSES)
    original = two_part_labels()
    np.testing.assert_array_equal(aligned.array, np.where(original == 1, 2, np.where(original == 2, 1, 0)))
    assert aligned.names == {2: "Posterior", 1: "anterior"}
    assert notices and "by name" in notices[0]


def test_segment_colours_and_terminology_follow_their_segments_when_labels_are_renumbered():
    styles = {1: SegmentStyle((0.1, 0.5, 0.8), "context~cat~posterior~^^~~^^~^^"), 2: SegmentStyle((0.9, 0.3, 0.1))}
    swapped = LabelMap(two_part_labels(), Geometry((4, 6, 6)), {1: "Posterior", 2: "anterior"}, styles=styles)
    aligned, _notices = align_labels_to_model(swapped, MODEL_CLASSES)
    assert aligned.styles == {2: styles[1], 1: styles[2]}


def test_matching_names_and_values_leave_the_segmentation_as_it_is():
    labels = LabelMap(two_part_labels(), Geometry((4, 6, 6)), dict(MODEL_CLASSES))
    aligned, notices = align_labels_to_model(labels, MODEL_CLASSES)
    assert aligned is labels and notices == []


def test_unmatched_names_keep_label_values_with_a_notice():
    labels = LabelMap(two_part_labels(), Geometry((4, 6, 6)), {1: "Segment_1", 2: "posterior"})
    aligned, notices = align_labels_to_model(labels, MODEL_CLASSES)
    np.testing.assert_array_equal(aligned.array, two_part_labels())
    assert notices and "taken by their values" in notices[0]


def test_unnamed_label_maps_are_taken_by_value_silently():
    labels = LabelMap(two_part_labels(), Geometry((4, 6, 6)))
    assert align_labels_to_model(labels, MODEL_CLASSES) == (labels, [])


def test_segqc_run_checks_a_seg_nrrd_by_segment_name(tmp_path, hippocampus_cases):
    truth = read_labelmap(hippocampus_cases[0].label)
    swapped = np.where(truth.array == 1, 2, np.where(truth.array == 2, 1, 0)).astype(np.uint8)
    seg_path = write_labelmap(tmp_path / "swapped.seg.nrrd",
                              LabelMap(swapped, truth.geometry, {1: "posterior", 2: "anterior"}))
    out = tmp_path / "qc"
    assert main(["run", "--image", str(hippocampus_cases[0].images[0]), "--seg", str(seg_path), "--out", str(out),
                 "--device", "cpu", "--progress", "none"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert any("by name" in notice for notice in report["notices"])
    assert {c["label"]: c["name"] for c in report["classes"]} == {1: "anterior", 2: "posterior"}
    volumes = {c["label"]: c["volume_mm3"] for c in report["classes"]}
    voxel_mm3 = truth.geometry.voxel_volume_mm3
    assert volumes[1] == np.count_nonzero(truth.array == 1) * voxel_mm3
