"""Every command that writes checks its output folder before it computes anything (a file in its place, or a folder
it cannot write into, is one clear line, not a raw errno after the whole run), and ``segqc run``'s progress names
each stage truthfully: loading the model, reading, the network, the report, writing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from SegQCLib import engine as engine_module
from SegQCLib.commands import estimate as estimate_command
from SegQCLib.commands import rank as rank_command
from SegQCLib.commands.cli import main as segqc
from SegQCLib.geometry import Geometry
from SegQCLib.io.image_files import write_array
from SegQCLib.network.config import ModelConfig
from SegQCLib.network.package import init_model_package

REPO = Path(__file__).resolve().parents[1]
SHAPE = (20, 24, 20)
GEOMETRY = Geometry(SHAPE, (1.0, 1.0, 1.0))
TINY = dict(widths=[4, 8], blocks_per_stage=[1, 1], strides=[[2, 2, 2], [2, 2, 2]], decoder_from_stage=1,
            full_res_width=4, case_head_hidden=8, patch_size_zyx=[16, 16, 16])


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    seg = np.zeros(SHAPE, np.uint8)
    seg[5:15, 6:18, 5:15] = 1
    seg[8:12, 9:14, 8:12] = 2
    folder = tmp_path / "inputs"
    maps = folder / "maps"
    for label in (1, 2):
        write_array(maps / f"error_prob_{label}.nii.gz", rng.random(SHAPE, np.float32), GEOMETRY)
    manifest = folder / "cases.csv"
    files = {"image": write_array(folder / "image.nii.gz", rng.normal(100, 20, SHAPE).astype(np.float32), GEOMETRY),
             "seg": write_array(folder / "seg.nii.gz", seg, GEOMETRY), "maps": maps, "manifest": manifest}
    manifest.write_text(f"case_id,image,seg\ncase1,{files['image']},{files['seg']}\n")
    return files


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return init_model_package(tmp_path_factory.mktemp("model") / "tiny", ModelConfig(**TINY), seed=1)


@pytest.fixture
def nothing_computed(monkeypatch):
    """Fail the test if a command loads a model or reads a case (the check must come first)."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("computation started before the output folder was checked")

    monkeypatch.setattr(engine_module, "QCEngine", refuse)  # segqc run imports it when work starts
    monkeypatch.setattr(rank_command, "QCEngine", refuse)
    monkeypatch.setattr(estimate_command, "read_labelmap", refuse)
    monkeypatch.setattr(estimate_command, "load_case", refuse)


def commands(inputs: dict[str, Path], out: Path, model: Path) -> dict[str, list[str]]:
    return {
        "run": ["run", "--image", str(inputs["image"]), "--seg", str(inputs["seg"]), "--out", str(out),
                "--model", str(model)],
        "run --manifest": ["run", "--manifest", str(inputs["manifest"]), "--out", str(out), "--model", str(model)],
        "estimate": ["estimate", "--seg", str(inputs["seg"]), "--error-prob", str(inputs["maps"]), "--out", str(out)],
        "rank": ["rank", "--manifest", str(inputs["manifest"]), "--out", str(out), "--model", str(model)],
        "model init": ["model", "init", "--out", str(out)],
        "corrections export": ["corrections", "export", "--store", str(out.parent / "store"), "--format", "qc",
                               "--out", str(out)],
        "corrections add": ["corrections", "add", "--store", str(out), "--case-id", "c", "--image",
                            str(inputs["image"]), "--original", str(inputs["seg"]), "--corrected", str(inputs["seg"])],
    }


COMMANDS = ["run", "run --manifest", "estimate", "rank", "model init", "corrections export", "corrections add"]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_path_that_is_a_file_is_refused_before_anything_is_computed(tmp_path, inputs, model, command,
                                                                              nothing_computed, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    assert segqc(commands(inputs, taken, model)[command]) == 1
    error = capsys.readouterr().err
    option = "--store" if command == "corrections add" else "--out"
    assert f"{option} must be a folder: {taken} is a regular file" in error and "Errno" not in error
    assert taken.read_text() == "not a folder"


@pytest.mark.parametrize("command", ["run", "estimate", "rank"])
def test_an_output_folder_below_a_file_is_refused_before_anything_is_computed(tmp_path, inputs, model, command,
                                                                            nothing_computed, capsys):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "sub" / "out"
    assert segqc(commands(inputs, out, model)[command]) == 1
    assert f"cannot be created: {tmp_path / 'file'} is a regular file" in capsys.readouterr().err


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A folder this process cannot write into: no write permission (ordinary users), or a read-only tmpfs (root)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"running as root and cannot mount a read-only tmpfs: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_folder_that_cannot_be_written_is_refused_before_anything_is_computed(unwritable, inputs, model,
                                                                                     command, nothing_computed,
                                                                                     capsys):
    out = unwritable / "out"
    assert segqc(commands(inputs, out, model)[command]) == 1
    error = capsys.readouterr().err
    assert "is not writable" in error and ("read-only" in error or "permission denied" in error), error
    assert "Traceback" not in error


def test_run_progress_names_each_stage_in_order(tmp_path, inputs, model):
    completed = subprocess.run(
        [sys.executable, "-m", "SegQCLib.commands.cli", "run", "--image", str(inputs["image"]), "--seg",
         str(inputs["seg"]), "--out", str(tmp_path / "out"), "--model", str(model), "--device", "cpu",
         "--progress", "json"],
        capture_output=True, text=True, timeout=900, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                                                                    "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, completed.stderr
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    messages = [e["message"] for e in events if e["event"] == "progress"]

    def first(prefix: str) -> int:
        return next(i for i, m in enumerate(messages) if m.startswith(prefix))

    stages = ["Loading model", "Reading image(s) and segmentation", "QC network: window",
              "Estimating quality", "Writing error maps and report", "Done"]
    assert [first(stage) for stage in stages] == sorted(first(stage) for stage in stages), messages
    assert messages[-1] == "Done" and messages[-2] == "Writing error maps and report"
    assert all(not m.startswith("Loading model") for m in messages[first("Reading"):])
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
