"""The case queue of a ``segqc rank`` output folder (SegQCLib/review): the ranking read tolerantly, the case files
found, and review statuses shared safely between sessions through ``review_status.json``."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
from pathlib import Path

import pytest
from ranked_folder import make_ranked_folder

from SegQCLib.errors import InputError, SegQCError
from SegQCLib.review import status_file as status_module
from SegQCLib.review.queue import ReviewQueue
from SegQCLib.review.ranking_file import case_files, read_ranking
from SegQCLib.review.rating import CaseRating
from SegQCLib.review.status_file import STATUS_FILE, ReviewStatus, ReviewStatusFile


@pytest.fixture(scope="module")
def ranked(tmp_path_factory, hippocampus_cases) -> Path:
    return make_ranked_folder(tmp_path_factory.mktemp("ranked"), hippocampus_cases)


@pytest.fixture
def folder(ranked, tmp_path) -> Path:
    """A private copy of the ranked folder (tests write statuses into it)."""
    return Path(shutil.copytree(ranked, tmp_path / "out"))


# ----------------------------------------------------------------------------------------------
# The ranking


def ranking_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "ranking.csv", encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def test_the_ranking_is_read_worst_first_with_its_estimates_and_absolute_report_paths(folder):
    ranking = read_ranking(folder)
    rows = ranking_rows(folder)
    assert [c.case_id for c in ranking.cases] == [r["case_id"] for r in rows]
    first = ranking.cases[0]
    assert first.rank == 1 and first.dice_est == pytest.approx(float(rows[0]["dice_est"]))
    assert first.report.is_absolute() and first.report.is_file()
    assert read_ranking(folder / "ranking.csv") == ranking


def test_case_files_are_the_image_and_segmentation_the_report_was_made_from(folder, hippocampus_cases):
    ranking = read_ranking(folder)
    by_id = {c.case_id: c for c in hippocampus_cases}
    for case in ranking.cases:
        files = case_files(case, folder)
        assert files.images == (by_id[case.case_id].images[0].resolve(),)
        assert files.segmentation.name == f"{case.case_id}.nii.gz" and files.segmentation.parent.name == "segs"
        assert files.segmentation.is_file()
        assert sorted(p.name for p in files.result_dir.glob("error_prob_*")) == ["error_prob_1.nii.gz",
                                                                                 "error_prob_2.nii.gz"]


def rewrite_ranking(folder: Path, change) -> None:
    rows = ranking_rows(folder)
    rows = change(rows)
    with open(folder / "ranking.csv", "w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_columns_the_reader_does_not_know_are_kept_and_missing_optional_ones_tolerated(folder):
    def change(rows):
        return [{**{k: v for k, v in r.items() if k not in ("qi", "dice_pred", "worst_slice")},
                 "domain_flag": "out-of-distribution" if i == 0 else "", "html": f"cases/{r['case_id']}.html"}
                for i, r in enumerate(rows)]

    rewrite_ranking(folder, change)
    ranking = read_ranking(folder)
    first = ranking.cases[0]
    planted = {"domain_flag": "out-of-distribution", "html": f"cases/{first.case_id}.html"}
    assert {key: first.extra[key] for key in planted} == planted
    assert ranking.cases[0].qi is None and ranking.cases[0].dice_est is not None


def test_a_number_that_cannot_be_read_is_left_undefined_with_a_warning(folder, caplog):
    rewrite_ranking(folder, lambda rows: [{**r, "dice_est": "n/a" if i == 1 else r["dice_est"]}
                                          for i, r in enumerate(rows)])
    ranking = read_ranking(folder)
    assert ranking.cases[1].dice_est is None
    assert "dice_est 'n/a' is not a number" in caplog.text


def test_a_file_without_case_ids_or_reports_is_not_a_ranking(tmp_path):
    (tmp_path / "ranking.csv").write_text("rank,name\n1,a\n")
    with pytest.raises(InputError, match="no column.*case_id, report"):
        read_ranking(tmp_path)
    with pytest.raises(InputError, match="No ranking.csv"):
        read_ranking(tmp_path / "elsewhere")


def test_relative_inputs_are_found_from_the_output_folder(folder, hippocampus_cases):
    case = read_ranking(folder).cases[0]
    source = next(c for c in hippocampus_cases if c.case_id == case.case_id)
    local = folder / "inputs"
    local.mkdir()
    shutil.copy(source.images[0], local / "image.nii.gz")
    shutil.copy(source.label, local / "seg.nii.gz")
    report = json.loads(case.report.read_text())
    report["inputs"] = {"images": ["inputs/image.nii.gz"], "segmentation": "inputs/seg.nii.gz"}
    case.report.write_text(json.dumps(report))
    files = case_files(read_ranking(folder).cases[0], folder)
    assert files.images == ((local / "image.nii.gz").resolve(),) and files.segmentation == (local / "seg.nii.gz")


def test_image_and_seg_columns_of_the_ranking_win_over_the_report(folder, hippocampus_cases):
    other = hippocampus_cases[5]
    rewrite_ranking(folder, lambda rows: [{**r, "image": str(other.images[0]), "seg": str(other.label)}
                                          for r in rows])
    files = case_files(read_ranking(folder).cases[0], folder)
    assert files.images == (other.images[0].resolve(),) and files.segmentation == other.label.resolve()


def test_a_missing_input_file_is_named_with_where_it_was_looked_for(folder):
    case = read_ranking(folder).cases[0]
    report = json.loads(case.report.read_text())
    report["inputs"] = {"images": ["gone/image.nii.gz"], "segmentation": "gone/seg.nii.gz"}
    case.report.write_text(json.dumps(report))
    with pytest.raises(InputError, match="image of case .* is not found: gone/image.nii.gz"):
        case_files(read_ranking(folder).cases[0], folder)


# ----------------------------------------------------------------------------------------------
# The status file


def test_an_update_changes_only_the_fields_given_and_keeps_other_cases(tmp_path):
    statuses = ReviewStatusFile(tmp_path)
    statuses.update("a", status="in_progress", reviewer="A", items={"box": {"0": "fixed"}}, current_box=0)
    statuses.update("b", status="reviewed", rating="accept", reviewer="B")
    statuses.update("a", rating="Minor fixes")
    a = statuses.get("a")
    assert (a.status, a.rating, a.reviewer, a.items, a.current_box) == (
        ReviewStatus.IN_PROGRESS, CaseRating.MINOR_FIXES, "A", {"box": {"0": "fixed"}}, 0)
    assert statuses.get("b").rating is CaseRating.ACCEPT and statuses.get("c").status is ReviewStatus.PENDING
    statuses.update("a", rating=None)
    assert statuses.get("a").rating is None


def test_fields_and_cases_written_by_a_newer_segqc_are_kept(tmp_path):
    data = {"format": "segqc-review-status", "format_version": 1, "note": "keep me",
            "cases": {"a": {"status": "reviewed", "time_spent_s": 42}}}
    (tmp_path / STATUS_FILE).write_text(json.dumps(data))
    ReviewStatusFile(tmp_path).update("b", status="skipped")
    written = json.loads((tmp_path / STATUS_FILE).read_text())
    assert written["note"] == "keep me" and written["cases"]["a"]["time_spent_s"] == 42
    assert written["cases"]["b"]["status"] == "skipped"


def test_a_damaged_status_file_is_refused_and_left_untouched(tmp_path):
    (tmp_path / STATUS_FILE).write_text('{"format": "segqc-review-status", "cases": {')
    before = (tmp_path / STATUS_FILE).read_bytes()
    with pytest.raises(InputError, match="cannot be read.*left as it is"):
        ReviewStatusFile(tmp_path).update("a", status="reviewed")
    assert (tmp_path / STATUS_FILE).read_bytes() == before


def test_unknown_statuses_and_ratings_are_refused(tmp_path):
    with pytest.raises(ValueError):
        ReviewStatusFile(tmp_path).update("a", status="finished")
    with pytest.raises(InputError, match="Unknown case rating"):
        ReviewStatusFile(tmp_path).update("a", rating="great")
    assert not (tmp_path / STATUS_FILE).exists()


def test_a_write_that_fails_midway_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    statuses = ReviewStatusFile(tmp_path)
    statuses.update("a", status="reviewed")
    before = (tmp_path / STATUS_FILE).read_bytes()

    def crash(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(SegQCError, match="disk is full"):
        statuses.update("b", status="corrected")
    assert (tmp_path / STATUS_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".review_status.lock", STATUS_FILE]


def update_many(folder: str, prefix: str, count: int) -> None:
    statuses = ReviewStatusFile(folder)
    for index in range(count):
        statuses.update(f"{prefix}{index}", status="reviewed", reviewer=prefix)


def test_sessions_writing_at_the_same_time_lose_no_update(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=update_many, args=(str(tmp_path), prefix, 25)) for prefix in ("x", "y")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    assert sorted(ReviewStatusFile(tmp_path).read()) == sorted(f"{p}{i}" for p in "xy" for i in range(25))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a folder this user cannot write")
def test_a_read_only_ranking_folder_says_the_folder_must_be_writable(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(SegQCError, match="must be writable"):
            ReviewStatusFile(tmp_path).update("a", status="reviewed")
    finally:
        tmp_path.chmod(0o755)


# ----------------------------------------------------------------------------------------------
# The queue


def test_next_case_skips_cases_another_session_finished(folder):
    mine, theirs = ReviewQueue(folder, reviewer="me"), ReviewQueue(folder, reviewer="them")
    assert mine.first_to_review() == 0
    theirs.update(1, status=ReviewStatus.CORRECTED, correction_record="x/v0001")
    assert mine.step(0, +1) == 2  # case 2 of the ranking is done elsewhere: the next one to review is 3
    assert mine.step(0, +1, skip_done=False) == 1
    assert mine.step(2, +1) is None and mine.step(2, -1) == 0
    assert mine.entry(1).review.reviewer == "them"


def test_counts_cover_every_status_and_the_cases_qc_failed_on(folder):
    (folder / "failures.json").write_text(json.dumps([{"case_id": "broken", "error": "empty segmentation"}]))
    queue = ReviewQueue(folder, reviewer="me")
    queue.update(0, status="reviewed", rating="accept")
    counts = queue.counts()
    assert counts["reviewed"] == 1 and counts["pending"] == len(queue) - 1 and counts["failed_qc"] == 1


def test_a_status_update_records_who_made_it(folder):
    queue = ReviewQueue(folder, reviewer="Dr. B")
    review = queue.update(2, status="in_progress")
    assert review.reviewer == "Dr. B" and review.updated_utc
    assert json.loads((folder / STATUS_FILE).read_text())["cases"][queue.entry(2).case.case_id]["reviewer"] == "Dr. B"


def test_a_session_holding_the_lock_too_long_is_a_clear_error(tmp_path, monkeypatch):
    from filelock import FileLock

    monkeypatch.setattr(status_module, "LOCK_TIMEOUT_S", 0.2)
    with FileLock(str(tmp_path / ".review_status.lock")):
        with pytest.raises(SegQCError, match="Another review session has held"):
            ReviewStatusFile(tmp_path).update("a", status="reviewed")
    assert not (tmp_path / STATUS_FILE).exists()
