"""A write that fails (disk full, I/O error, file-size limit) or a process killed while writing never leaves a
damaged file vouched for: the command exits 1 with a message, and the earlier state (store records, report and
error maps, exports) is exactly as it was.  Failures are made real: strace makes a chosen ``write()`` return
ENOSPC/EIO, RLIMIT_FSIZE makes writes fail with EFBIG, and a small tmpfs really runs full."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from fault_injection import (
    file_size_limit,
    first_write_of_each_file,
    inject,
    needs_strace,
    run,
    segqc,
    small_tmpfs,
    trace,
    tree_bytes,
)

from SegQCLib.corrections.store import CorrectionStore
from SegQCLib.geometry import Geometry
from SegQCLib.io.image_files import read_image, write_array
from SegQCLib.quality.report import Report
from SegQCLib.staged_files import STAGING_PREFIX, has_unfinished_commit, recover_staged

pytestmark = pytest.mark.skipif(os.name != "posix", reason="fault injection needs POSIX (strace, rlimits, signals)")

SHAPE = (16, 48, 40)
GEOMETRY = Geometry(SHAPE, (0.9, 0.8, 2.0), (5.0, -3.0, 1.0))


@pytest.fixture
def case_files(tmp_path: Path) -> dict[str, Path]:
    """An image (incompressible noise, so its file takes several writes), a segmentation, its correction and
    two error maps, as files."""
    rng = np.random.default_rng(7)
    folder = tmp_path / "inputs"
    seg = np.zeros(SHAPE, np.uint8)
    seg[4:12, 10:38, 8:30] = 1
    seg[6:10, 20:30, 12:24] = 2
    corrected = seg.copy()
    corrected[4, 10:38, 8:30] = 0
    maps = folder / "maps"
    files = {
        "image": write_array(folder / "image.nii.gz", rng.normal(100, 30, SHAPE).astype(np.float32), GEOMETRY),
        "seg": write_array(folder / "seg.nii.gz", seg, GEOMETRY),
        "corrected": write_array(folder / "corrected.nii.gz", corrected, GEOMETRY),
        "maps": maps,
    }
    for label in (1, 2):
        write_array(maps / f"error_prob_{label}.nii.gz", rng.random(SHAPE, np.float32), GEOMETRY)
    return files


def add_command(store: Path, files: dict[str, Path], case_id: str = "new case") -> list[str]:
    return segqc("corrections", "add", "--store", store, "--case-id", case_id, "--image", files["image"],
                 "--original", files["seg"], "--corrected", files["corrected"])


def seeded_store(path: Path, files: dict[str, Path]) -> CorrectionStore:
    store = CorrectionStore(path)
    store.add("earlier case", [files["image"]], files["seg"], files["corrected"], reviewer="earlier")
    return store


def assert_store_unchanged(store: CorrectionStore, before: dict[str, bytes]) -> None:
    after = tree_bytes(store.root)
    kept = {k: v for k, v in after.items() if not k.startswith(".tmp/")}
    assert kept == {k: v for k, v in before.items() if not k.startswith(".tmp/")}
    assert not [k for k in after if k.startswith(".tmp/")], "a partial record or a writer's lock is left"
    assert [r.reviewer for r in store.list()] == ["earlier"]
    report = store.verify()
    assert report.ok and report.records_ok == 1, report.to_text()


def assert_failed_cleanly(result, *phrases: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "segqc: error:" in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr[-3000:]


# --- corrections store ------------------------------------------------------------------------------
@needs_strace
def test_a_write_failing_in_any_file_of_a_new_record_records_nothing_and_says_so(tmp_path, case_files):
    pristine = tmp_path / "pristine"
    seeded_store(pristine, case_files)
    traced = tmp_path / "traced"
    shutil.copytree(pristine, traced)
    result, calls = trace(add_command(traced, case_files), "write", tmp_path / "add.strace")
    assert result.returncode == 0, result.stderr
    targets = first_write_of_each_file(calls, traced / ".tmp")
    assert len(targets) >= 6  # image, original, corrected, two error maps, record.json
    for number, call in enumerate(targets):
        store_dir = tmp_path / f"store{number}"
        shutil.copytree(pristine, store_dir)
        before = tree_bytes(store_dir)
        for error in ("ENOSPC", "EIO") if number == 0 else ("ENOSPC",):
            outcome = inject(add_command(store_dir, case_files), call, error)
            assert_failed_cleanly(outcome, "Nothing was recorded")
            assert_store_unchanged(CorrectionStore(store_dir), before)
    # The same command without a failure records the correction whole (in the last store).
    assert run(add_command(store_dir, case_files)).returncode == 0
    assert CorrectionStore(store_dir).verify().ok


def test_a_new_record_beyond_the_file_size_limit_records_nothing(tmp_path, case_files):
    store = seeded_store(tmp_path / "store", case_files)
    before = tree_bytes(store.root)
    outcome = run(add_command(store.root, case_files), preexec=file_size_limit(40_000))
    assert_failed_cleanly(outcome, "Nothing was recorded")
    assert_store_unchanged(store, before)


def test_a_store_on_a_disk_that_runs_full_holds_only_whole_records(tmp_path, case_files):
    with small_tmpfs(tmp_path / "disk", 1024) as disk:
        store_dir = disk / "store"
        recorded = 0
        for attempt in range(40):
            outcome = run(add_command(store_dir, case_files, f"case {attempt}"))
            if outcome.returncode != 0:
                assert_failed_cleanly(outcome, "Nothing was recorded")
                break
            recorded += 1
        else:
            pytest.fail("the 1 MB disk never ran full")
        store = CorrectionStore(store_dir)
        report = store.verify()
        assert recorded > 0 and report.records_ok == report.records_checked == recorded, report.to_text()
        for record in store.list():
            np.testing.assert_array_equal(store.load(record.record_id).read_images()[0].array,
                                          read_image(case_files["image"]).array)


# --- report and error maps -------------------------------------------------------------------------
def estimate_command(files: dict[str, Path], out: Path, threshold: str = "0.5") -> list[str]:
    return segqc("estimate", "--seg", files["seg"], "--error-prob", files["maps"], "--out", out,
                 "--threshold", threshold)


@pytest.fixture
def earlier_outputs(tmp_path, case_files) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path / "earlier"
    assert run(estimate_command(case_files, out)).returncode == 0
    return out, tree_bytes(out)


def traced_rerun(tmp_path: Path, case_files: dict[str, Path], earlier: Path, syscalls: str):
    """The rerun the tests below vary (estimate at threshold 0.3 into a copy of the earlier outputs) under strace:
    its result, the traced calls, and the copy's folder."""
    traced = tmp_path / "traced"
    shutil.copytree(earlier, traced)
    result, calls = trace(estimate_command(case_files, traced, "0.3"), syscalls, tmp_path / "estimate.strace")
    return result, calls, traced


