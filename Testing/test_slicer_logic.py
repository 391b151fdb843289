"""SegQCLogic (the Slicer module's scene logic) under slicer-core: a real hippocampus case in a real MRML scene.

The scene is built like Slicer builds it (application, colour, segmentation and markups logics; Red, Yellow
and Green slice views).  Results come either from the true error of a perturbed ground truth (exact and
deterministic, so tables, overlays, ROI and jumps can be checked against the report) or from the QC engine
itself (end to end, cancellation, a model that does not load).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

try:
    import slicer
except ImportError as exc:  # slicer-core wheels exist for a few platforms and Python versions only
    pytest.skip(f"slicer-core cannot be imported ({exc}); pip install slicer-core to test the Slicer logic",
                allow_module_level=True)

from SegQCModuleLib.logic import ItemKind, ItemStatus, NodeRole, OverlaySettings, SegQCLogic  # noqa: E402
from slicer_scene import (  # noqa: E402  (after the slicer-core check)
    CLASS_NAMES,
    add_segmentation,
    add_volume,
    apply_true_error,
    build_review,
    make_scene,
    matrix_of,
    node_count,
    reopen_scene,
    save_scene,
    segmentation_arrays,
    set_segment,
    slice_nodes,
    slice_to_ras,
    true_error,
)

from SegQCLib.errors import CancelledError, InputError, ModelError
from SegQCLib.geometry import Geometry
from SegQCLib.io.image_files import read_image, read_labelmap
from SegQCLib.quality.postprocess import build_report

# ----------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def review(hippocampus_case):
    """A scene holding a real image and a perturbed segmentation of it, and a logic bound to the scene."""
    return build_review(*hippocampus_case)


@pytest.fixture
def reviewed(review):
    """The review scene after results from the true error of the perturbed segmentation were applied."""
    return apply_true_error(review)


# ----------------------------------------------------------------------------------------------
# Inputs


def test_inputs_from_nodes_equal_the_files_arrays_and_grid(review):
    prepared = review["logic"].prepareInputs([review["volume"]], review["segmentation"], CLASS_NAMES)
    assert prepared.case.geometry.matches(review["image"].geometry)
    np.testing.assert_array_equal(prepared.case.images[0].array, review["image"].array)
    np.testing.assert_array_equal(prepared.case.segmentation.array, review["wrong"])
    assert prepared.case.segmentation.names == CLASS_NAMES
    assert prepared.notices == []


def test_segments_map_to_classes_by_name_whatever_their_order(review):
    scene, logic = review["scene"], review["logic"]
    swapped = add_segmentation(scene, review["wrong"], review["image"].geometry, {2: "Posterior", 1: "ANTERIOR"},
                               review["volume"])
    mapping, notices = logic.defaultSegmentMapping(swapped, CLASS_NAMES)
    names = logic.segmentNames(swapped)
    assert {names[s].lower(): label for s, label in mapping.items()} == {"anterior": 1, "posterior": 2}
    assert notices == []
    prepared = logic.prepareInputs([review["volume"]], swapped, CLASS_NAMES)
    np.testing.assert_array_equal(prepared.case.segmentation.array, review["wrong"])


def test_segments_named_unlike_the_classes_map_by_order_with_a_notice(review):
    scene, logic = review["scene"], review["logic"]
    other = add_segmentation(scene, review["wrong"], review["image"].geometry, {1: "head", 2: "tail"},
                             review["volume"])
    mapping, notices = logic.defaultSegmentMapping(other, CLASS_NAMES)
    assert sorted(mapping.values()) == [1, 2]
    assert notices and "mapped by order" in notices[0]


def test_a_segment_that_maps_to_no_class_is_a_clear_error_and_changes_nothing(review):
    scene, logic, segmentation = review["scene"], review["logic"], review["segmentation"]
    segmentation.GetSegmentation().AddEmptySegment("extra", "tumour")
    before_nodes, before = node_count(scene), segmentation_arrays(logic, segmentation, review["volume"])
    with pytest.raises(InputError, match="tumour.*do not map to the model's classes"):
        logic.prepareInputs([review["volume"]], segmentation, CLASS_NAMES)
    assert node_count(scene) == before_nodes
    after = segmentation_arrays(logic, segmentation, review["volume"])
    assert all(np.array_equal(before[s], after[s]) for s in before)


def test_an_edited_mapping_can_ignore_a_segment(review):
    logic, segmentation = review["logic"], review["segmentation"]
    extra = segmentation.GetSegmentation().AddEmptySegment("extra", "tumour")
    mapping, _ = logic.defaultSegmentMapping(segmentation, CLASS_NAMES)
    mapping[extra] = 0
    prepared = logic.prepareInputs([review["volume"]], segmentation, CLASS_NAMES, mapping=mapping)
    np.testing.assert_array_equal(prepared.case.segmentation.array, review["wrong"])


def test_no_segmentation_and_no_image_are_clear_errors(review):
    with pytest.raises(InputError, match="Select a segmentation"):
        review["logic"].prepareInputs([review["volume"]], None, CLASS_NAMES)
    with pytest.raises(InputError, match="Select the image"):
        review["logic"].prepareInputs([], review["segmentation"], CLASS_NAMES)


def test_segmentation_on_another_grid_is_resampled_onto_the_image_with_a_notice(review):
    scene, logic, image = review["scene"], review["logic"], review["image"]
    shifted_geometry = Geometry(image.geometry.shape_zyx, image.geometry.spacing_xyz_mm,
                                tuple(np.asarray(image.geometry.origin_lps_mm) + [0.0, 0.0, 3.0]),
                                image.geometry.direction)
    shifted_reference = add_volume(scene, np.zeros(image.array.shape, np.uint8), shifted_geometry, "other grid",
                                   "vtkMRMLLabelMapVolumeNode")
    segmentation = add_segmentation(scene, review["wrong"], shifted_geometry, CLASS_NAMES, shifted_reference)
    prepared = logic.prepareInputs([review["volume"]], segmentation, CLASS_NAMES)
    assert prepared.case.geometry.matches(image.geometry)
    assert any("resampled" in notice and "origin" in notice for notice in prepared.notices)
    # The segmentation was 3 mm further along S (LPS z): on the image grid it appears 3 slices later.
    expected = np.zeros_like(review["wrong"])
    expected[3:] = review["wrong"][:-3]
    np.testing.assert_array_equal(prepared.case.segmentation.array, expected)


# ----------------------------------------------------------------------------------------------
# Result nodes


def test_overlays_have_the_input_grid_and_the_error_probabilities(reviewed):
    overlays = reviewed["result"].overlayNodes
    assert sorted(overlays) == [1, 2]
    for label, node in overlays.items():
        np.testing.assert_allclose(matrix_of(node), matrix_of(reviewed["volume"]))
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), reviewed["error"][label])


def test_overlay_is_shown_as_foreground_of_every_slice_view(reviewed):
    scene, logic = reviewed["scene"], reviewed["logic"]
    overlay = logic.showOverlay(2, opacity=0.3, threshold=0.25)
    composites = [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode") for i in range(3)]
    assert {c.GetForegroundVolumeID() for c in composites} == {overlay.GetID()}
    assert {c.GetBackgroundVolumeID() for c in composites} == {reviewed["volume"].GetID()}
    assert all(c.GetForegroundOpacity() == pytest.approx(0.3) for c in composites)
    assert overlay.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.25)


def test_summary_table_lists_each_class_and_the_case(reviewed):
    table, report = reviewed["result"].summaryTableNode, reviewed["report"]
    assert table.GetNumberOfRows() == len(report["classes"]) + 1
    dice_column = table.GetColumnIndex("Dice est")
    for row, estimate in enumerate(report["classes"]):
        assert table.GetCellText(row, table.GetColumnIndex("Class")) == estimate["name"]
        assert float(table.GetCellText(row, dice_column)) == pytest.approx(estimate["dice_est"], rel=1e-5)
    case_row = len(report["classes"])
    assert float(table.GetCellText(case_row, dice_column)) == pytest.approx(report["case"]["dice_est"], rel=1e-5)


def test_slices_and_boxes_tables_follow_the_report_ranking_with_a_status(reviewed):
    result, report = reviewed["result"], reviewed["report"]
    slices, boxes = result.slicesTableNode, result.boxesTableNode
    assert slices.GetNumberOfRows() == len(report["slices"]) > 0
    assert boxes.GetNumberOfRows() == len(report["boxes"]) > 0
    assert [int(slices.GetCellText(r, 1)) for r in range(slices.GetNumberOfRows())] == \
        [s["index"] for s in report["slices"]]
    assert [int(boxes.GetCellText(r, boxes.GetColumnIndex("Slice"))) for r in range(boxes.GetNumberOfRows())] == \
        [b["slice"] for b in report["boxes"]]
    status = boxes.GetColumnIndex("Status")
    assert {boxes.GetCellText(r, status) for r in range(boxes.GetNumberOfRows())} == {"pending"}


def test_result_tables_show_column_names_as_headers_without_deprecation_warnings(review, capfd):
    capfd.readouterr()
    result = apply_true_error(review)["result"]
    warnings = capfd.readouterr().err
    assert "deprecated" not in warnings
    for table in (result.summaryTableNode, result.slicesTableNode, result.boxesTableNode):
        assert table.GetUseColumnTitleAsColumnHeader()


def composite_overlay_state(scene, logic) -> set:
    composites = [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode") for i in range(3)]
    labels = {node.GetID(): int(node.GetAttribute("SegQC.Label")) for node in logic.findNodes(NodeRole.OVERLAY)}
    return {(labels.get(c.GetForegroundVolumeID()), round(c.GetForegroundOpacity(), 6)) for c in composites}


def test_rerunning_keeps_the_overlay_class_opacity_and_threshold_the_reviewer_chose(reviewed):
    scene, logic = reviewed["scene"], reviewed["logic"]
    logic.showOverlay(2, opacity=0.3, threshold=0.2)
    again = logic.applyResult(reviewed["prepared"], reviewed["report"], reviewed["error"], keepSnapshot=True)
    assert composite_overlay_state(scene, logic) == {(2, 0.3)}
    assert again.overlayNodes[2].GetDisplayNode().GetLowerThreshold() == pytest.approx(0.2)
    assert logic.shownOverlaySettings() == OverlaySettings(2, pytest.approx(0.3), pytest.approx(0.2))


def test_results_are_shown_with_the_panels_overlay_settings_when_given(reviewed):
    scene, logic = reviewed["scene"], reviewed["logic"]
    logic.applyResult(reviewed["prepared"], reviewed["report"], reviewed["error"],
                      overlay=OverlaySettings(2, opacity=0.8, threshold=0.65))
    assert composite_overlay_state(scene, logic) == {(2, 0.8)}
    assert logic.shownOverlaySettings().threshold == pytest.approx(0.65)


def test_a_first_run_shows_the_first_class_with_the_default_settings(review):
    result = apply_true_error(review)["result"]
    assert composite_overlay_state(review["scene"], review["logic"]) == {(1, 0.5)}
    assert result.overlayNodes[1].GetDisplayNode().GetLowerThreshold() == pytest.approx(0.5)


def test_rerunning_updates_the_same_nodes(reviewed):
    scene, logic = reviewed["scene"], reviewed["logic"]
    before = node_count(scene)
    again = logic.applyResult(reviewed["prepared"], reviewed["report"], reviewed["error"])
    assert node_count(scene) == before
    assert again.boxesTableNode.GetID() == reviewed["result"].boxesTableNode.GetID()


# ----------------------------------------------------------------------------------------------
# Navigation


@pytest.mark.parametrize("rank", [0, -1])
def test_jump_to_box_moves_the_roi_and_every_slice_view_to_the_box(reviewed, rank):
    scene, logic, report = reviewed["scene"], reviewed["logic"], reviewed["report"]
    index = rank % len(report["boxes"])
    box = report["boxes"][index]
    centre = logic.jumpToBox(index)
    np.testing.assert_allclose(centre, box["center_ras"], atol=1e-6)
    roi = reviewed["result"].roiNode
    roi_centre = [0.0, 0.0, 0.0]
    roi.GetCenter(roi_centre)
    np.testing.assert_allclose(roi_centre, box["center_ras"], atol=1e-6)
    np.testing.assert_allclose(roi.GetSize(), box["size_mm"][::-1], atol=1e-6)  # ROI axes are i, j, k = x, y, z
    for name, matrix in slice_to_ras(scene).items():
        np.testing.assert_allclose(matrix[:3, 3], box["center_ras"], atol=1e-6, err_msg=name)
    assert slice_nodes(scene)["Red"].GetSliceOffset() == pytest.approx(box["center_ras"][2])


def test_jump_to_slice_puts_every_view_on_that_slice(reviewed):
    scene, logic, report = reviewed["scene"], reviewed["logic"], reviewed["report"]
    entry = report["slices"][1]
    point = logic.jumpToSlice(1)
    geometry = reviewed["image"].geometry
    index_zyx = geometry.lps_to_index_zyx(point * np.array([-1.0, -1.0, 1.0]))
    assert index_zyx[report["slice_axis"]] == pytest.approx(entry["index"])
    for name, matrix in slice_to_ras(scene).items():
        np.testing.assert_allclose(matrix[:3, 3], point, atol=1e-6, err_msg=name)


def test_marking_items_shows_in_the_status_column(reviewed):
    logic, result = reviewed["logic"], reviewed["result"]
    logic.setItemStatus(ItemKind.BOX, 0, ItemStatus.FIXED)
    logic.setItemStatus(ItemKind.SLICE, 2, ItemStatus.REVIEWED)
    assert result.boxesTableNode.GetCellText(0, result.boxesTableNode.GetColumnIndex("Status")) == "fixed"
    assert logic.itemStatus(ItemKind.SLICE, 2) is ItemStatus.REVIEWED
    with pytest.raises(InputError, match="No box"):
        logic.setItemStatus(ItemKind.BOX, 10_000, ItemStatus.FIXED)


def test_a_new_logic_resumes_the_review_from_the_scene(reviewed):
    fresh = SegQCLogic(reviewed["scene"])
    assert fresh.reviewedSegmentationID() == reviewed["segmentation"].GetID()
    assert fresh.itemCount(ItemKind.BOX) == len(reviewed["report"]["boxes"])
    np.testing.assert_allclose(fresh.jumpToBox(0), reviewed["report"]["boxes"][0]["center_ras"], atol=1e-6)
    assert fresh.reportData()["report"]["case"] == reviewed["report"]["case"]


def test_a_saved_review_reopens_where_it_was_left(reviewed, tmp_path):
    logic, report = reviewed["logic"], reviewed["report"]
    logic.setItemStatus(ItemKind.BOX, 0, ItemStatus.FIXED)
    scene_file = save_scene(reviewed["scene"], tmp_path / "saved")
    reopened = reopen_scene(scene_file)
    resumed = SegQCLogic(reopened)
    assert resumed.itemCount(ItemKind.BOX) == len(report["boxes"])
    assert resumed.itemStatus(ItemKind.BOX, 0) is ItemStatus.FIXED
    np.testing.assert_allclose(resumed.jumpToBox(1), report["boxes"][1]["center_ras"], atol=1e-6)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(resumed.findNode(NodeRole.SNAPSHOT)), reviewed["wrong"])
    record = resumed.recordCorrection(str(tmp_path / "store"))
    np.testing.assert_array_equal(read_labelmap(record / "original.nii.gz").array, reviewed["wrong"])


def test_a_reopened_review_knows_every_image_volume_qc_ran_on(review, tmp_path):
    """Two modalities (the second one a transformed copy): both come back in order after save and reopen."""
    scene, logic, image = review["scene"], review["logic"], review["image"]
    second = add_volume(scene, image.array * 2.0 + 5.0, image.geometry, "second modality")
    prepared = logic.prepareInputs([review["volume"], second], review["segmentation"], CLASS_NAMES)
    error = true_error(prepared.case.segmentation.array, review["truth"])
    logic.applyResult(prepared, build_report(prepared.case.segmentation, error, class_names=CLASS_NAMES).to_dict(),
                      error)
    assert [n.GetName() for n in logic.reviewImageNodes()] == ["hippocampus", "second modality"]
    resumed = SegQCLogic(reopen_scene(save_scene(scene, tmp_path / "saved")))
    assert [n.GetName() for n in resumed.reviewImageNodes()] == ["hippocampus", "second modality"]
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(resumed.reviewImageNodes()[1]), image.array * 2.0 + 5.0)


def test_a_scene_without_a_review_has_no_review_images(review):
    assert review["logic"].reviewImageNodes() == []


# ----------------------------------------------------------------------------------------------
# Corrections


def test_the_case_rating_is_kept_in_the_scene_and_survives_save_and_reopen(reviewed, tmp_path):
    logic = reviewed["logic"]
    assert logic.caseRating() is None
    logic.setCaseRating("Major fixes")
    assert logic.caseRating() == "major_fixes"
    resumed = SegQCLogic(reopen_scene(save_scene(reviewed["scene"], tmp_path / "saved")))
    assert resumed.caseRating() == "major_fixes"
    resumed.setCaseRating(None)
    assert resumed.caseRating() is None


def test_an_unknown_rating_is_a_clear_error(reviewed):
    with pytest.raises(InputError, match="Unknown case rating 'great'.*accept, minor_fixes, major_fixes, reject"):
        reviewed["logic"].setCaseRating("great")


def test_record_correction_stores_snapshot_corrected_and_error(reviewed, tmp_path):
    scene, logic, segmentation = reviewed["scene"], reviewed["logic"], reviewed["segmentation"]
    logic.setItemStatus(ItemKind.BOX, 0, ItemStatus.FIXED)
    # The reviewer repairs the shifted class 2 in the Segment Editor.
    posterior = segmentation.GetSegmentation().GetSegmentIdBySegmentName("posterior")
    set_segment(scene, segmentation, posterior, reviewed["truth"] == 2, reviewed["image"].geometry)
    record = logic.recordCorrection(str(tmp_path / "store"))
    original = read_labelmap(record / "original.nii.gz").array
    corrected = read_labelmap(record / "corrected.nii.gz").array
    np.testing.assert_array_equal(original, reviewed["wrong"])
    expected = reviewed["wrong"].copy()
    expected[expected == 2] = 0
    expected[(reviewed["truth"] == 2) & (expected == 0)] = 2
    np.testing.assert_array_equal(corrected, expected)
    error_2 = read_image(record / "error_2.nii.gz").array
    np.testing.assert_array_equal(error_2 != 0, (original == 2) != (corrected == 2))
    np.testing.assert_array_equal(read_image(record / "image_0000.nii.gz").array, reviewed["image"].array)
    metadata = json.loads((record / "record.json").read_text())
    assert [b["status"] for b in metadata["reviewed_boxes"]] == ["fixed"]
    assert read_image(record / "corrected.nii.gz").geometry.matches(reviewed["image"].geometry)


# ----------------------------------------------------------------------------------------------
# The engine, end to end


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    model_package = pytest.importorskip("SegQCLib.network.package")
    pytest.importorskip("SegQCLib.engine", reason="SegQCLib.engine not available")
    return str(model_package.init_model_package(tmp_path_factory.mktemp("model") / "untrained"))


def test_runqc_end_to_end_creates_the_result_nodes_on_the_input_grid(review, model_path):
    logic, segmentation = review["logic"], review["segmentation"]
    before = segmentation_arrays(logic, segmentation, review["volume"])
    fractions = []
    result = logic.runQC([review["volume"]], segmentation, modelPath=model_path, device="cpu",
                         progress=lambda fraction, message: fractions.append(fraction))
    assert sorted(result.overlayNodes) == [1, 2]
    for node in result.overlayNodes.values():
        np.testing.assert_allclose(matrix_of(node), matrix_of(review["volume"]))
        values = slicer.util.arrayFromVolume(node)
        assert values.shape == review["image"].array.shape and 0.0 <= values.min() <= values.max() <= 1.0
    assert [c["name"] for c in result.report["classes"]] == ["anterior", "posterior"]
    assert result.slicesTableNode.GetNumberOfRows() == len(result.report["slices"]) > 0
    assert fractions and fractions == sorted(fractions)
    after = segmentation_arrays(logic, segmentation, review["volume"])
    assert all(np.array_equal(before[s], after[s]) for s in before)


def test_a_cancelled_run_leaves_no_nodes_behind(review, model_path):
    scene, logic, segmentation = review["scene"], review["logic"], review["segmentation"]
    logic.engine(model_path, "cpu")  # load the model first: only the run is cancelled
    before_nodes, before = node_count(scene), segmentation_arrays(logic, segmentation, review["volume"])
    with pytest.raises(CancelledError):
        logic.runQC([review["volume"]], segmentation, modelPath=model_path, device="cpu", cancel=lambda: True)
    assert node_count(scene) == before_nodes
    assert logic.findNodes(NodeRole.OVERLAY) == []
    after = segmentation_arrays(logic, segmentation, review["volume"])
    assert all(np.array_equal(before[s], after[s]) for s in before)


def test_a_model_that_does_not_load_is_a_clear_error(review, tmp_path):
    pytest.importorskip("SegQCLib.engine", reason="SegQCLib.engine not available")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "weights.pt").write_bytes(b"\x00garbage")
    before = node_count(review["scene"])
    with pytest.raises(ModelError, match="config.json is not valid JSON"):
        review["logic"].runQC([review["volume"]], review["segmentation"], modelPath=str(broken), device="cpu")
    assert node_count(review["scene"]) == before


def test_the_class_of_a_box_leads_back_to_its_segment(reviewed):
    """Opening the Segment Editor on a box's class finds the segment QC mapped to it."""
    logic = reviewed["logic"]
    label = logic.boxLabel(0)
    segment_id = logic.segmentIdForLabel(label)
    name = reviewed["segmentation"].GetSegmentation().GetSegment(segment_id).GetName()
    assert name == CLASS_NAMES[label]



