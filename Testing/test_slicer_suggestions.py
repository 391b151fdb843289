"""Suggested edits in the Slicer module's scene logic (slicer-core): preview, accept, reject and undo on the current
error box, and the per-box provenance a recorded correction keeps.

The case is real (a hippocampus image with a perturbed ground truth as the reviewed segmentation); the QC results
and suggestions come from the true error (Ê = |T − M|), so every suggested edit is known exactly: accepting it must
write the truth into its voxels and nothing else.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

try:
    import slicer
except ImportError as exc:
    pytest.skip(f"slicer-core cannot be imported ({exc})", allow_module_level=True)

from SegQCModuleLib.logic import PREVIEW_ADDED, PREVIEW_REMOVED, ItemKind, ItemStatus, NodeRole, SegQCLogic  # noqa: E402
from slicer_scene import apply_true_error, build_review, segmentation_arrays, set_segment  # noqa: E402

from SegQCLib.corrections.names import RECORD_FILE  # noqa: E402
from SegQCLib.errors import InputError  # noqa: E402


@pytest.fixture
def suggested(hippocampus_case):
    """The review scene after results and suggestions from the true error were applied."""
    return apply_true_error(build_review(*hippocampus_case), suggest=True)


def boxes_with_edits(review) -> list[int]:
    """The first box of each suggested edit (boxes on neighbouring slices of one error region share its edit)."""
    first = {}
    for row, box in enumerate(review["report"]["boxes"]):
        if box.get("edit_id"):
            first.setdefault(box["edit_id"], row)
    return sorted(first.values())


def first_box(review) -> tuple[int, object]:
    row = boxes_with_edits(review)[0]
    return row, review["suggestion"].edit(review["report"]["boxes"][row]["edit_id"])


# ----------------------------------------------------------------------------------------------
# The QC run asks for suggestions and keeps them


def test_the_modules_qc_process_asks_for_suggestions():
    assert "--suggest" in SegQCLogic.processCommand("python", ["i.nii"], "s.nii", "out")
    assert "--suggest" not in SegQCLogic.processCommand("python", ["i.nii"], "s.nii", "out", suggest=False)


def test_the_suggestion_is_kept_in_the_scene_and_found_again_by_a_fresh_logic(suggested):
    found = SegQCLogic(suggested["scene"]).suggestion()
    np.testing.assert_array_equal(found.segmentation, suggested["suggestion"].segmentation)
    assert found.edit_maps.keys() == suggested["suggestion"].edit_maps.keys()
    for label, edits in found.edit_maps.items():
        np.testing.assert_array_equal(edits, suggested["suggestion"].edit_maps[label])
    assert [e.id for e in found.edits] == [e.id for e in suggested["suggestion"].edits]


def test_a_run_without_suggestions_removes_those_of_an_earlier_run(suggested):
    logic = suggested["logic"]
    logic.applyResult(suggested["prepared"], suggested["report"], suggested["error"])
    assert logic.suggestion() is None and logic.findNodes(NodeRole.EDITS) == []


# ----------------------------------------------------------------------------------------------
# Preview


def test_the_preview_shows_exactly_the_voxels_the_edit_adds_and_removes(suggested):
    logic, suggestion = suggested["logic"], suggested["suggestion"]
    row, edit = first_box(suggested)
    before = logic.currentLabels()
    logic.previewSuggestion(row)
    shown = slicer.util.arrayFromVolume(logic.findNode(NodeRole.PREVIEW))
    changing = suggestion.full_mask(edit.id) & (before != suggestion.segmentation)
    np.testing.assert_array_equal(shown == PREVIEW_ADDED, changing & (suggestion.segmentation == edit.label))
    np.testing.assert_array_equal(shown == PREVIEW_REMOVED, changing & (before == edit.label))
    assert logic.previewedEditId() == edit.id
    np.testing.assert_array_equal(logic.currentLabels(), before)  # a preview changes nothing


# ----------------------------------------------------------------------------------------------
# Accept, undo, reject


def test_accepting_writes_exactly_the_edits_voxels_and_there_the_truth(suggested):
    logic, suggestion = suggested["logic"], suggested["suggestion"]
    row, edit = first_box(suggested)
    before = logic.currentLabels()
    logic.acceptSuggestion(row)
    after = logic.currentLabels()
    changed = after != before
    region = suggestion.full_mask(edit.id)
    np.testing.assert_array_equal(changed, region & (before != suggestion.segmentation))
    np.testing.assert_array_equal(after[region], suggested["truth"][region])  # Ê is the true error
    assert changed.sum() == edit.voxels
    assert logic.itemStatus(ItemKind.BOX, row) is ItemStatus.FIXED_SUGGESTION
    assert logic.previewedEditId() is None


def test_accepting_marks_every_box_of_the_same_error_region_fixed_and_undo_unmarks_them(suggested):
    logic, boxes = suggested["logic"], suggested["report"]["boxes"]
    edit_id = max({b["edit_id"] for b in boxes if b.get("edit_id")},
                  key=lambda e: sum(b.get("edit_id") == e for b in boxes))
    rows = [row for row, box in enumerate(boxes) if box.get("edit_id") == edit_id]
    assert len(rows) > 1, "no error region of the perturbed case spans several slices"
    logic.acceptSuggestion(rows[-1])
    assert {logic.itemStatus(ItemKind.BOX, r) for r in rows} == {ItemStatus.FIXED_SUGGESTION}
    logic.undoSuggestion()
    assert {logic.itemStatus(ItemKind.BOX, r) for r in rows} == {ItemStatus.PENDING}


def test_undo_restores_every_segment_bit_for_bit_and_the_boxes_status(suggested):
    logic, segmentation, volume = suggested["logic"], suggested["segmentation"], suggested["volume"]
    rows = boxes_with_edits(suggested)[:2]
    before = segmentation_arrays(logic, segmentation, volume)
    logic.setItemStatus(ItemKind.BOX, rows[0], ItemStatus.REVIEWED)
    for row in rows:
        logic.acceptSuggestion(row)
    assert logic.undoSuggestion().row == rows[-1]
    assert logic.undoSuggestion().row == rows[0]
    after = segmentation_arrays(logic, segmentation, volume)
    assert before.keys() == after.keys() and all(np.array_equal(before[s], after[s]) for s in before)
    assert logic.itemStatus(ItemKind.BOX, rows[0]) is ItemStatus.REVIEWED
    assert not logic.canUndoSuggestion()
    with pytest.raises(InputError, match="No accepted suggestion"):
        logic.undoSuggestion()


def test_undo_after_a_hand_edit_of_the_segment_is_refused_and_keeps_the_hand_edit(suggested):
    scene, logic, segmentation = suggested["scene"], suggested["logic"], suggested["segmentation"]
    row, edit = first_box(suggested)
    logic.acceptSuggestion(row)
    segment_id = logic.segmentIdForLabel(edit.label)
    set_segment(scene, segmentation, segment_id, suggested["truth"] == edit.label, suggested["image"].geometry)
    hand_edited = logic.currentLabels()
    with pytest.raises(InputError, match="edited after the suggestion was accepted"):
        logic.undoSuggestion()
    np.testing.assert_array_equal(logic.currentLabels(), hand_edited)


def test_rejecting_changes_nothing_and_marks_the_box_rejected(suggested):
    logic, segmentation, volume = suggested["logic"], suggested["segmentation"], suggested["volume"]
    row, _ = first_box(suggested)
    before = segmentation_arrays(logic, segmentation, volume)
    logic.previewSuggestion(row)
    logic.rejectSuggestion(row)
    after = segmentation_arrays(logic, segmentation, volume)
    assert all(np.array_equal(before[s], after[s]) for s in before)
    assert logic.itemStatus(ItemKind.BOX, row) is ItemStatus.REJECTED
    assert logic.previewedEditId() is None and not logic.canUndoSuggestion()


def test_a_box_without_a_suggestion_or_a_run_without_suggestions_is_a_clear_error(hippocampus_case):
    review = apply_true_error(build_review(*hippocampus_case))  # no --suggest
    with pytest.raises(InputError, match="made no suggested edits"):
        review["logic"].acceptSuggestion(0)


def test_an_edit_that_is_not_offered_is_only_applied_when_forced(suggested):
    logic = suggested["logic"]
    row, edit = first_box(suggested)
    edit.offered = False  # as the model's threshold would mark an edit expected to make things worse
    report = json.loads(logic.findNode(NodeRole.REPORT).GetText())
    report["report"]["suggestion"]["edits"][edit.id - 1]["offered"] = False
    logic.findNode(NodeRole.REPORT).SetText(json.dumps(report))
    with pytest.raises(InputError, match="not offered"):
        logic.acceptSuggestion(row)
    logic.acceptSuggestion(row, force=True)
    assert logic.itemStatus(ItemKind.BOX, row) is ItemStatus.FIXED_SUGGESTION


# ----------------------------------------------------------------------------------------------
# Provenance in the correction record


def record_of(logic, tmp_path) -> dict[int, dict]:
    """The reviewed boxes of a recorded correction, by row."""
    record = json.loads((logic.recordCorrection(str(tmp_path / "store")) / RECORD_FILE).read_text())
    return {box["rank"] - 1: box for box in record["reviewed_boxes"]}


def fix_by_hand(review, edit_id: int) -> None:
    """What a reviewer does in the Segment Editor: the edit's region of its class set to the truth."""
    logic, edit = review["logic"], review["suggestion"].edit(edit_id)
    region = review["suggestion"].full_mask(edit_id)
    mask = logic.currentLabels() == edit.label
    mask[region] = review["truth"][region] == edit.label
    set_segment(review["scene"], review["segmentation"], logic.segmentIdForLabel(edit.label), mask,
                review["image"].geometry)


