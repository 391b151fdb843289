"""The corrections store keeps every expert correction whole, versioned, checksummed and inside its folder."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from SegQCLib.commands.cli import main as segqc_main
from SegQCLib.corrections.names import case_key, parse_record_id
from SegQCLib.corrections.store import CorrectionStore
from SegQCLib.corrections.verify import ProblemKind
from SegQCLib.errors import GeometryMismatchError, InputError, ResourceError, SegQCError
from SegQCLib.geometry import Geometry
from SegQCLib.io.image_files import read_image, read_labelmap, write_array, write_labelmap
from SegQCLib.io.volumes import LabelMap, SegmentStyle, Volume
from SegQCLib.quality.metrics import multiclass_dice


def weak_segmentation(truth: LabelMap) -> LabelMap:
    """A plausible model mistake: class 2 missed entirely and class 1 leaking one voxel along x."""
    array = truth.array.copy()
    array[array == 2] = 0
    leak = np.roll(truth.array == 1, 1, axis=2) & (array == 0)
    array[leak] = 1
    return LabelMap(array, truth.geometry)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256), folders as '<dir>'."""
    result = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        result[key] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def synthetic_case(seed: int = 0, shape=(6, 12, 10)) -> tuple[Volume, LabelMap, LabelMap]:
    rng = np.random.default_rng(seed)
    geometry = Geometry(shape, (0.8, 0.9, 2.5), (10.0, -5.0, 3.0))
    image = Volume(rng.normal(100, 20, shape).astype(np.float32), geometry)
    truth = np.zeros(shape, np.uint8)
    truth[1:5, 3:9, 2:8] = 1
    truth[2:4, 4:7, 3:6] = 2
    original = truth.copy()
    original[1, 3:9, 2:8] = 0
    return image, LabelMap(original, geometry), LabelMap(truth, geometry)


# --- round trip on real data --------------------------------------------------------------------


def test_record_round_trip_keeps_images_masks_error_maps_and_metadata(tmp_path, hippocampus_case):
    image, truth = hippocampus_case
    original = weak_segmentation(truth)
    store = CorrectionStore(tmp_path / "store")
    qc_report = {"case": {"dice_est": 0.71, "qi": 0.4}, "boxes": [], "slices": []}
    boxes = [{"label": 2, "slice": 17, "bbox_zyx": [[17, 10, 10], [18, 20, 20]], "status": "fixed"}]
    record = store.add("hippocampus_001", [image], original, truth, reviewer="Dr. A. Expert", qc_report=qc_report,
                       model_info={"name": "weak-unet", "version": "0.3", "sha256": "ab" * 32},
                       reviewed_boxes=boxes, review_duration_s=84.5)

    loaded = store.load(record.record_id)
    assert loaded.record_id == "hippocampus_001/v0001"
    np.testing.assert_array_equal(loaded.read_images()[0].array, image.array)
    np.testing.assert_array_equal(loaded.read_original().array, original.array)
    np.testing.assert_array_equal(loaded.read_corrected().array, truth.array)
    assert loaded.read_corrected().geometry.matches(truth.geometry)
    errors = loaded.read_error_maps()
    assert sorted(errors) == [1, 2]
    for label, error in errors.items():
        np.testing.assert_array_equal(error, (original.array == label) ^ (truth.array == label))
    meta = loaded.metadata
    assert (meta.case_id, meta.reviewer, meta.review_duration_s) == ("hippocampus_001", "Dr. A. Expert", 84.5)
    assert meta.model == {"name": "weak-unet", "version": "0.3", "sha256": "ab" * 32}
    assert meta.qc_prediction == qc_report and meta.reviewed_boxes == boxes
    assert meta.true_metrics["dice"] == pytest.approx(multiclass_dice(original.array, truth.array, [1, 2]))
    assert meta.true_metrics["classes"][1]["dice"] == 0.0  # class 2 was missed entirely
    assert meta.created_utc.endswith("+00:00")
    for name, info in meta.files.items():
        assert hashlib.sha256((loaded.path / name).read_bytes()).hexdigest() == info["sha256"]


def test_the_rating_and_the_segments_colours_and_terminology_are_recorded_and_read_back(tmp_path):
    image, original, truth = synthetic_case()
    terminology = "Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical " \
                  "Structure~SCT^5366008^Hippocampus~^^~Anatomic codes - DICOM master list~^^~^^"
    styles = {1: SegmentStyle((0.9, 0.3, 0.1), terminology), 2: SegmentStyle((0.1, 0.5, 0.8))}
    corrected = LabelMap(truth.array, truth.geometry, {1: "anterior", 2: "posterior"}, styles=styles)
    record = CorrectionStore(tmp_path / "s").add("c", [image], original, corrected, rating="Minor fixes")
    assert record.metadata.rating == "minor_fixes"
    again = record.read_corrected()
    assert again.styles == styles and again.names == {1: "anterior", 2: "posterior"}
    seg_nrrd = read_labelmap(write_labelmap(tmp_path / "corrected.seg.nrrd", again))
    assert seg_nrrd.styles == styles