def test_process_output_lines_that_are_not_events_are_ignored():
    assert SegQCLogic.parseProcessLine('{"event": "progress", "fraction": 0.5, "message": "x"}')["fraction"] == 0.5
    assert SegQCLogic.parseProcessLine("INFO loading model") is None
    assert SegQCLogic.parseProcessLine("{broken") is None
    assert SegQCLogic.parseProcessLine('{"no_event": 1}') is None


def test_rerun_after_edits_keeps_the_first_snapshot_so_the_correction_covers_all_edits(reviewed, tmp_path):
    scene, logic, segmentation = reviewed["scene"], reviewed["logic"], reviewed["segmentation"]
    posterior = segmentation.GetSegmentation().GetSegmentIdBySegmentName("posterior")
    set_segment(scene, segmentation, posterior, reviewed["truth"] == 2, reviewed["image"].geometry)
    edited = logic.prepareInputs([reviewed["volume"]], segmentation, CLASS_NAMES)
    error = true_error(edited.case.segmentation.array, reviewed["truth"])
    report = build_report(edited.case.segmentation, error, class_names=CLASS_NAMES).to_dict()
    logic.applyResult(edited, report, error, keepSnapshot=True)
    record = logic.recordCorrection(str(tmp_path / "store"))
    np.testing.assert_array_equal(read_labelmap(record / "original.nii.gz").array, reviewed["wrong"])
    logic.applyResult(edited, report, error)  # a plain run takes a new snapshot
    snapshot = slicer.util.arrayFromVolume(logic.findNode(NodeRole.SNAPSHOT))
    np.testing.assert_array_equal(snapshot, edited.case.segmentation.array)