def test_a_recorded_correction_keeps_which_suggestions_were_accepted_and_which_rejected(suggested, tmp_path):
    logic = suggested["logic"]
    accepted, rejected = boxes_with_edits(suggested)[:2]
    logic.acceptSuggestion(accepted)
    logic.rejectSuggestion(rejected)
    boxes = record_of(logic, tmp_path)
    assert boxes[accepted]["decision"] == "accepted" and boxes[accepted]["status"] == "fixed (suggestion)"
    assert boxes[rejected]["decision"] == "rejected" and boxes[rejected]["status"] == "rejected"
    for row, where in ((accepted, "as_suggested"), (rejected, "as_original")):
        outcome = boxes[row]["edit_outcome"]
        assert outcome[where] == outcome["voxels"] == boxes[row]["edit_voxels"] > 0


def test_a_box_fixed_by_hand_is_recorded_as_edited_with_where_its_edits_voxels_ended_up(suggested, tmp_path):
    logic = suggested["logic"]
    row = boxes_with_edits(suggested)[0]
    fix_by_hand(suggested, suggested["report"]["boxes"][row]["edit_id"])
    logic.setItemStatus(ItemKind.BOX, row, ItemStatus.FIXED)
    box = record_of(logic, tmp_path)[row]
    assert box["decision"] == "edited"
    assert box["edit_outcome"]["as_suggested"] == box["edit_outcome"]["voxels"]  # Ê is the truth: so was the fix