def test_an_unknown_rating_is_refused_before_anything_is_written(tmp_path):
    image, original, truth = synthetic_case()
    with pytest.raises(InputError, match="Unknown case rating"):
        CorrectionStore(tmp_path / "s").add("c", [image], original, truth, rating="perfect")
    assert not (tmp_path / "s" / "records").exists()


def test_integer_images_are_stored_losslessly_as_integers(tmp_path, hippocampus_case):
    image, truth = hippocampus_case
    record = CorrectionStore(tmp_path / "s").add("c", [image.path], weak_segmentation(truth), truth)
    stored = read_image(record.image_paths[0])
    np.testing.assert_array_equal(stored.array, image.array)
    assert stored.geometry.matches(image.geometry)


def test_model_sha256_is_computed_from_the_model_file(tmp_path):
    image, original, truth = synthetic_case()
    model_file = tmp_path / "model.pt"
    model_file.write_bytes(b"weights" * 100)
    record = CorrectionStore(tmp_path / "s").add("c", [image], original, truth,
                                                 model_info={"name": "m", "path": str(model_file)})
    assert record.metadata.model["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()


# --- versions and listing ---------------------------------------------------------------------------


def test_recording_a_case_again_adds_a_version_and_never_overwrites(tmp_path):
    image, original, truth = synthetic_case()
    store = CorrectionStore(tmp_path / "s")
    first = store.add("case-7", [image], original, truth, reviewer="first")
    first_files = tree_digest(first.path)
    second = store.add("case-7", [image], truth, truth, reviewer="second")
    assert [r.record_id for r in store.list()] == ["case-7/v0001", "case-7/v0002"]
    assert tree_digest(first.path) == first_files
    assert second.metadata.true_metrics["dice"] == 1.0
    assert [r.reviewer for r in store.latest()] == ["second"]


def test_quarantined_version_numbers_are_not_reused(tmp_path):
    image, original, truth = synthetic_case()
    store = CorrectionStore(tmp_path / "s")
    store.add("c", [image], original, truth)
    damaged = store.add("c", [image], original, truth)
    (damaged.path / "corrected.nii.gz").write_bytes(b"garbage")
    store.verify(repair=True)
    assert store.add("c", [image], original, truth).record_id == "c/v0003"


def test_list_rebuilds_a_torn_index_from_the_records(tmp_path):
    image, original, truth = synthetic_case()
    store = CorrectionStore(tmp_path / "s")
    ids = [store.add(f"c{i}", [image], original, truth).record_id for i in range(3)]
    store.index_path.write_text(store.index_path.read_text()[:-25])  # a write cut off mid-line
    assert [r.record_id for r in store.list()] == ids
    assert store.verify().ok


def test_list_rebuilds_a_missing_index(tmp_path):
    image, original, truth = synthetic_case()
    store = CorrectionStore(tmp_path / "s")
    ids = [store.add(f"c{i}", [image], original, truth).record_id for i in range(2)]
    store.index_path.unlink()
    assert [r.record_id for r in store.list()] == ids
    assert store.index_path.is_file()


# --- names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", ["../../outside", "..", "/etc/passwd", "a/../../b", "..\\..\\win", "CON", "."])
def test_hostile_case_ids_stay_inside_the_records_folder(tmp_path, hostile):
    image, original, truth = synthetic_case()
    store = CorrectionStore(tmp_path / "store")
    record = store.add(hostile, [image], original, truth)
    assert record.path.resolve().parent.parent == (tmp_path / "store" / "records").resolve()
    assert record.case_id == hostile
    assert store.load(record.record_id).case_id == hostile
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_distinct_case_ids_never_share_a_folder():
    assert len({case_key(x) for x in ["a/b", "a_b", "a b", "a\\b", "a..b", "a_b~"]}) == 6
    assert case_key("hippocampus_001") == "hippocampus_001"


@pytest.mark.parametrize("bad", ["", "   ", "a\nb", "a\x00b", "tab\there", "x" * 129, "rtl\u202eoverride"])
def test_case_ids_with_control_characters_or_too_long_are_rejected(tmp_path, bad):
    image, original, truth = synthetic_case()
    with pytest.raises(InputError):
        CorrectionStore(tmp_path / "s").add(bad, [image], original, truth)
    assert not (tmp_path / "s").exists()


def test_reviewer_names_are_validated_and_only_stored_in_json(tmp_path):
    image, original, truth = synthetic_case()
    store = CorrectionStore(tmp_path / "s")
    with pytest.raises(InputError):
        store.add("c", [image], original, truth, reviewer="evil\n{\"record_id\": \"x\"}")
    record = store.add("c", [image], original, truth, reviewer="  ../../Dr. O'Neil  ")
    assert record.reviewer == "../../Dr. O'Neil"
    assert all("Neil" not in p.name for p in (tmp_path / "s").rglob("*"))


@pytest.mark.parametrize("record_id", ["../x/v0001", "c/v1", "c/../../v0001", "/abs/v0001", "c/v0001/.."])
def test_record_ids_that_could_escape_are_refused(record_id):
    with pytest.raises(InputError):
        parse_record_id(record_id)


# --- bad inputs, full disk, read-only folder ----------------------------------------------------------


def test_masks_on_another_grid_are_refused_before_anything_is_written(tmp_path):
    image, original, truth = synthetic_case()
    shifted = LabelMap(truth.array, Geometry(truth.geometry.shape_zyx, truth.geometry.spacing_xyz_mm, (0, 0, 0)))
    with pytest.raises(GeometryMismatchError):
        CorrectionStore(tmp_path / "s").add("c", [image], original, shifted)
    assert not (tmp_path / "s").exists()


def test_masks_on_another_grid_get_advice_without_options_the_corrections_command_lacks(tmp_path):
    image, original, truth = synthetic_case()
    shifted = LabelMap(truth.array, Geometry(truth.geometry.shape_zyx, truth.geometry.spacing_xyz_mm, (0, 0, 0)))
    with pytest.raises(GeometryMismatchError, match="Corrected segmentation") as raised:
        CorrectionStore(tmp_path / "s").add("c", [image], original, shifted)
    assert "--resample-seg" not in str(raised.value)  # `segqc corrections add` has no such option


def test_a_non_store_folder_is_never_written_into(tmp_path):
    image, original, truth = synthetic_case()
    (tmp_path / "mydata").mkdir()
    (tmp_path / "mydata" / "notes.txt").write_text("precious")
    with pytest.raises(InputError, match="not a SegQC corrections store"):
        CorrectionStore(tmp_path / "mydata").add("c", [image], original, truth)
    assert [p.name for p in (tmp_path / "mydata").iterdir()] == ["notes.txt"]


def _inputs_on_disk(tmp_path: Path) -> tuple[list[Path], dict[str, str]]:
    image, original, truth = synthetic_case()
    inputs = tmp_path / "inputs"
    paths = [write_array(inputs / "img.nii.gz", image.array, image.geometry),
             write_labelmap(inputs / "orig.nii.gz", original), write_labelmap(inputs / "corr.nii.gz", truth)]
    return paths, tree_digest(inputs)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_full_or_read_only_disk_gives_a_clear_error_and_changes_nothing(tmp_path, monkeypatch, code):
    (image_path, orig_path, corr_path), inputs_before = _inputs_on_disk(tmp_path)
    store = CorrectionStore(tmp_path / "s")
    store.add("c", [image_path], orig_path, corr_path)
    store_before = tree_digest(store.root)

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    expected = ResourceError if code == errno.ENOSPC else SegQCError
    with pytest.raises(expected) as info:
        store.add("c", [image_path], orig_path, corr_path)
    monkeypatch.undo()
    message = str(info.value)
    assert ("disk is full" if code == errno.ENOSPC else "read-only") in message
    assert "Nothing was recorded" in message and "unchanged" in message
    assert tree_digest(store.root) == store_before
    assert tree_digest(tmp_path / "inputs") == inputs_before
    assert store.verify().ok


def test_a_failing_final_rename_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    image, original, truth = synthetic_case()
    original_before = original.array.copy()
    store = CorrectionStore(tmp_path / "s")
    store.add("c", [image], original, truth)
    store_before = tree_digest(store.root)
    real_replace = os.replace

    def replace_failing_for_folders(src, dst):
        if Path(src).is_dir():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_failing_for_folders)
    with pytest.raises(SegQCError, match="read-only"):
        store.add("new-case", [image], original, truth)
    monkeypatch.undo()
    assert tree_digest(store.root) == store_before
    np.testing.assert_array_equal(original.array, original_before)


