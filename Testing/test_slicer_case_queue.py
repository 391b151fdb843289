"""The Slicer module's case queue under slicer-core, on a real ``segqc rank`` output folder: cases listed worst first
with their status, next / previous case loading image, segmentation and the existing report without re-running
QC, a case's review state restored, and the reviewer's work written back for other sessions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core cannot be imported; pip install slicer-core")

import slicer  # noqa: E402
from ranked_folder import make_ranked_folder  # noqa: E402
from SegQCModuleLib.logic import ItemKind, ItemStatus, NodeRole, SegQCLogic  # noqa: E402
from SegQCModuleLib.queue_logic import CASE_ATTRIBUTE, CaseQueueLogic, readCase  # noqa: E402
from slicer_scene import make_scene, matrix_of, reopen_scene, save_scene, set_segment  # noqa: E402

from SegQCLib.errors import InputError  # noqa: E402
from SegQCLib.io.image_files import read_image, read_labelmap  # noqa: E402
from SegQCLib.quality.report import Report  # noqa: E402
from SegQCLib.review.queue import ReviewQueue  # noqa: E402
from SegQCLib.review.status_file import ReviewStatus, ReviewStatusFile  # noqa: E402


@pytest.fixture(scope="module")
def ranked(tmp_path_factory, hippocampus_cases) -> Path:
    return make_ranked_folder(tmp_path_factory.mktemp("ranked"), hippocampus_cases)


@pytest.fixture
def queue(ranked, tmp_path):
    folder = Path(shutil.copytree(ranked, tmp_path / "out"))
    logic = SegQCLogic(make_scene())
    queue_logic = CaseQueueLogic(logic, reviewer="Dr. Q")
    queue_logic.open(str(folder))
    return queue_logic


def table_column(table, name: str) -> list[str]:
    column = table.GetColumnIndex(name)
    return [table.GetCellText(row, column) for row in range(table.GetNumberOfRows())]


def test_the_queue_table_lists_the_cases_worst_first_with_estimates_and_status(queue):
    table = queue.tableNode()
    ranking = queue.queue.ranking
    assert table_column(table, "Case") == [c.case_id for c in ranking.cases]
    assert [float(v) for v in table_column(table, "Dice est")] == pytest.approx([c.dice_est for c in ranking.cases])
    assert set(table_column(table, "Review")) == {"pending"}
    assert table.GetAttribute("SegQC.QueuePath") == str(queue.queue.folder)


def test_loading_a_case_shows_its_image_segmentation_and_existing_report_without_rerunning(queue, monkeypatch):
    import SegQCLib.engine

    monkeypatch.setattr(SegQCLib.engine.QCEngine, "run_case", lambda *a, **k: pytest.fail("QC was re-run"))
    files = queue.queue.files(0)
    result = queue.loadCase(0)
    report = Report.load(files.report).to_dict()
    assert result.report["case"] == report["case"] and result.report["boxes"] == report["boxes"]
    image = read_image(files.images[0])
    volume = queue.scene.GetNodeByID(queue.logic.reportData()["imageNodeIDs"][0])
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), image.array)
    np.testing.assert_allclose(matrix_of(volume), image.geometry.ijk_to_ras_matrix(), atol=1e-9)
    snapshot = slicer.util.arrayFromVolume(queue.logic.findNode(NodeRole.SNAPSHOT))
    np.testing.assert_array_equal(snapshot, read_labelmap(files.segmentation).array)
    for label, node in result.overlayNodes.items():
        expected = read_image(files.result_dir / f"error_prob_{label}.nii.gz").array
        np.testing.assert_allclose(slicer.util.arrayFromVolume(node), expected, atol=1e-6)
    assert queue.queue.entry(0).review.status is ReviewStatus.IN_PROGRESS


def test_next_case_replaces_the_previous_one_in_the_scene(queue):
    queue.loadCase(0)
    first_nodes = queue.scene.GetNumberOfNodes()
    queue.loadCase(queue.step(+1))
    assert queue.currentIndex == 1 and queue.scene.GetNumberOfNodes() == first_nodes
    names = {queue.scene.GetNodeByID(i).GetAttribute(CASE_ATTRIBUTE) for i in queue.logic.reportData()["imageNodeIDs"]}
    assert names == {queue.queue.entry(1).case.case_id}
    assert len(queue.logic.findNodes(NodeRole.REPORT)) == 1


def test_a_cases_review_state_comes_back_when_it_is_opened_again(queue):
    queue.loadCase(0)
    boxes = queue.logic.itemCount(ItemKind.BOX)
    assert boxes > 1
    queue.logic.setItemStatus(ItemKind.BOX, 1, ItemStatus.FIXED)
    queue.logic.setItemStatus(ItemKind.SLICE, 0, ItemStatus.REVIEWED)
    queue.logic.setCaseRating("major_fixes")
    queue.logic.jumpToBox(1)
    queue.saveReviewState(currentBox=1)
    queue.loadCase(1)
    queue.loadCase(0)
    assert queue.logic.itemStatuses(ItemKind.BOX) == {1: ItemStatus.FIXED}
    assert queue.logic.itemStatuses(ItemKind.SLICE) == {0: ItemStatus.REVIEWED}
    assert queue.logic.caseRating() == "major_fixes"
    roi_centre = [0.0, 0.0, 0.0]
    queue.logic.findNode(NodeRole.ROI).GetCenter(roi_centre)
    np.testing.assert_allclose(roi_centre, queue.logic.reportData()["report"]["boxes"][1]["center_ras"], atol=1e-6)


def test_statuses_and_ratings_reach_other_sessions_through_the_status_file(queue):
    queue.loadCase(0)
    queue.logic.setCaseRating("accept")
    queue.setCaseStatus(ReviewStatus.REVIEWED)
    other = ReviewQueue(queue.queue.folder, reviewer="someone else")
    entry = other.entry(0)
    assert (entry.review.status, entry.review.rating.value, entry.review.reviewer) == (
        ReviewStatus.REVIEWED, "accept", "Dr. Q")
    assert other.first_to_review() == 1
    assert table_column(queue.tableNode(), "Review")[0] == "reviewed"
    assert table_column(queue.tableNode(), "Rating")[0] == "Accept"


def test_a_correction_recorded_from_the_queue_is_filed_under_the_case_and_marks_it_corrected(queue, tmp_path):
    queue.loadCase(0)
    logic = queue.logic
    segmentation = queue.scene.GetNodeByID(logic.reviewedSegmentationID())
    segment_id = next(iter(logic.reportData()["mapping"]))
    mask = slicer.util.arrayFromVolume(logic.findNode(NodeRole.SNAPSHOT)) > 0
    geometry = SegQCLogic.volumeGeometry(logic.findNode(NodeRole.SNAPSHOT))
    assert not queue.hasUnrecordedEdits()
    set_segment(queue.scene, segmentation, segment_id, np.roll(mask, 1, axis=0), geometry)
    assert queue.hasUnrecordedEdits()
    logic.setCaseRating("minor_fixes")
    record = queue.recordCorrection(str(tmp_path / "store"))
    case_id = queue.queue.entry(0).case.case_id
    metadata = json.loads((record / "record.json").read_text())
    assert metadata["case_id"] == case_id and metadata["rating"] == "minor_fixes"
    review = ReviewStatusFile(queue.queue.folder).get(case_id)
    assert review.status is ReviewStatus.CORRECTED
    assert review.correction_record == f"{metadata['case_key']}/v0001"


def test_the_queue_is_found_again_in_a_saved_scene(queue, tmp_path):
    queue.loadCase(0)
    reopened = reopen_scene(save_scene(queue.scene, tmp_path / "saved"))
    again = CaseQueueLogic(SegQCLogic(reopened))
    assert again.queuePathInScene() == str(queue.queue.folder)
    again.open(again.queuePathInScene())
    assert table_column(again.tableNode(), "Review")[0] == "in_progress"


def test_a_case_whose_files_are_gone_is_a_clear_error_and_leaves_the_scene_as_it_was(queue):
    queue.loadCase(0)
    before = queue.scene.GetNumberOfNodes()
    shutil.rmtree(queue.queue.files(1).result_dir)
    with pytest.raises(InputError, match="report of case .* is missing"):
        readCase(queue.queue, 1)
    assert queue.scene.GetNumberOfNodes() == before and queue.currentIndex == 0


def test_walking_past_the_last_case_ends_the_queue(queue):
    queue.loadCase(len(queue.queue) - 1)
    assert queue.step(+1) is None
    assert queue.step(-1) == len(queue.queue) - 2
