"""``segqc rank --ray`` on a real two-node Ray cluster started by these tests (``ray start --head`` and
``ray start --address``, each with its own temp dir, stopped at the end whatever happens): the ranking equals
the local one, a killed driver resumes, a killed worker is retried once, a corrupt case is reported.

The driver is the real command line in a subprocess (as a user runs it), so killing it is a real kill.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_cluster import LocalRayCluster, TaskWatcher
from synthetic_cases import write_case, write_cases, write_manifest

from SegQCLib.batch.case_steps import process_case_with_model
from SegQCLib.batch.results import CaseStatus, read_ranking_csv
from SegQCLib.batch.runner import run_batch
from SegQCLib.engine import QCEngine
from SegQCLib.network.config import ModelConfig
from SegQCLib.network.package import init_model_package
from SegQCLib.quality.report import REPORT_FILE_NAME

pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray[default]'): the --ray path was not tested")

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL_MODEL = dict(widths=[4, 8], blocks_per_stage=[1, 1], strides=[[2, 2, 2], [2, 2, 2]], decoder_from_stage=1,
                   full_res_width=4, case_head_hidden=8, patch_size_zyx=[32, 32, 32])
# A case big enough that its task is still running when the watcher sees it.
VICTIM_SHAPE_ZYX = (48, 64, 64)
# A bound for a hung driver, not a speed check: a run here takes 15-45 s, but on a machine loaded by other jobs
# (load 15 on 2 cores) importing torch alone took over a minute per process.
DRIVER_TIMEOUT_S = 900
TASK_PREFIX = "segqc-rank:"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Ray keeps a token in ~/.ray/auth_token; one left by an earlier cluster makes a new node's GCS connection
    # fail ("token is missing or incorrect"). Every process of these tests gets a home of its own.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        with LocalRayCluster(tmp_path_factory.mktemp("ray"), worker_nodes=1, cpus_per_node=1) as running:
            yield running


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return init_model_package(tmp_path_factory.mktemp("model") / "small", ModelConfig(**SMALL_MODEL), seed=5)


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> Path:
    return init_model_package(tmp_path_factory.mktemp("model") / "other", ModelConfig(**SMALL_MODEL), seed=6)


def rank_command(manifest: Path, out: Path, model: Path, address: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "SegQCLib.commands.cli", "rank", "--manifest", str(manifest), "--out", str(out),
            "--model", str(model), "--ray", address, "--progress", "lines", "--thumbnails", "1", *extra]


def rank(manifest: Path, out: Path, model: Path, address: str, *extra: str) -> subprocess.CompletedProcess:
    # cwd = the repository: Ray puts the driver's working folder on the workers' path, so they run this checkout.
    return subprocess.run(rank_command(manifest, out, model, address, *extra), capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=DRIVER_TIMEOUT_S)


def ranking(out: Path) -> dict[str, dict[str, str]]:
    rows = read_ranking_csv(out / "ranking.csv")
    ids = [r["case_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"a case appears twice in ranking.csv: {ids}"
    return {r["case_id"]: r for r in rows}


def failures(out: Path) -> dict[str, str]:
    entries = json.loads((out / "failures.json").read_text())
    return {e["case_id"]: e["error"] for e in entries}


def test_two_node_run_gives_the_local_ranking_uses_both_nodes_and_reports_a_corrupt_case(tmp_path, cluster,
                                                                                           model_dir):
    cases = write_cases(tmp_path / "data", 6)
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b not really gzip")
    manifest = write_manifest(tmp_path / "cases.csv", cases)
    with manifest.open("a") as stream:
        stream.write(f"broken,{cases[0].images[0]},{corrupt}\n")

    with TaskWatcher(cluster, TASK_PREFIX) as watcher:
        completed = rank(manifest, tmp_path / "ray", model_dir, cluster.address)
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    assert watcher.nodes_used() == {"head", "node1"}  # both nodes ran cases
    assert [line for line in completed.stderr.splitlines() if line.startswith("[7/7]")]  # progress on the driver

    problems = failures(tmp_path / "ray")
    assert list(problems) == ["broken"] and "corrupt.nii.gz" in problems["broken"]
    assert len(problems["broken"].splitlines()) == 1
    local = run_batch(cases, tmp_path / "local", QCEngine(model_dir, "cpu"), thumbnails_per_case=0)
    on_ray = ranking(tmp_path / "ray")
    assert list(on_ray) == [r.case_id for r in local.rows]
    assert [float(on_ray[r.case_id]["dice_est"]) for r in local.rows] == pytest.approx(
        [r.dice_est for r in local.rows], rel=1e-4)
    assert all((tmp_path / "ray" / row["report"]).is_file() for row in on_ray.values())


def test_a_worker_killed_mid_task_is_retried_once_and_its_case_is_checked(tmp_path, cluster, model_dir):
    cases = write_cases(tmp_path / "data", 3)
    victim = write_case(tmp_path / "data", "victim", VICTIM_SHAPE_ZYX, seed=11)
    manifest = write_manifest(tmp_path / "cases.csv", [*cases, victim])

    with TaskWatcher(cluster, TASK_PREFIX, kills={"victim": 1}) as watcher:
        completed = rank(manifest, tmp_path / "out", model_dir, cluster.address)
    assert [s.title for s in watcher.killed] == [f"ray::{TASK_PREFIX}victim"]
    assert completed.returncode == 0, completed.stderr
    assert watcher.attempts("victim") == 2
    rows = ranking(tmp_path / "out")
    assert sorted(rows) == sorted(c.case_id for c in [*cases, victim])
    assert {r["status"] for r in rows.values()} == {CaseStatus.DONE.value}
    assert (tmp_path / "out" / "cases" / "victim" / REPORT_FILE_NAME).is_file()


def test_a_case_whose_worker_dies_twice_is_reported_failed_and_the_others_are_checked(tmp_path, cluster, model_dir):
    cases = write_cases(tmp_path / "data", 3)
    victim = write_case(tmp_path / "data", "victim", VICTIM_SHAPE_ZYX, seed=12)
    manifest = write_manifest(tmp_path / "cases.csv", [victim, *cases])

    with TaskWatcher(cluster, TASK_PREFIX, kills={"victim": 5}) as watcher:
        completed = rank(manifest, tmp_path / "out", model_dir, cluster.address)
    assert completed.returncode == 1, completed.stderr
    assert watcher.attempts("victim") == 2 and len(watcher.killed) == 2  # the first try and one retry, no more
    assert "died on the first try and on the retry" in failures(tmp_path / "out")["victim"]
    rows = ranking(tmp_path / "out")
    assert sorted(rows) == sorted(c.case_id for c in cases)
    assert not (tmp_path / "out" / "cases" / "victim" / REPORT_FILE_NAME).exists()


def test_a_run_whose_driver_is_killed_resumes_without_losing_or_repeating_a_case(tmp_path, cluster, model_dir):
    cases = write_cases(tmp_path / "data", 10)
    manifest = write_manifest(tmp_path / "cases.csv", cases)
    out = tmp_path / "out"
    driver = subprocess.Popen(rank_command(manifest, out, model_dir, cluster.address), stderr=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, text=True, cwd=REPO_ROOT)
    finished_before_kill = []
    try:
        deadline = time.monotonic() + DRIVER_TIMEOUT_S
        for line in driver.stderr:
            if line.startswith("[") and line.rstrip().endswith(": done"):
                finished_before_kill.append(line.split("] ")[1].split(":")[0])
            if len(finished_before_kill) == 3 or time.monotonic() > deadline:
                break
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait(timeout=60)
    assert len(finished_before_kill) == 3
    assert not (out / "ranking.csv").exists()  # killed before the end

    completed = rank(manifest, out, model_dir, cluster.address)
    assert completed.returncode == 0, completed.stderr
    rows = ranking(out)
    assert sorted(rows) == [c.case_id for c in cases]
    resumed = {case_id for case_id, row in rows.items() if row["status"] == CaseStatus.RESUMED.value}
    assert set(finished_before_kill) <= resumed and len(resumed) < len(cases)


def test_resume_on_the_cluster_checks_again_the_reports_of_another_model(tmp_path, cluster, model_dir,
                                                                          other_model_dir):
    cases = write_cases(tmp_path / "data", 3)
    manifest = write_manifest(tmp_path / "cases.csv", cases)
    out = tmp_path / "out"
    assert rank(manifest, out, model_dir, cluster.address).returncode == 0
    assert {r["status"] for r in ranking(out).values()} == {CaseStatus.DONE.value}

    assert rank(manifest, out, other_model_dir, cluster.address).returncode == 0
    assert {r["status"] for r in ranking(out).values()} == {CaseStatus.DONE.value}
    sha = json.loads((out / "cases" / cases[0].case_id / REPORT_FILE_NAME).read_text())["model"]["sha256"]
    assert sha == QCEngine(other_model_dir, "cpu").model_info["sha256"]

    assert rank(manifest, out, other_model_dir, cluster.address).returncode == 0
    assert {r["status"] for r in ranking(out).values()} == {CaseStatus.RESUMED.value}


def test_tasks_that_no_node_can_run_are_refused_before_any_case(tmp_path, cluster, model_dir):
    cases = write_cases(tmp_path / "data", 1)
    manifest = write_manifest(tmp_path / "cases.csv", cases)
    completed = rank(manifest, tmp_path / "out", model_dir, cluster.address, "--ray-gpus-per-task", "1")
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines()[-1].startswith("segqc: error: No node of the Ray cluster")
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "out" / "cases").exists()


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1", "No Ray head node answers at 127.0.0.1:1"),
    ("no-port-here", "--ray takes 'auto', 'local' or the head node's HOST:PORT"),
])
def test_a_ray_address_without_a_cluster_is_a_one_line_error(tmp_path, model_dir, address, message):
    manifest = write_manifest(tmp_path / "cases.csv", write_cases(tmp_path / "data", 1))
    completed = rank(manifest, tmp_path / "out", model_dir, address)
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines()[-1].startswith(f"segqc: error: {message}")
    assert "Traceback" not in completed.stderr


def test_a_worker_whose_model_is_not_the_drivers_refuses_the_case(tmp_path, model_dir, other_model_dir):
    case = write_cases(tmp_path / "data", 1)[0]
    expected = QCEngine(other_model_dir, "cpu").model_info["sha256"]
    row = process_case_with_model(case, tmp_path / "out", str(model_dir), "cpu", expected_sha256=expected)
    assert row.status is CaseStatus.FAILED and "not the driver's" in row.error
    assert not (tmp_path / "out" / "cases").exists()
    assert os.environ.get("RAY_ADDRESS") is None  # these tests never join a cluster they did not start


def test_ray_local_runs_the_cases_on_a_private_instance_for_this_run(tmp_path, model_dir):
    cases = write_cases(tmp_path / "data", 2)
    manifest = write_manifest(tmp_path / "cases.csv", cases)
    completed = rank(manifest, tmp_path / "out", model_dir, "local", "--ray-cpus-per-task", "1")
    assert completed.returncode == 0, completed.stderr
    assert "node(s)" in completed.stderr and "Traceback" not in completed.stderr
    assert sorted(ranking(tmp_path / "out")) == [c.case_id for c in cases]