# --- verify ---------------------------------------------------------------------------------------


def test_verify_finds_a_changed_file_and_repair_quarantines_only_that_record(tmp_path):
    image, original, truth = synthetic_case()
    store = CorrectionStore(tmp_path / "s")
    good = store.add("good", [image], original, truth)
    bad = store.add("bad", [image], original, truth)
    corrupted = bytearray((bad.path / "original.nii.gz").read_bytes())
    corrupted[-3] ^= 0xFF
    (bad.path / "original.nii.gz").write_bytes(bytes(corrupted))

    report = store.verify()
    assert not report.ok and report.records_ok == 1
    assert [(p.kind, p.record_id) for p in report.problems] == [(ProblemKind.CORRUPT_RECORD, "bad/v0001")]
    assert "sha256" in report.problems[0].detail
    with pytest.raises(InputError, match="damaged"):
        store.load("bad/v0001")

    repaired = store.verify(repair=True)
    assert len(repaired.quarantined) == 1
    quarantined = Path(repaired.quarantined[0])
    assert json.loads(Path(f"{quarantined}.reason.json").read_text())["kind"] == "corrupt_record"
    after = store.verify()  # the damaged record is lost for training: said every time, never "whole" again
    assert not after.ok and after.records_ok == after.records_checked == 1
    assert [(p.kind, p.record_id) for p in after.problems] == [(ProblemKind.LOST_RECORD, "bad/v0001")]
    assert quarantined.name in after.problems[0].detail
    assert [r.record_id for r in store.list()] == [good.record_id]