def test_a_perfect_segmentation_gives_empty_box_list_and_a_clear_message_on_jump(review):
    scene, logic, image = review["scene"], review["logic"], review["image"]
    perfect = add_segmentation(scene, review["truth"], image.geometry, CLASS_NAMES, review["volume"])
    prepared = logic.prepareInputs([review["volume"]], perfect, CLASS_NAMES)
    error = true_error(prepared.case.segmentation.array, review["truth"])
    report = build_report(prepared.case.segmentation, error, class_names=CLASS_NAMES).to_dict()
    result = logic.applyResult(prepared, report, error)
    assert report["boxes"] == [] and result.boxesTableNode.GetNumberOfRows() == 0
    assert float(result.summaryTableNode.GetCellText(2, 2)) == pytest.approx(1.0)
    with pytest.raises(InputError, match="No box 1"):
        logic.jumpToBox(0)


# ----------------------------------------------------------------------------------------------
# Inputs outside the model's domain


def test_results_of_an_input_outside_the_domain_get_a_warning_banner_with_the_reasons(reviewed):
    report = dict(reviewed["report"], domain={"checked": True, "in_domain": False, "reasons": [
        "Voxel spacing 1×1×5 mm (x×y×z) is far from the training images' 1 mm"]})
    warning = SegQCLogic.domainWarning(report)
    assert warning.startswith("Outside the model's domain") and "unreliable" in warning and "1×1×5 mm" in warning


