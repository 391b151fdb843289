"""``segqc rank`` checks a dataset with one loaded model, ranks it worst first, resumes and survives bad cases."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from SegQCLib.batch.cases import BatchCase, cases_from_folders
from SegQCLib.batch.results import RANKING_COLUMNS, CaseStatus, read_ranking_csv
from SegQCLib.batch.runner import run_batch
from SegQCLib.batch.workers import ProcessWorkers
from SegQCLib.commands.cli import main as segqc_main
from SegQCLib.engine import QCEngine
from SegQCLib.errors import InputError
from SegQCLib.network.config import ModelConfig
from SegQCLib.network.package import init_model_package
from SegQCLib.quality.postprocess import PostprocessParams
from SegQCLib.quality.regions import RegionParams
from SegQCLib.quality.report import Report

# A small random network: the tests are about the batch machinery, not the model's accuracy.
SMALL_MODEL = dict(widths=[4, 8], blocks_per_stage=[1, 1], strides=[[2, 2, 2], [2, 2, 2]], decoder_from_stage=1,
                   full_res_width=4, case_head_hidden=8, patch_size_zyx=[32, 32, 32])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return init_model_package(tmp_path_factory.mktemp("model") / "small", ModelConfig(**SMALL_MODEL), seed=3)


@pytest.fixture(scope="module")
def engine(model_dir):
    # One torch thread: on a small shared CI machine the network of these tiny volumes is several times
    # faster single-threaded (intra-op threads wait for each other); restored for the other tests.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield QCEngine(model_dir, "cpu")
    torch.set_num_threads(threads)


class CountingEngine:
    """The real engine, counting calls and failing on request (for cases named in ``fail_on``)."""

    def __init__(self, engine: QCEngine, fail_on: tuple[str, ...] = ()) -> None:
        self.engine = engine
        self.fail_on = fail_on
        self.calls: list[str] = []

    def run_case(self, case, **kwargs):
        name = Path(case.segmentation.path).name
        self.calls.append(name)
        if any(name.startswith(f) for f in self.fail_on):
            raise RuntimeError("simulated crash inside the network")
        return self.engine.run_case(case, **kwargs)


def copy_cases(tmp_path: Path, hippocampus_cases, count: int) -> tuple[Path, Path, list[BatchCase]]:
    """Real cases copied into images/ and segs/ (copies: tests change their times and contents)."""
    images, segs = tmp_path / "images", tmp_path / "segs"
    images.mkdir()
    segs.mkdir()
    cases = []
    for case in hippocampus_cases[:count]:
        image = shutil.copy(case.images[0], images / case.images[0].name)
        seg = shutil.copy(case.label, segs / case.label.name)
        cases.append(BatchCase(case.case_id, (Path(image),), Path(seg)))
    return images, segs, cases


@pytest.fixture()
def dataset(tmp_path, hippocampus_cases) -> tuple[Path, Path, list[BatchCase]]:
    return copy_cases(tmp_path, hippocampus_cases, 2)


def write_manifest(path: Path, cases: list[BatchCase]) -> Path:
    lines = ["case_id,image,seg"] + [f"{c.case_id},{c.images[0]},{c.seg}" for c in cases]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rank_cli_ranks_worst_first_and_reports_a_corrupt_case_without_stopping(tmp_path, dataset, model_dir, capsys):
    _, _, cases = dataset
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b not really gzip")
    bad = BatchCase("corrupt_case", cases[0].images, corrupt)
    manifest = write_manifest(tmp_path / "cases.csv", [cases[0], bad, *cases[1:]])
    out = tmp_path / "out"
    code = segqc_main(["rank", "--manifest", str(manifest), "--out", str(out), "--model", str(model_dir),
                       "--device", "cpu", "--progress", "lines"])
    assert code == 1  # some case failed
    assert "1 case(s) failed" in capsys.readouterr().out

    rows = read_ranking_csv(out / "ranking.csv")
    assert tuple(rows[0]) == RANKING_COLUMNS
    assert sorted(r["case_id"] for r in rows) == sorted(c.case_id for c in cases)
    estimates = [float(r["dice_est"]) for r in rows]
    assert estimates == sorted(estimates)
    assert [int(r["rank"]) for r in rows] == list(range(1, len(cases) + 1))
    for row in rows:
        report = Report.load(out / row["report"])
        assert report.case.dice_est == pytest.approx(float(row["dice_est"]), rel=1e-5)
        assert int(row["n_boxes"]) == len(report.boxes)
    failures = json.loads((out / "failures.json").read_text())
    assert [f["case_id"] for f in failures] == ["corrupt_case"]
    assert "corrupt.nii.gz" in failures[0]["error"]
    page = (out / "index.html").read_text()
    assert all(c.case_id in page for c in cases) and "corrupt_case" in page


def test_rank_matches_images_and_segmentations_by_name(tmp_path, dataset, model_dir):
    images, segs, cases = dataset
    (segs / "orphan.nii.gz").write_bytes((segs / cases[0].seg.name).read_bytes())
    out = tmp_path / "out"
    assert segqc_main(["rank", "--images", str(images), "--segs", str(segs), "--out", str(out), "--model",
                       str(model_dir), "--device", "cpu", "--progress", "none", "--thumbnails", "1"]) == 0
    assert sorted(r["case_id"] for r in read_ranking_csv(out / "ranking.csv")) == sorted(c.case_id for c in cases)


def test_a_second_run_resumes_and_reruns_only_incomplete_or_changed_cases(tmp_path, hippocampus_cases, engine):
    _, _, cases = copy_cases(tmp_path, hippocampus_cases, 3)
    out = tmp_path / "out"
    first = run_batch(cases, out, CountingEngine(engine), thumbnails_per_case=1)
    assert {r.status for r in first.rows} == {CaseStatus.DONE}

    counting = CountingEngine(engine)
    again = run_batch(cases, out, counting, thumbnails_per_case=1)
    assert counting.calls == []
    assert {r.status for r in again.rows} == {CaseStatus.RESUMED}
    assert [r.case_id for r in again.rows] == [r.case_id for r in first.rows]

    (out / "cases" / cases[0].case_id / "report.json").unlink()  # killed before the report was written
    truncated = out / "cases" / cases[1].case_id / "report.json"
    truncated.write_text(truncated.read_text()[:100])  # damaged
    later = time.time() + 5
    os.utime(cases[2].seg, (later, later))  # the segmentation was edited after the run
    counting = CountingEngine(engine)
    third = run_batch(cases, out, counting, thumbnails_per_case=1)
    assert sorted(counting.calls) == sorted(c.seg.name for c in cases)
    assert {r.status for r in third.rows} == {CaseStatus.DONE}


def test_a_second_run_with_other_region_parameters_checks_the_cases_again(tmp_path, dataset, engine):
    _, _, cases = dataset
    out = tmp_path / "out"
    run_batch(cases, out, engine, thumbnails_per_case=0)
    counting = CountingEngine(engine)
    lower = PostprocessParams(regions=RegionParams(threshold=0.05))
    again = run_batch(cases, out, counting, lower, thumbnails_per_case=0)
    assert sorted(counting.calls) == sorted(c.seg.name for c in cases)
    assert {r.status for r in again.rows} == {CaseStatus.DONE}
    for row in again.rows:
        assert Report.load(out / row.report).parameters["regions"]["threshold"] == 0.05


def test_a_second_run_with_another_model_checks_the_cases_again(tmp_path, dataset, engine):
    _, _, cases = dataset
    out = tmp_path / "out"
    run_batch(cases[:1], out, engine, thumbnails_per_case=0)
    other_model = init_model_package(tmp_path / "other", ModelConfig(**SMALL_MODEL), seed=4)
    other = QCEngine(other_model, "cpu")
    again = run_batch(cases[:1], out, other, thumbnails_per_case=0)
    assert again.rows[0].status is CaseStatus.DONE
    assert Report.load(out / again.rows[0].report).model["sha256"] == other.model_info["sha256"]


def test_worker_processes_with_another_model_do_not_resume_its_reports(tmp_path, dataset, engine, monkeypatch):
    _, _, cases = dataset
    out = tmp_path / "out"
    run_batch(cases[:1], out, engine, thumbnails_per_case=0)
    handed_over = []
    monkeypatch.setattr(ProcessWorkers, "run_cases", lambda self, todo, *rest: handed_over.extend(todo))
    run_batch(cases[:1], out, ProcessWorkers("other_model", model_sha256="0" * 64), thumbnails_per_case=0)
    assert [c.case_id for c in handed_over] == [cases[0].case_id]
    handed_over.clear()
    same = ProcessWorkers("same_model", model_sha256=engine.model_info["sha256"])
    assert run_batch(cases[:1], out, same, thumbnails_per_case=0).rows[0].status is CaseStatus.RESUMED
    assert handed_over == []


def test_missing_thumbnails_are_redrawn_on_resume(tmp_path, dataset, engine):
    _, _, cases = dataset
    out = tmp_path / "out"
    run_batch(cases[:1], out, engine, thumbnails_per_case=2)
    shutil.rmtree(out / "thumbnails")
    resumed = run_batch(cases[:1], out, engine, thumbnails_per_case=2)
    assert resumed.rows[0].status is CaseStatus.RESUMED
    assert len(resumed.rows[0].thumbnails) == 2
    assert all((out / src).is_file() for src, _ in resumed.rows[0].thumbnails)


def test_an_unexpected_error_in_one_case_does_not_stop_the_batch(tmp_path, dataset, engine):
    _, _, cases = dataset
    flaky = CountingEngine(engine, fail_on=(cases[1].seg.name,))
    result = run_batch(cases, tmp_path / "out", flaky, thumbnails_per_case=0)
    assert [r.case_id for r in result.failed] == [cases[1].case_id]
    assert "simulated crash" in result.failed[0].error
    assert sum(r.status is CaseStatus.DONE for r in result.rows) == len(cases) - 1


def test_pipelined_and_serial_runs_give_the_same_ranking(tmp_path, dataset, engine):
    _, _, cases = dataset
    serial = run_batch(cases, tmp_path / "serial", engine, prefetch=0, thumbnails_per_case=0)
    pipelined = run_batch(cases, tmp_path / "pipelined", engine, prefetch=2, thumbnails_per_case=0)
    assert [(r.case_id, r.dice_est, r.n_boxes) for r in serial.rows] == \
        [(r.case_id, r.dice_est, r.n_boxes) for r in pipelined.rows]
    assert pipelined.stats.read_s > 0 and pipelined.stats.compute_s > 0 and pipelined.stats.write_s > 0


def test_worker_processes_give_the_same_rows_as_one_process(tmp_path, dataset, model_dir, engine):
    """The per-case step is self-contained: shipped to other processes (as a cluster would) it gives the same rows."""
    _, _, cases = dataset
    local = run_batch(cases, tmp_path / "local", engine, thumbnails_per_case=1)
    remote = run_batch(cases, tmp_path / "remote", ProcessWorkers(str(model_dir), count=2), thumbnails_per_case=1)
    assert [r.case_id for r in remote.rows] == [r.case_id for r in local.rows]
    for mine, theirs in zip(local.rows, remote.rows):
        assert theirs.status is CaseStatus.DONE
        assert theirs.dice_est == pytest.approx(mine.dice_est, rel=1e-5)  # other thread count: float round-off
        assert (theirs.n_boxes, theirs.worst_slice) == (mine.n_boxes, mine.worst_slice)
        assert (tmp_path / "remote" / theirs.report).is_file()
    assert remote.stats.compute_s > 0


def test_cases_from_folders_pairs_channels_and_lists_orphans(tmp_path):
    images, segs = tmp_path / "i", tmp_path / "s"
    images.mkdir()
    segs.mkdir()
    for name in ["a_0000.nii.gz", "a_0001.nii.gz", "b.nii.gz", "c_0000.nrrd", "notes.txt"]:
        (images / name).write_bytes(b"x")
    for name in ["a.nii.gz", "b.nii.gz", "c.nii.gz", "d.nii.gz"]:
        (segs / name).write_bytes(b"x")
    cases, orphans = cases_from_folders(images, segs)
    assert [(c.case_id, [p.name for p in c.images]) for c in cases] == [
        ("a", ["a_0000.nii.gz", "a_0001.nii.gz"]), ("b", ["b.nii.gz"]), ("c", ["c_0000.nrrd"])]
    assert len(orphans) == 1 and orphans[0].startswith("d.nii.gz")


def test_cases_from_folders_pairs_slicer_seg_nrrd_files_by_case_name(tmp_path):
    images, segs = tmp_path / "i", tmp_path / "s"
    images.mkdir()
    segs.mkdir()
    (images / "a_0000.nii.gz").write_bytes(b"x")
    (segs / "a.seg.nrrd").write_bytes(b"x")
    cases, orphans = cases_from_folders(images, segs)
    assert [(c.case_id, c.seg.name) for c in cases] == [("a", "a.seg.nrrd")]
    assert orphans == []


def test_cases_from_folders_pairs_case_ids_that_end_in_four_digits(tmp_path):
    images, segs = tmp_path / "i", tmp_path / "s"
    images.mkdir()
    segs.mkdir()
    for name in ["amos_0001.nii.gz", "amos_0002.nii.gz"]:  # one image per case, named like its segmentation
        (images / name).write_bytes(b"x")
        (segs / name).write_bytes(b"x")
    cases, orphans = cases_from_folders(images, segs)
    assert [(c.case_id, [p.name for p in c.images]) for c in cases] == [
        ("amos_0001", ["amos_0001.nii.gz"]), ("amos_0002", ["amos_0002.nii.gz"])]
    assert orphans == []


def test_duplicate_case_ids_are_refused(tmp_path, engine):
    case = BatchCase("same", (tmp_path / "i.nii.gz",), tmp_path / "s.nii.gz")
    with pytest.raises(InputError, match="unique"):
        run_batch([case, case], tmp_path / "out", engine)


class FakeRay:
    """The few Ray calls RayWorkers makes, run synchronously in this process (Ray itself cannot start
    its local node in this sandbox; with Ray installed the same code ships tasks to a cluster)."""

    def __init__(self) -> None:
        self.max_pending = 0

    def is_initialized(self) -> bool:
        return True

    def remote(self, **resources):
        fake = self

        def wrap(function):
            class Task:
                @staticmethod
                def remote(*args):
                    return ("ref", function, args)

            return Task

        fake.resources = resources
        return wrap

    def wait(self, refs, num_returns=1):
        self.max_pending = max(self.max_pending, len(refs))
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        _, function, args = ref
        return function(*args)


def test_ray_workers_ship_the_per_case_step_and_bound_tasks_in_flight(tmp_path, dataset, model_dir, engine,
                                                                      monkeypatch):
    from SegQCLib.batch import ray_workers as batch_ray

    fake = FakeRay()
    monkeypatch.setattr(batch_ray, "_ray", lambda: fake)
    _, _, cases = dataset
    threads = torch.get_num_threads()
    result = run_batch(cases, tmp_path / "ray", batch_ray.RayWorkers(str(model_dir), max_in_flight=1),
                       thumbnails_per_case=0)
    torch.set_num_threads(threads)
    local = run_batch(cases, tmp_path / "local", engine, thumbnails_per_case=0)
    assert fake.resources == {"num_cpus": 1.0, "num_gpus": 0.0} and fake.max_pending == 1
    assert [(r.case_id, r.status) for r in result.rows] == [(r.case_id, CaseStatus.DONE) for r in local.rows]
    assert [r.dice_est for r in result.rows] == pytest.approx([r.dice_est for r in local.rows], rel=1e-5)
