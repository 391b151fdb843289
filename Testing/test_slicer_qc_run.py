"""The module's QC run (what the Run QC button does) under slicer-core: inputs and results move on a worker
thread, ``segqc run`` runs in a real child process, and every ending leaves no temporary folder behind and
the scene as it was (or with the results)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core cannot be imported; pip install slicer-core")

import slicer  # noqa: E402
from SegQCModuleLib.logic import NodeRole, SegQCLogic  # noqa: E402
from SegQCModuleLib.qc_run import QCRun, QCRunSettings, RunState  # noqa: E402
from slicer_scene import build_review, matrix_of, node_count  # noqa: E402

from SegQCLib.io.image_files import read_image  # noqa: E402

RUN_TIMEOUT_S = 300.0
GZIP_MAGIC = b"\x1f\x8b"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from SegQCLib.network.package import init_model_package

    return str(init_model_package(tmp_path_factory.mktemp("model") / "untrained"))


@pytest.fixture
def review(hippocampus_case):
    return build_review(*hippocampus_case)


def new_run(review, model_path, work: Path, python: str = sys.executable, **hooks) -> QCRun:
    logic = review["logic"]
    prepared = logic.prepareInputs([review["volume"]], review["segmentation"], logic.modelClassNames(model_path))
    settings = QCRunSettings(python=python, modelPath=model_path, device="cpu", environment={"OMP_NUM_THREADS": "1"})
    return QCRun(logic, prepared, str(work), settings, **hooks)


def poll_until(run: QCRun, condition, timeout_s: float = RUN_TIMEOUT_S) -> list:
    updates, waited = [], 0.0
    while not condition():
        assert waited < timeout_s, f"run still {run.state} after {timeout_s} s"
        updates.append(run.poll())
        threading.Event().wait(0.05)
        waited += 0.05
    return updates


def test_a_run_makes_the_result_nodes_from_uncompressed_inputs_and_8_bit_maps_and_removes_its_folder(review, model_path,
                                                                                                     tmp_path):
    written, maps = {}, {}

    def write(prepared, folder):
        written["paths"] = SegQCLogic.writeProcessInputs(prepared, folder)
        written["heads"] = [Path(p).read_bytes()[:2] for p in [*written["paths"][0], written["paths"][1]]]
        return written["paths"]

    def read_back(folder, geometry):
        maps.update({p.name: read_image(p).array for p in Path(folder).iterdir() if p.name.startswith("error_prob")})
        return SegQCLogic.readProcessResult(folder, geometry)

    run = new_run(review, model_path, tmp_path / "work", writeInputs=write, readResults=read_back)
    run.start()
    updates = poll_until(run, lambda: run.finished)
    assert run.state is RunState.DONE, run.error
    assert not (tmp_path / "work").exists()
    assert [Path(p).suffix for p in [*written["paths"][0], written["paths"][1]]] == [".nii", ".nii"]
    assert GZIP_MAGIC not in written["heads"]
    # The maps: 8-bit codes with gzip level 1 (segqc run's format), a quarter of float32 and quick to read.
    assert sorted(maps) == ["error_prob_1.nii.gz", "error_prob_2.nii.gz"]
    result = run.result
    assert result.boxesTableNode.GetNumberOfRows() == len(result.report["boxes"])
    for label, node in result.overlayNodes.items():
        np.testing.assert_allclose(matrix_of(node), matrix_of(review["volume"]))
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), maps[f"error_prob_{label}.nii.gz"])
    fractions = [u.fraction for u in updates if u.fraction is not None]
    assert fractions and fractions == sorted(fractions)
    # The process log: the command, progress messages and segqc's own log lines, in order.
    lines = [line for update in updates for line in update.logLines]
    assert lines[0] == "Writing the inputs for QC" and lines[-1] == "QC done"
    assert any(line.startswith("$ ") and "SegQCLib.commands.cli run" in line for line in lines)
    assert any("Model" in line and "on cpu" in line for line in lines)  # logged by segqc run itself
    assert run.log == lines


def test_files_are_written_and_read_off_the_calling_thread_and_the_scene_waits_for_the_end(review, model_path,
                                                                                          tmp_path):
    gates, threads = {"write": threading.Event(), "read": threading.Event()}, {}

    def slow_write(prepared, folder):
        threads["write"] = threading.current_thread().name
        gates["write"].wait(RUN_TIMEOUT_S)
        return SegQCLogic.writeProcessInputs(prepared, folder)

    def slow_read(folder, geometry):
        threads["read"] = threading.current_thread().name
        gates["read"].wait(RUN_TIMEOUT_S)
        return SegQCLogic.readProcessResult(folder, geometry)

    before = node_count(review["scene"])
    run = new_run(review, model_path, tmp_path / "work", writeInputs=slow_write, readResults=slow_read)
    run.start()  # returns while the writer is blocked
    run.poll()
    assert run.state is RunState.WRITING_INPUTS and threads["write"] != threading.current_thread().name
    gates["write"].set()
    poll_until(run, lambda: run.state is RunState.READING_RESULTS)
    run.poll()
    assert run.state is RunState.READING_RESULTS and threads["read"] != threading.current_thread().name
    assert node_count(review["scene"]) == before  # nothing reaches the scene before the results are read
    gates["read"].set()
    poll_until(run, lambda: run.finished)
    assert run.state is RunState.DONE and node_count(review["scene"]) > before


def test_a_process_that_cannot_start_ends_the_run_and_removes_its_folder(review, model_path, tmp_path):
    before = node_count(review["scene"])
    run = new_run(review, model_path, tmp_path / "work", python=str(tmp_path / "no" / "PythonSlicer"))
    run.start()
    poll_until(run, lambda: run.finished, timeout_s=60)
    assert run.state is RunState.FAILED
    assert "could not start" in run.error and "PythonSlicer" in run.error
    assert not (tmp_path / "work").exists()
    assert node_count(review["scene"]) == before


def lingering_python(folder: Path) -> Path:
    """An interpreter that stays alive after ``segqc run`` has ended, until it is killed.

    Whether a real run is still going when the cancel lands depends on the machine's speed (two CI runs finished
    the small case first); with this wrapper the process is always still there, so the test decides the same
    way everywhere: cancelling stops the process tree, and nothing of the run reaches the scene."""
    wrapper = folder / "python-lingering"
    wrapper.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\nsleep 600\n')
    wrapper.chmod(0o755)
    return wrapper


def test_cancelling_midway_stops_the_process_and_leaves_the_scene_as_it_was(review, model_path, tmp_path):
    before = node_count(review["scene"])
    run = new_run(review, model_path, tmp_path / "work", python=str(lingering_python(tmp_path)))
    run.start()
    poll_until(run, lambda: run.state is RunState.RUNNING and run.process.pid is not None)
    poll_until(run, lambda: any(line.startswith("Loading") or "Model" in line for line in run.log))
    assert not run.finished
    run.cancel()
    poll_until(run, lambda: run.finished, timeout_s=60)
    assert run.state is RunState.CANCELLED
    assert run.process.returncode != 0
    assert not (tmp_path / "work").exists()
    assert node_count(review["scene"]) == before
    assert review["logic"].findNodes(NodeRole.OVERLAY) == []


def test_a_failing_process_reports_its_error_and_changes_nothing(review, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    logic = review["logic"]
    prepared = logic.prepareInputs([review["volume"]], review["segmentation"], {1: "anterior", 2: "posterior"})
    before = node_count(review["scene"])
    run = QCRun(logic, prepared, str(tmp_path / "work"), QCRunSettings(sys.executable, str(broken), "cpu"))
    run.start()
    poll_until(run, lambda: run.finished)
    assert run.state is RunState.FAILED and "not valid JSON" in run.error
    assert not (tmp_path / "work").exists() and node_count(review["scene"]) == before