def test_results_of_an_input_like_the_training_data_get_no_banner(reviewed):
    assert SegQCLogic.domainWarning(dict(reviewed["report"], domain={"checked": True, "in_domain": True})) is None
    assert SegQCLogic.domainWarning(reviewed["report"]) is None  # a report without a domain check (estimate)


def test_the_strict_option_reaches_the_background_process():
    command = SegQCLogic.processCommand("python", ["i.nii.gz"], "s.nii.gz", "out", strict=True)
    assert command[-1] == "--strict" and "--strict" not in SegQCLogic.processCommand("python", ["i"], "s", "o")


def test_strict_qc_of_other_anatomy_is_refused_and_leaves_the_scene_as_it_was():
    pytest.importorskip("SegQCLib.engine", reason="SegQCLib.engine not available")
    from SegQCLib.errors import OutOfDomainError
    from SegQCLib.io.datasets import default_shared_data_dir

    folder = default_shared_data_dir() / "other" / "sct_t1_cord"
    if not folder.is_dir():
        pytest.skip(f"other-anatomy data not found at {folder}")
    image, cord = read_image(folder / "image.nii.gz"), read_labelmap(folder / "seg_manual.nii.gz")
    scene = make_scene()
    logic = SegQCLogic(scene)
    volume = add_volume(scene, image.array, image.geometry, "spinal cord T1")
    segmentation = add_segmentation(scene, cord.array, image.geometry, {1: "cord"}, volume)
    mapping = {segment_id: 1 for segment_id in logic.segmentNames(segmentation)}
    before = node_count(scene)
    with pytest.raises(OutOfDomainError, match="outside the domain"):
        logic.runQC([volume], segmentation, device="cpu", mapping=mapping, strict=True)
    assert node_count(scene) == before and logic.findNodes(NodeRole.OVERLAY) == []