@needs_strace
def test_a_write_failing_in_any_map_or_the_report_keeps_the_earlier_outputs(tmp_path, case_files, earlier_outputs):
    earlier, before = earlier_outputs
    result, calls, traced = traced_rerun(tmp_path, case_files, earlier, "write")
    assert result.returncode == 0, result.stderr
    targets = first_write_of_each_file(calls, traced)
    assert len(targets) >= 3  # two maps and the report
    for number, call in enumerate(targets):
        out = tmp_path / f"out{number}"
        shutil.copytree(earlier, out)
        outcome = inject(estimate_command(case_files, out, "0.3"), call)
        assert_failed_cleanly(outcome, "was not written completely" if "error_prob" in call.paths[0] else "")
        assert tree_bytes(out) == before  # earlier report and maps untouched, nothing staged left behind
        assert not list(out.glob(f"{STAGING_PREFIX}*"))


def test_maps_beyond_the_file_size_limit_fail_the_run_and_keep_the_earlier_outputs(earlier_outputs, case_files):
    out, before = earlier_outputs
    outcome = run(estimate_command(case_files, out, "0.3"), preexec=file_size_limit(10_000))  # a map is ~30 KB
    assert_failed_cleanly(outcome, "error_prob_1.nii.gz was not written completely")
    assert tree_bytes(out) == before


