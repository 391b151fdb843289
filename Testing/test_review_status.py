"""Review statuses beside a ranking (review_status.csv): written crash-safely by several sessions at once without
losing an update, shown on the ranking page, and the source of ``segqc corrections export --queue``, which exports
exactly the cases fixed in the queue."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from SegQCLib.batch.index_page import write_index_html
from SegQCLib.batch.results import CaseStatus, RankRow
from SegQCLib.batch.review_status import (
    STATUS_FILE,
    CaseReview,
    ReviewStatus,
    fixed_record_ids,
    read_reviews,
    set_review,
)
from SegQCLib.commands.cli import main
from SegQCLib.corrections.store import CorrectionStore
from SegQCLib.errors import InputError
from SegQCLib.io.volumes import LabelMap

UPDATES_PER_WRITER = 15


def test_a_review_is_read_back_as_written_and_replaces_the_cases_earlier_one(tmp_path):
    set_review(tmp_path, CaseReview("a", ReviewStatus.IN_REVIEW, reviewer="ana"))
    written = set_review(tmp_path, CaseReview("a", ReviewStatus.FIXED, rating=2, reviewer="ana",
                                              correction_record="rec-1", note="tail, missed; fixed"))
    set_review(tmp_path, CaseReview("b", ReviewStatus.REVIEWED, rating=5))
    reviews = read_reviews(tmp_path / "ranking.csv")  # the ranking file names the same queue
    assert reviews["a"] == written and written.updated_utc.endswith("Z")
    assert reviews["b"].status is ReviewStatus.REVIEWED and reviews["b"].rating == 5
    assert read_reviews(tmp_path / "elsewhere") == {}


def _writer(folder: str, prefix: str) -> None:
    for index in range(UPDATES_PER_WRITER):
        set_review(folder, CaseReview(f"{prefix}{index}", ReviewStatus.REVIEWED, reviewer=prefix))


def test_two_sessions_writing_at_once_lose_no_update(tmp_path):
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(str(tmp_path), prefix)) for prefix in ("x", "y")]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert len(read_reviews(tmp_path)) == 2 * UPDATES_PER_WRITER


@pytest.mark.parametrize("content, message", [
    ("case_id,status\na,done\n", "unknown status 'done'"),
    ("case,status\na,fixed\n", "lacks column(s) case_id"),
    ("case_id,status,rating\na,fixed,good\n", "rating 'good' is not a whole number"),
])
def test_a_damaged_status_file_is_a_clear_error(tmp_path, content, message):
    (tmp_path / STATUS_FILE).write_text(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_reviews(tmp_path)


def test_ratings_outside_one_to_five_are_refused():
    with pytest.raises(InputError, match="1..5"):
        CaseReview("a", ReviewStatus.REVIEWED, rating=7)


def test_the_ranking_page_shows_each_cases_review_status(tmp_path):
    set_review(tmp_path, CaseReview("worst", ReviewStatus.FIXED))
    rows = [RankRow("worst", CaseStatus.DONE, 0.2, n_boxes=1), RankRow("better", CaseStatus.DONE, 0.8, n_boxes=0)]
    page = write_index_html(rows, tmp_path, reviews=read_reviews(tmp_path)).read_text()
    assert 'data-case="worst"' in page and 'data-review="fixed"' in page and 'data-review="pending"' in page


def test_only_fixed_cases_are_selected_and_one_without_a_record_takes_the_newest(tmp_path):
    reviews = {"a": CaseReview("a", ReviewStatus.FIXED, correction_record="a-v2"),
               "b": CaseReview("b", ReviewStatus.FIXED), "c": CaseReview("c", ReviewStatus.REVIEWED)}
    ids, notices = fixed_record_ids(reviews, {"a": "a-v3", "b": "b-v1", "c": "c-v1"})
    assert ids == ["a-v2", "b-v1"] and len(notices) == 1 and "b-v1" in notices[0]
    with pytest.raises(InputError, match="no correction in the store: b"):
        fixed_record_ids(reviews, {"a": "a-v3"})
    with pytest.raises(InputError, match="No case of the review queue is marked fixed"):
        fixed_record_ids({"c": reviews["c"]}, {})


@pytest.mark.realdata
def test_export_from_the_queue_contains_exactly_the_fixed_cases(tmp_path, hippocampus_sample, capsys):
    store = CorrectionStore(tmp_path / "store")
    records = {}
    for case_id, image, truth in hippocampus_sample[:4]:
        original = truth.array.copy()
        original[original == 2] = 0
        records[case_id] = store.add(case_id, [image], LabelMap(original, truth.geometry), truth).record_id
    ids = list(records)
    queue = tmp_path / "rank_out"
    queue.mkdir()
    set_review(queue, CaseReview(ids[0], ReviewStatus.FIXED, correction_record=records[ids[0]]))
    set_review(queue, CaseReview(ids[1], ReviewStatus.FIXED))  # no record id: the store's newest of that case
    set_review(queue, CaseReview(ids[2], ReviewStatus.REVIEWED))  # looked at, nothing fixed: not exported
    # ids[3] has a correction in the store but is not in the queue: not exported either.
    out = tmp_path / "Dataset501_Fixed"
    assert main(["corrections", "export", "--store", str(store.root), "--format", "nnunet", "--out", str(out),
                 "--channel-names", "T1", "--queue", str(queue / "ranking.csv")]) == 0
    exported = json.loads((out / "segqc_export.json").read_text())
    assert sorted(c["record_id"] for c in exported["cases"]) == sorted([records[ids[0]], records[ids[1]]])
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == sorted(
        f"{r.case_key}.nii.gz" for r in store.list() if r.case_id in ids[:2])
    assert f"{ids[1]}: fixed without a correction_record" in capsys.readouterr().out


def test_export_from_a_folder_without_statuses_is_a_one_line_error(tmp_path, capsys):
    code = main(["corrections", "export", "--store", str(tmp_path / "store"), "--format", "qc", "--out",
                 str(tmp_path / "out"), "--queue", str(tmp_path)])
    assert code == 1
    assert capsys.readouterr().err.strip().startswith("segqc: error: No review statuses at")
    assert not (tmp_path / "out").exists()


def test_statuses_the_slicer_queue_wrote_are_read_with_the_csv_and_the_later_entry_counts(tmp_path):
    from SegQCLib.review.status_file import ReviewStatusFile

    set_review(tmp_path, CaseReview("a", ReviewStatus.REVIEWED, rating=5, updated_utc="2020-01-01T00:00:00Z"))
    set_review(tmp_path, CaseReview("b", ReviewStatus.SKIPPED, updated_utc="2999-01-01T00:00:00Z"))
    queue = ReviewStatusFile(tmp_path)
    queue.update("a", "corrected", rating="minor_fixes", reviewer="ana", correction_record="case_a/v0001")
    queue.update("b", "corrected", correction_record="case_b/v0001")
    queue.update("c", "in_progress")
    reviews = read_reviews(tmp_path)
    assert reviews["a"].status is ReviewStatus.FIXED and reviews["a"].rating == 4
    assert reviews["a"].correction_record == "case_a/v0001" and reviews["a"].reviewer == "ana"
    assert reviews["b"].status is ReviewStatus.SKIPPED  # the CSV's entry is the later one
    assert reviews["c"].status is ReviewStatus.IN_REVIEW
    ids, _ = fixed_record_ids(reviews, {})
    assert ids == ["case_a/v0001"]