def test_an_accepted_suggestion_changed_by_hand_afterwards_is_recorded_as_edited(suggested, tmp_path):
    scene, logic = suggested["scene"], suggested["logic"]
    row, edit = first_box(suggested)
    logic.acceptSuggestion(row)
    mask = logic.currentLabels() == edit.label
    mask[suggested["suggestion"].full_mask(edit.id)] = False  # the reviewer erases part of what was accepted
    set_segment(scene, suggested["segmentation"], logic.segmentIdForLabel(edit.label), mask,
                suggested["image"].geometry)
    box = record_of(logic, tmp_path)[row]
    assert box["status"] == "fixed (suggestion)" and box["decision"] == "edited"
    assert box["edit_outcome"]["as_suggested"] < box["edit_outcome"]["voxels"]


# ----------------------------------------------------------------------------------------------
# What the reviewer sees: the preview, rendered off-screen


def test_the_preview_is_drawn_in_the_slice_view_where_the_box_is_and_nowhere_else(hippocampus_case):
    from offscreen_views import OffscreenSliceViews, offscreen_rendering_problem
    from slicer_scene import SlicerApp
    from view_facts import box_mask, check_label_layer

    problem = offscreen_rendering_problem()
    if problem:
        pytest.skip(problem)
    app = SlicerApp()
    review = apply_true_error(build_review(*hippocampus_case, scene=app.scene), suggest=True)
    logic, geometry = review["logic"], review["image"].geometry
    row, _ = first_box(review)
    box = review["report"]["boxes"][row]
    views = OffscreenSliceViews(app)
    views.fit()
    logic.jumpToBox(row)
    logic.previewSuggestion(row)
    view = views.facing(geometry.ijk_to_ras_matrix()[:3, 2 - review["report"]["slice_axis"]])
    shown = np.array(slicer.util.arrayFromVolume(logic.findNode(NodeRole.PREVIEW)))
    facts = check_label_layer(view, review["scene"], shown, geometry, box_mask(geometry, box["bbox_zyx"]))
    assert facts["drawn_in_box"] >= 0.98
    logic.clearPreview()
    with pytest.raises(AssertionError, match="missing"):  # the check sees a preview that is not there
        check_label_layer(view, review["scene"], shown, geometry)
