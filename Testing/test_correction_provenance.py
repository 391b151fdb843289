"""What a correction record keeps per reviewed box: the decision on its suggested edit and where its voxels ended up."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SegQCLib.corrections.box_review import BoxReview, EditOutcome, SuggestionDecision, edit_outcome
from SegQCLib.corrections.names import RECORD_FILE
from SegQCLib.corrections.records import RecordMetadata, metadata_digest
from SegQCLib.corrections.store import CorrectionStore
from SegQCLib.errors import InputError
from SegQCLib.geometry import Geometry
from SegQCLib.io.volumes import LabelMap, Volume
from SegQCLib.quality.postprocess import build_report
from SegQCLib.quality.suggestion import suggest


@pytest.fixture()
def reviewed_case():
    """Two errors (a missing block of class 1, a spurious block of class 1); the reviewer accepts the first
    suggestion, rejects the second and fixes by hand a third error the QC network missed."""
    geometry = Geometry((6, 24, 24), (1.0, 1.0, 1.0))
    truth = np.zeros(geometry.shape_zyx, np.uint8)
    truth[1:5, 4:14, 4:14] = 1
    original = truth.copy()
    original[1:5, 4:8, 4:14] = 0  # missing
    original[1:5, 16:22, 16:22] = 1  # spurious
    error_prob = {1: ((original == 1) ^ (truth == 1)).astype(np.float32)}
    segmentation = LabelMap(original, geometry)
    report = build_report(segmentation, error_prob)
    suggestion = suggest(segmentation, error_prob, report)
    corrected = original.copy()
    missing_edit = next(e for e in suggestion.edits if e.added_voxels)
    spurious_edit = next(e for e in suggestion.edits if e.removed_voxels)
    suggestion.accept(corrected, missing_edit.id)
    corrected[2, 10, 10] = 0  # a hand fix elsewhere
    image = Volume(np.random.default_rng(0).normal(size=geometry.shape_zyx).astype(np.float32), geometry)
    box_of = {e.id: next(b for b in report.boxes if b.edit_id == e.id) for e in (missing_edit, spurious_edit)}
    reviews = [
        BoxReview.from_dict({**box_of[missing_edit.id].__dict__, "status": "fixed (suggestion)",
                             "decision": "accepted",
                             "edit_outcome": edit_outcome(original, corrected, suggestion.segmentation,
                                                          suggestion.full_mask(missing_edit.id))}),
        {**box_of[spurious_edit.id].__dict__, "status": "rejected", "decision": SuggestionDecision.REJECTED,
         "edit_outcome": edit_outcome(original, corrected, suggestion.segmentation,
                                      suggestion.full_mask(spurious_edit.id))},
        {"label": 1, "slice": 2, "bbox_zyx": [[2, 9, 9], [3, 12, 12]], "status": "fixed", "decision": "edited"},
    ]
    return {"image": image, "original": LabelMap(original, geometry), "corrected": LabelMap(corrected, geometry),
            "reviews": reviews, "report": report, "missing": missing_edit, "spurious": spurious_edit}


def test_a_record_keeps_per_box_whether_its_suggestion_was_accepted_rejected_or_edited(tmp_path, reviewed_case):
    store = CorrectionStore(tmp_path / "store")
    record = store.add("case", [reviewed_case["image"]], reviewed_case["original"], reviewed_case["corrected"],
                       qc_report=reviewed_case["report"], reviewed_boxes=reviewed_case["reviews"])
    reviews = store.load(record.record_id).metadata.box_reviews()
    assert [r.decision for r in reviews] == [SuggestionDecision.ACCEPTED, SuggestionDecision.REJECTED,
                                            SuggestionDecision.EDITED]
    assert [r.status for r in reviews] == ["fixed (suggestion)", "rejected", "fixed"]
    assert reviews[0].edit_id == reviewed_case["missing"].id and reviews[1].edit_id == reviewed_case["spurious"].id
    assert reviews[0].edit_gain_dice_est == pytest.approx(reviewed_case["missing"].gain_dice_est)
    raw = json.loads((record.path / RECORD_FILE).read_text())
    assert [b["decision"] for b in raw["reviewed_boxes"]] == ["accepted", "rejected", "edited"]
    assert raw["qc_prediction"]["suggestion"]["edits"][0]["id"] == 1


def test_the_edit_outcome_counts_where_the_edits_voxels_ended_up(tmp_path, reviewed_case):
    accepted, rejected = (BoxReview.from_dict(r) if isinstance(r, dict) else r for r in reviewed_case["reviews"][:2])
    missing, spurious = reviewed_case["missing"], reviewed_case["spurious"]
    # The hand fix at (2, 10, 10) lies outside both edits: accepted as suggested, rejected kept as it was.
    assert accepted.edit_outcome == EditOutcome(missing.voxels, missing.voxels, 0, 0)
    assert rejected.edit_outcome == EditOutcome(spurious.voxels, 0, spurious.voxels, 0)


def test_an_edit_changed_after_accepting_counts_its_voxels_by_where_they_ended():
    original = np.zeros((1, 1, 4), np.uint8)
    suggested = np.array([[[1, 1, 1, 0]]], np.uint8)
    corrected = np.array([[[1, 0, 2, 0]]], np.uint8)
    mask = np.array([[[True, True, True, False]]])
    assert edit_outcome(original, corrected, suggested, mask) == EditOutcome(3, 1, 1, 1)


def test_records_written_before_decisions_existed_read_without_them(tmp_path, reviewed_case):
    store = CorrectionStore(tmp_path / "store")
    old_style = [{"label": 1, "slice": 2, "bbox_zyx": [[2, 0, 0], [3, 5, 5]], "status": "fixed", "rank": 1}]
    record = store.add("case", [reviewed_case["image"]], reviewed_case["original"], reviewed_case["corrected"],
                       reviewed_boxes=old_style)
    metadata = store.load(record.record_id).metadata
    assert metadata.reviewed_boxes == old_style  # stored exactly as given: no new keys added
    review = metadata.box_reviews()[0]
    assert (review.decision, review.edit_id, review.edit_outcome, review.extra) == (None, None, None, {"rank": 1})


def test_a_record_json_without_reviewed_boxes_still_loads():
    data = {"record_id": "c/v0001", "case_id": "c", "case_key": "c", "version": 1, "created_utc": "", "reviewer": None,
            "segqc_version": "0", "labels": [1], "label_names": {}, "image_files": [], "original_file": "o",
            "corrected_file": "c", "error_files": {}, "geometry": {}, "true_metrics": {}, "files": {}}
    data["metadata_sha256"] = metadata_digest(data)
    assert RecordMetadata.from_dict(data).box_reviews() == []


@pytest.mark.parametrize("box, message", [
    ({"label": 1, "decision": "maybe"}, "Unknown suggestion decision 'maybe'"),
    ({"label": 1, "decision": "accepted"}, "names no edit_id"),
    ({"label": 1, "edit_id": 1, "edit_outcome": {"voxels": 3, "as_suggested": 1, "as_original": 1, "other": 0}},
     "add up to voxels"),
    ({"label": 1, "edit_id": 1, "edit_outcome": {"voxels": 3}}, "edit_outcome needs"),
])
def test_inconsistent_provenance_is_refused_before_anything_is_written(tmp_path, reviewed_case, box, message):
    store = CorrectionStore(tmp_path / "store")
    with pytest.raises(InputError, match=message):
        store.add("case", [reviewed_case["image"]], reviewed_case["original"], reviewed_case["corrected"],
                  reviewed_boxes=[box])
    assert not (tmp_path / "store").exists()


def test_box_review_round_trips_through_its_dict():
    review = BoxReview(label=2, slice=5, bbox_zyx=[[5, 1, 1], [6, 4, 4]], status="rejected",
                       decision=SuggestionDecision.REJECTED, edit_id=3, edit_voxels=12, edit_gain_dice_est=0.01,
                       edit_offered=True, edit_outcome=EditOutcome(12, 0, 12, 0), extra={"rank": 4})
    data = review.to_dict()
    assert data["decision"] == "rejected" and data["rank"] == 4
    assert BoxReview.from_dict(json.loads(json.dumps(data))) == review
