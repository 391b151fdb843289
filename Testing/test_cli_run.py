"""``segqc run`` and ``segqc model`` end to end on real hippocampus cases with an untrained default model."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SegQCLib.commands.cli import main
from SegQCLib.commands.run import FAILURES_FILE, SUMMARY_FILE, read_manifest
from SegQCLib.engine import QCEngine, run_qc_files
from SegQCLib.errors import CancelledError, InputError
from SegQCLib.io.image_files import read_image
from SegQCLib.network.config import CONFIG_FILE, ModelConfig
from SegQCLib.network.package import MODEL_ENV, WEIGHTS_FILE
from SegQCLib.quality.report import Report

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="session")
def default_package(tmp_path_factory) -> Path:
    """A randomly initialised default-configuration package written by ``segqc model init``."""
    path = tmp_path_factory.mktemp("models") / "default"
    assert main(["model", "init", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def two_cases(hippocampus_cases):
    """Two real cases of different image size (to provoke a geometry mismatch)."""
    first = hippocampus_cases[0]
    shape = read_image(first.images[0]).array.shape
    other = next(c for c in hippocampus_cases[1:] if read_image(c.images[0]).array.shape != shape)
    return first, other


def run_cli(*args: str) -> int:
    return main(["run", *args])


def assert_outputs_on_image_grid(out_dir: Path, image_path: Path, labels=(1, 2)) -> Report:
    image_geometry = read_image(image_path).geometry
    report = Report.load(out_dir)
    for label in labels:
        prob = read_image(out_dir / f"error_prob_{label}.nii.gz")
        assert prob.geometry.matches(image_geometry), prob.geometry.differences(image_geometry)
        assert prob.array.dtype == np.float32 and prob.array.min() >= 0 and prob.array.max() <= 1
    assert report.geometry["shape_zyx"] == list(image_geometry.shape_zyx)
    return report


def write_like(path: Path, array: np.ndarray, reference: Path, origin_shift_mm: float = 0.0) -> Path:
    source = sitk.ReadImage(str(reference))
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(source)
    if origin_shift_mm:
        image.SetOrigin(tuple(v + origin_shift_mm for v in source.GetOrigin()))
    sitk.WriteImage(image, str(path))
    return path


# --- segqc model ------------------------------------------------------------------------------
def test_model_init_writes_a_default_configuration_package(default_package):
    config = json.loads((default_package / CONFIG_FILE).read_text())
    assert ModelConfig.from_dict(config) == ModelConfig()
    assert (default_package / WEIGHTS_FILE).stat().st_size > 0


def test_model_info_prints_config_and_card(default_package, capsys):
    assert main(["model", "info", str(default_package)]) == 0
    out = capsys.readouterr().out
    assert "UNTRAINED" in out and '"patch_size_zyx"' in out and "model card:" in out and "sha256" in out


def test_model_init_applies_a_partial_config_over_the_defaults(tmp_path):
    overrides = tmp_path / "cfg.json"
    overrides.write_text(json.dumps({"widths": [8, 16, 32, 64], "modalities": ["T1", "FLAIR"]}))
    assert main(["model", "init", "--out", str(tmp_path / "pkg"), "--config", str(overrides)]) == 0
    written = json.loads((tmp_path / "pkg" / CONFIG_FILE).read_text())
    assert written["widths"] == [8, 16, 32, 64] and written["modalities"] == ["T1", "FLAIR"]
    assert written["patch_size_zyx"] == ModelConfig().patch_size_zyx


def test_model_init_refuses_an_invalid_config(tmp_path, capsys):
    overrides = tmp_path / "cfg.json"
    overrides.write_text(json.dumps({"patch_size_zyx": [50, 50, 50]}))
    assert main(["model", "init", "--out", str(tmp_path / "pkg"), "--config", str(overrides)]) == 1
    assert "not divisible" in capsys.readouterr().err
    assert not (tmp_path / "pkg").exists()


# --- segqc run, one case ----------------------------------------------------------------------
def test_run_writes_report_and_error_maps_in_the_image_geometry(default_package, hippocampus_cases, tmp_path,
                                                                capsys):
    case = hippocampus_cases[0]
    out = tmp_path / "out"
    code = run_cli("--image", str(case.images[0]), "--seg", str(case.label), "--out", str(out),
                   "--model", str(default_package), "--device", "cpu")
    assert code == 0
    report = assert_outputs_on_image_grid(out, case.images[0])
    assert 0 <= report.case.dice_pred <= 1 and 0 <= report.case.nsd_pred <= 1
    assert report.device == "cpu"
    assert report.model["sha256"] and report.model["name"] == ModelConfig().name
    assert any("untrained" in notice for notice in report.notices)
    assert "report:" in capsys.readouterr().out


def test_a_model_whose_case_head_is_not_reported_leaves_dice_pred_and_nsd_pred_out(hippocampus_cases, tmp_path):
    overrides = tmp_path / "cfg.json"
    overrides.write_text(json.dumps({"report_case_head": False}))
    assert main(["model", "init", "--out", str(tmp_path / "pkg"), "--config", str(overrides)]) == 0
    case = hippocampus_cases[0]
    assert run_cli("--image", str(case.images[0]), "--seg", str(case.label), "--out", str(tmp_path / "out"),
                   "--model", str(tmp_path / "pkg"), "--device", "cpu") == 0
    report = Report.load(tmp_path / "out" / "report.json")
    assert report.case.dice_pred is None and report.case.nsd_pred is None
    assert report.case.dice_est is not None


def test_empty_segmentation_is_checked_over_the_whole_image(default_package, hippocampus_cases, tmp_path):
    case = hippocampus_cases[0]
    empty = np.zeros_like(sitk.GetArrayFromImage(sitk.ReadImage(str(case.label))))
    seg = write_like(tmp_path / "empty.nii.gz", empty, case.label)
    out = tmp_path / "out"
    assert run_cli("--image", str(case.images[0]), "--seg", str(seg), "--out", str(out),
                   "--model", str(default_package)) == 0
    report = assert_outputs_on_image_grid(out, case.images[0])
    assert any("whole image" in notice for notice in report.notices)
    assert read_image(out / "error_prob_1.nii.gz").array.min() > 0  # no zero region outside a crop


def test_report_names_classes_from_the_model(default_package, hippocampus_cases, tmp_path):
    case = hippocampus_cases[0]
    result = run_qc_files(case.images, case.label, tmp_path / "out", model_path=default_package, device="cpu")
    assert {c.label: c.name for c in result.report.classes} == ModelConfig().classes


def test_json_progress_for_a_driving_program(default_package, hippocampus_cases, tmp_path):
    """The Slicer module runs segqc in a subprocess and parses these lines."""
    case = hippocampus_cases[1]
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "SegQCLib.commands.cli", "run", "--image", str(case.images[0]), "--seg", str(case.label),
         "--out", str(out), "--model", str(default_package), "--progress", "json"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert completed.returncode == 0, completed.stderr
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    progress = [e["fraction"] for e in events if e["event"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert events[-1]["event"] == "done" and Path(events[-1]["report"]).is_file()
    assert Path(events[-1]["report"]).is_absolute()


def test_json_mode_reports_errors_as_an_event(default_package, tmp_path, capsys):
    code = run_cli("--image", str(tmp_path / "missing.nii.gz"), "--seg", str(tmp_path / "missing_seg.nii.gz"),
                   "--out", str(tmp_path / "out"), "--model", str(default_package), "--progress", "json")
    assert code == 1
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["event"] == "error" and "not found" in last["message"]


def test_missing_image_file_is_a_clear_error(default_package, hippocampus_cases, tmp_path, capsys):
    code = run_cli("--image", str(tmp_path / "nope.nii.gz"), "--seg", str(hippocampus_cases[0].label),
                   "--out", str(tmp_path / "out"), "--model", str(default_package))
    assert code == 1 and "Image file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_segmentation_on_another_grid_is_refused(default_package, two_cases, tmp_path, capsys):
    first, other = two_cases
    code = run_cli("--image", str(first.images[0]), "--seg", str(other.label), "--out", str(tmp_path / "out"),
                   "--model", str(default_package))
    assert code == 1 and "--resample-seg" in capsys.readouterr().err


def test_resample_seg_puts_a_shifted_segmentation_on_the_image_grid(default_package, hippocampus_cases, tmp_path):
    case = hippocampus_cases[0]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
    shifted = write_like(tmp_path / "shifted.nii.gz", labels, case.label, origin_shift_mm=1.0)
    out = tmp_path / "out"
    assert run_cli("--image", str(case.images[0]), "--seg", str(shifted), "--out", str(out),
                   "--model", str(default_package)) == 1
    assert run_cli("--image", str(case.images[0]), "--seg", str(shifted), "--out", str(out),
                   "--model", str(default_package), "--resample-seg") == 0
    report = assert_outputs_on_image_grid(out, case.images[0])
    assert any("resampled" in notice for notice in report.notices)


def test_non_integer_mask_is_refused(default_package, hippocampus_cases, tmp_path, capsys):
    case = hippocampus_cases[0]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label))).astype(np.float32) * 0.5
    seg = write_like(tmp_path / "prob.nii.gz", labels, case.label)
    code = run_cli("--image", str(case.images[0]), "--seg", str(seg), "--out", str(tmp_path / "out"),
                   "--model", str(default_package))
    assert code == 1 and "non-integer" in capsys.readouterr().err


def test_wrong_modality_count_is_refused(default_package, hippocampus_cases, tmp_path, capsys):
    case = hippocampus_cases[0]
    code = run_cli("--image", str(case.images[0]), "--image", str(case.images[0]), "--seg", str(case.label),
                   "--out", str(tmp_path / "out"), "--model", str(default_package))
    assert code == 1 and "expects 1 image modalities" in capsys.readouterr().err


def test_labels_the_model_does_not_know_are_ignored_with_a_notice_naming_them(default_package, hippocampus_cases,
                                                                              tmp_path, capsys):
    case = hippocampus_cases[0]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
    labels[labels == 2] = 3
    seg = write_like(tmp_path / "relabelled.nii.gz", labels, case.label)
    code = run_cli("--image", str(case.images[0]), "--seg", str(seg), "--out", str(tmp_path / "out"),
                   "--model", str(default_package))
    assert code == 0 and "label value(s) 3 that the model does not know" in capsys.readouterr().out
    report = Report.load(tmp_path / "out")
    assert [c.label for c in report.classes] == [1, 2] and any("value(s) 3" in n for n in report.notices)


def test_corrupt_model_weights_are_refused(default_package, hippocampus_cases, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / CONFIG_FILE).write_bytes((default_package / CONFIG_FILE).read_bytes())
    (broken / WEIGHTS_FILE).write_bytes((default_package / WEIGHTS_FILE).read_bytes()[:5000])
    case = hippocampus_cases[0]
    code = run_cli("--image", str(case.images[0]), "--seg", str(case.label), "--out", str(tmp_path / "out"),
                   "--model", str(broken))
    assert code == 1 and "changed or damaged" in capsys.readouterr().err  # its sha256 is not the one recorded


def test_without_model_the_message_says_none_is_installed(hippocampus_cases, tmp_path, capsys, monkeypatch):
    from SegQCLib.network import model_files

    monkeypatch.delenv(MODEL_ENV, raising=False)
    monkeypatch.setattr(model_files, "_repository_default_dirs", lambda: [tmp_path / "none"])
    case = hippocampus_cases[0]
    code = run_cli("--image", str(case.images[0]), "--seg", str(case.label), "--out", str(tmp_path / "out"))
    assert code == 1 and "No default QC model is installed" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--manifest", "cases.csv", "--image", "a.nii.gz"], "either --manifest"),
    (["--image", "a.nii.gz"], "give --image"),
    (["--manifest", "cases.csv", "--overlap", "1.5"], "--overlap"),
    (["--manifest", "cases.csv", "--threads", "0"], "--threads"),
])
def test_contradictory_or_out_of_range_options_are_usage_errors(tmp_path, capsys, args, message):
    assert run_cli(*args, "--out", str(tmp_path)) == 2
    assert message in capsys.readouterr().err


# --- engine API -------------------------------------------------------------------------------
def test_cancelled_run_writes_nothing(default_package, hippocampus_cases, tmp_path):
    case = hippocampus_cases[0]
    engine = QCEngine(default_package, device="cpu")
    out = tmp_path / "out"

    def cancel_once_the_network_runs(fraction, message):
        if message.startswith("QC network"):
            cancelled.append(True)

    cancelled: list[bool] = []
    with pytest.raises(CancelledError):
        run_qc_files(case.images, case.label, out, engine=engine, progress=cancel_once_the_network_runs,
                     cancel=lambda: bool(cancelled))
    assert cancelled and not out.exists()


def test_engine_reports_device_and_model(default_package):
    engine = QCEngine(default_package, device="cpu")
    assert engine.device == "cpu" and engine.config == ModelConfig()
    assert set(engine.model_info) >= {"name", "version", "sha256", "path"}


# --- manifest ---------------------------------------------------------------------------------
def test_manifest_runs_every_case_and_reports_the_failing_one(default_package, hippocampus_cases, tmp_path, capsys):
    good = hippocampus_cases[2:4]
    manifest = tmp_path / "cases.csv"
    rows = [f"{c.case_id},{c.images[0]},{c.label}" for c in good]
    rows.insert(1, f"broken,{good[0].images[0]},{tmp_path / 'missing_seg.nii.gz'}")
    manifest.write_text("case_id,image,seg\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert run_cli("--manifest", str(manifest), "--out", str(out), "--model", str(default_package)) == 1
    for case in good:
        assert_outputs_on_image_grid(out / case.case_id, case.images[0])
    assert not (out / "broken").exists()
    failures = json.loads((out / FAILURES_FILE).read_text())
    assert [f["case_id"] for f in failures] == ["broken"] and "not found" in failures[0]["error"]
    with open(out / SUMMARY_FILE, newline="") as stream:
        summary = list(csv.DictReader(stream))
    assert [r["case_id"] for r in summary] == [good[0].case_id, "broken", good[1].case_id]
    assert [r["status"] for r in summary] == ["ok", "failed", "ok"]
    assert all(0 <= float(r["dice_pred"]) <= 1 for r in summary if r["status"] == "ok")


def test_manifest_splits_modalities_and_resolves_paths_beside_it(tmp_path):
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case_id,image,seg\ncase_1,t1.nii.gz; flair.nii.gz,seg.nii.gz\n")
    (case,) = read_manifest(manifest)
    assert case.images == (tmp_path / "t1.nii.gz", tmp_path / "flair.nii.gz") and case.seg == tmp_path / "seg.nii.gz"


@pytest.mark.parametrize("content, message", [
    ("id,image,seg\nx,a,b\n", "lacks column"),
    ("case_id,image,seg\nx,a,b\nx,c,d\n", "appears twice"),
    ("case_id,image,seg\n../escape,a,b\n", "not a simple folder name"),
    ("case_id,image,seg\n", "lists no cases"),
    ("case_id,image,seg\nx,a,b,c\n", "more fields than the header"),
])
def test_malformed_manifests_are_refused_before_any_case_runs(tmp_path, content, message):
    manifest = tmp_path / "cases.csv"
    manifest.write_text(content)
    with pytest.raises(InputError, match=message):
        read_manifest(manifest)