def test_outputs_on_a_disk_that_runs_full_fail_the_run_and_keep_the_earlier_outputs(tmp_path, case_files,
                                                                                     earlier_outputs):
    _, earlier = earlier_outputs
    # Room for one set of maps and report and half another (tmpfs rounds each file up to a 4 KB page).
    one_set_kb = sum(len(data) for data in earlier.values()) // 1024 + 4 * len(earlier)
    with small_tmpfs(tmp_path / "disk", one_set_kb * 3 // 2) as disk:
        out = disk / "out"
        assert run(estimate_command(case_files, out)).returncode == 0
        before = tree_bytes(out)
        outcome = run(estimate_command(case_files, out, "0.3"))  # a second set does not fit beside the first
        assert_failed_cleanly(outcome)
        assert tree_bytes(out) == before


@needs_strace
def test_a_run_killed_while_writing_leaves_the_earlier_report_and_maps_readable(tmp_path, case_files,
                                                                                earlier_outputs):
    earlier, before = earlier_outputs
    _, calls, traced = traced_rerun(tmp_path, case_files, earlier, "write")
    for number, call in enumerate(first_write_of_each_file(calls, traced)):
        out = tmp_path / f"out{number}"
        shutil.copytree(earlier, out)
        outcome = inject(estimate_command(case_files, out, "0.3"), call, kill=True)
        assert outcome.returncode == -signal.SIGKILL, outcome.stderr[-2000:]
        visible = {k: v for k, v in tree_bytes(out).items() if not k.startswith(STAGING_PREFIX)}
        assert visible == before
        assert Report.load(out).parameters["regions"]["threshold"] == 0.5
    # The next run finishes normally and removes what the killed one left.
    assert run(estimate_command(case_files, out, "0.3")).returncode == 0
    assert Report.load(out).parameters["regions"]["threshold"] == 0.3
    assert not list(out.glob(f"{STAGING_PREFIX}*"))


@needs_strace
def test_a_run_killed_while_moving_its_files_in_is_finished_by_the_next_writer(tmp_path, case_files,
                                                                              earlier_outputs):
    earlier, _ = earlier_outputs
    _, calls, traced = traced_rerun(tmp_path, case_files, earlier, "rename,renameat,renameat2")
    moves = [c for c in calls if len(c.paths) >= 2 and STAGING_PREFIX in c.paths[0]
             and Path(c.paths[1]).parent == traced]
    assert len(moves) == 3  # two maps, then the report
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    outcome = inject(estimate_command(case_files, out, "0.3"), moves[1], kill=True)  # after the first map
    assert outcome.returncode == -signal.SIGKILL
    assert has_unfinished_commit(out)
    assert not (out / "report.json").exists()  # no report vouches for the mixed maps meanwhile
    recover_staged(out)
    report = Report.load(out)
    assert report.parameters["regions"]["threshold"] == 0.3
    assert tree_bytes(out) == tree_bytes(traced) | {"report.json": (out / "report.json").read_bytes()}
    assert not has_unfinished_commit(out)


def test_an_earlier_label_map_is_not_left_beside_a_new_report_without_that_label(tmp_path, case_files):
    out = tmp_path / "out"
    write_array(out / "error_prob_7.nii.gz", np.zeros(SHAPE, np.float32), GEOMETRY)
    assert run(estimate_command(case_files, out)).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["error_prob_1.nii.gz", "error_prob_2.nii.gz", "report.json"]


# --- exports ---------------------------------------------------------------------------------------
def export_command(store: Path, out: Path) -> list[str]:
    return segqc("corrections", "export", "--store", store, "--format", "qc", "--out", out)


@needs_strace
def test_an_export_whose_copy_fails_exports_nothing(tmp_path, case_files):
    store = seeded_store(tmp_path / "store", case_files)
    before = tree_bytes(store.root)
    _, calls = trace(export_command(store.root, tmp_path / "traced"), "write", tmp_path / "export.strace")
    targets = first_write_of_each_file(calls, tmp_path)
    targets = [c for c in targets if ".partial" in c.paths[0]]
    assert len(targets) >= 4
    for number, call in enumerate(targets):
        out = tmp_path / f"export{number}"
        outcome = inject(export_command(store.root, out), call)
        assert_failed_cleanly(outcome, "Nothing was exported" if "json" not in call.paths[0] else "")
        assert not out.exists() and not list(tmp_path.glob(f".export{number}*"))
        assert tree_bytes(store.root) == before


def test_an_export_beyond_the_file_size_limit_exports_nothing(tmp_path, case_files):
    store = seeded_store(tmp_path / "store", case_files)
    out = tmp_path / "export"
    outcome = run(export_command(store.root, out), preexec=file_size_limit(40_000))
    assert_failed_cleanly(outcome, "Nothing was exported")
    assert not out.exists()


# --- the file-size helper really limits ------------------------------------------------------------
def test_the_file_size_limit_makes_a_plain_python_write_fail(tmp_path):
    code = f"open({str(tmp_path / 'big')!r}, 'wb').write(b'x' * 100000)"
    result = run(["python3", "-c", code], preexec=file_size_limit(10_000))
    assert result.returncode != 0 and "File too large" in result.stderr
    assert json.dumps(os.path.getsize(tmp_path / "big")) == "10000"