def test_verify_detects_edited_metadata(tmp_path):
    image, original, truth = synthetic_case()
    store = CorrectionStore(tmp_path / "s")
    record = store.add("c", [image], original, truth, reviewer="honest")
    path = record.path / "record.json"
    path.write_text(path.read_text().replace('"honest"', '"forged"'))
    assert [p.kind for p in store.verify().problems] == [ProblemKind.CORRUPT_RECORD]


def test_verify_explains_unknown_files_and_repair_moves_them_aside(tmp_path):
    image, original, truth = synthetic_case()
    store = CorrectionStore(tmp_path / "s")
    store.add("c", [image], original, truth)
    (store.records_dir / "c" / "notes.txt").write_text("hello")
    report = store.verify()
    assert [p.kind for p in report.problems] == [ProblemKind.UNKNOWN_ENTRY]
    store.verify(repair=True)
    assert store.verify().ok
    assert any(p.name.endswith("notes.txt") for p in store.quarantine_dir.iterdir())


# --- command line ---------------------------------------------------------------------------------


def test_cli_add_list_verify(tmp_path, capsys, hippocampus_cases):
    case = hippocampus_cases[1]
    truth = read_labelmap(case.label)
    original_path = write_labelmap(tmp_path / "weak.nii.gz", weak_segmentation(truth))
    store = str(tmp_path / "store")
    for _ in range(2):
        assert segqc_main(["corrections", "add", "--store", store, "--case-id", case.case_id, "--image",
                           str(case.images[0]), "--original", str(original_path), "--corrected", str(case.label),
                           "--reviewer", "cli user", "--review-duration-s", "30", "--rating", "major_fixes"]) == 0
    capsys.readouterr()
    assert segqc_main(["corrections", "list", "--store", store, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["record_id"] for e in lines] == [f"{case.case_id}/v0001", f"{case.case_id}/v0002"]
    assert CorrectionStore(store).load(lines[0]["record_id"]).metadata.rating == "major_fixes"
    assert segqc_main(["corrections", "verify", "--store", store]) == 0
    (Path(store) / ".tmp" / "leftover.1234").mkdir()
    assert segqc_main(["corrections", "verify", "--store", store]) != 0
    assert "incomplete_write" in capsys.readouterr().out
    assert segqc_main(["corrections", "verify", "--store", store, "--repair"]) == 0
    assert segqc_main(["corrections", "verify", "--store", store]) == 0


def test_cli_reports_a_missing_store_clearly(tmp_path, capsys):
    assert segqc_main(["corrections", "list", "--store", str(tmp_path / "nope")]) == 1
    assert "not found" in capsys.readouterr().err



def test_repair_leaves_a_write_in_progress_alone(tmp_path):
    image, original, truth = synthetic_case()
    store = CorrectionStore(tmp_path / "s")
    store.add("c", [image], original, truth)
    busy = store.tmp_dir / "other.writer"
    busy.mkdir()
    lock = FileLock(str(store.tmp_dir / "other.writer.lock"))
    assert lock.acquire(timeout=0)  # another writer (a separate lock holder) is still writing
    try:
        report = store.verify(repair=True)
        assert report.ok and report.in_progress == [str(busy)]
        assert busy.is_dir()
    finally:
        lock.release()
    assert [p.kind for p in store.verify().problems] == [ProblemKind.INCOMPLETE_WRITE] * 2  # folder + lock file
