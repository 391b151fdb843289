"""Suggestions as files and report fields: `segqc estimate|run --suggest`, report.json compatibility, the threshold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from SegQCLib.commands.cli import main
from SegQCLib.engine import QCEngine
from SegQCLib.errors import InputError
from SegQCLib.io.image_files import read_image, read_labelmap, write_array
from SegQCLib.io.volumes import LabelMap
from SegQCLib.network.package import WEIGHTS_FILES, default_model_path, init_model_package
from SegQCLib.quality.outputs import read_error_probs
from SegQCLib.quality.postprocess import build_report
from SegQCLib.quality.report import BOX_EDIT_FIELDS, Report
from SegQCLib.quality.suggestion import suggest
from SegQCLib.quality.suggestion_files import read_suggestion
from SegQCLib.quality.suggestion_settings import (
    DEFAULT_MIN_GAIN_DICE,
    PACKAGE_WEIGHTS_FILES,
    SUGGESTION_SETTINGS_FILE,
    GainSource,
    SuggestionParams,
    package_weights_sha256,
    read_suggestion_settings,
    resolve_suggestion_params,
    write_suggestion_settings,
)

pytestmark = pytest.mark.realdata

SUGGESTION_FILES = {"suggested_segmentation.nii.gz", "suggested_edits_1.nii.gz", "suggested_edits_2.nii.gz"}


@pytest.fixture()
def real_query(tmp_path, hippocampus_cases):
    """A real case whose query misses a ball of class 1 and has a spurious blob of class 2; Ê = true error."""
    files = hippocampus_cases[3]
    truth = read_labelmap(files.label)
    query = truth.array.copy()
    anterior = np.argwhere(truth.array == 1)
    z, y, x = np.ogrid[tuple(slice(0, s) for s in query.shape)]
    centre = anterior[len(anterior) // 2]
    query[((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= 9) & (truth.array == 1)] = 0
    query[ndimage.binary_dilation(truth.array == 2, iterations=2) & (truth.array == 0)] = 2
    inputs = tmp_path / "inputs"
    seg = write_array(inputs / "query.nii.gz", query, truth.geometry)
    for label in (1, 2):
        write_array(inputs / f"error_prob_{label}.nii.gz",
                    ((query == label) ^ (truth.array == label)).astype(np.float32), truth.geometry)
    return {"image": files.images[0], "seg": seg, "probs": inputs, "query": query, "truth": truth.array,
            "geometry": truth.geometry}


def estimate(*args) -> int:
    return main(["estimate", *map(str, args)])


# --- segqc estimate --suggest ------------------------------------------------------------------------
def test_estimate_with_suggest_writes_the_suggestion_on_the_grid_and_the_edits_in_the_report(tmp_path, real_query):
    out = tmp_path / "out"
    assert estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--image", real_query["image"],
                    "--out", out, "--suggest") == 0
    assert SUGGESTION_FILES <= {p.name for p in out.iterdir()}
    suggested = read_labelmap(out / "suggested_segmentation.nii.gz")
    assert suggested.geometry.matches(real_query["geometry"])
    np.testing.assert_array_equal(suggested.array, real_query["truth"])
    data = json.loads((out / "report.json").read_text())
    assert data["suggestion"]["segmentation_file"] == "suggested_segmentation.nii.gz"
    assert data["suggestion"]["edit_files"] == {"1": "suggested_edits_1.nii.gz", "2": "suggested_edits_2.nii.gz"}
    assert data["suggestion"]["min_gain_source"] == GainSource.DEFAULT
    for box in data["boxes"]:
        assert set(BOX_EDIT_FIELDS) <= set(box)
        edit_map = read_labelmap(out / f"suggested_edits_{box['label']}.nii.gz").array
        assert int(np.count_nonzero(edit_map == box["edit_id"])) == box["edit_voxels"]
    edits = data["suggestion"]["edits"]
    assert [e["id"] for e in edits] == list(range(1, len(edits) + 1))


def test_the_suggestion_read_back_from_the_folder_accepts_like_the_one_in_memory(tmp_path, real_query):
    out = tmp_path / "out"
    estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--out", out, "--suggest")
    suggestion = read_suggestion(out)
    segmentation = LabelMap(real_query["query"], real_query["geometry"])
    error_prob = read_error_probs(real_query["probs"])
    in_memory = suggest(segmentation, error_prob, build_report(segmentation, error_prob))
    assert in_memory.summary == suggestion.summary
    np.testing.assert_array_equal(suggestion.accept_all(real_query["query"]),
                                  in_memory.accept_all(real_query["query"]))
    first = real_query["query"].copy()
    suggestion.accept(first, 1)
    assert np.count_nonzero(first != real_query["query"]) == suggestion.edit(1).voxels


def test_without_suggest_the_report_keeps_its_earlier_shape_and_old_suggestion_files_go(tmp_path, real_query):
    out = tmp_path / "out"
    estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--out", out, "--suggest")
    assert estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--out", out) == 0
    data = json.loads((out / "report.json").read_text())
    assert "suggestion" not in data
    assert all(not set(BOX_EDIT_FIELDS) & set(box) for box in data["boxes"])
    assert not SUGGESTION_FILES & {p.name for p in out.iterdir()}
    with pytest.raises(InputError, match="--suggest"):
        read_suggestion(out)


def test_a_suggested_segmentation_given_as_input_is_not_removed(tmp_path, real_query):
    out = tmp_path / "out"
    estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--out", out, "--suggest")
    for label in (1, 2):
        shutil.copy(real_query["probs"] / f"error_prob_{label}.nii.gz", out / f"error_prob_{label}.nii.gz")
    again = out / "suggested_segmentation.nii.gz"
    assert estimate("--seg", again, "--error-prob", out, "--out", out) == 0
    assert again.is_file()


def test_given_min_gain_decides_which_edits_are_offered(tmp_path, real_query):
    out = tmp_path / "out"
    assert estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--out", out, "--suggest",
                    "--suggest-min-gain", "0.99") == 0
    report = Report.load(out)
    assert report.suggestion.min_gain_source == GainSource.GIVEN and report.suggestion.min_gain_dice == 0.99
    assert report.suggestion.edits and not any(edit.offered for edit in report.suggestion.edits)
    assert not any(box.edit_offered for box in report.boxes)


def test_estimate_reads_the_threshold_of_a_model_package_without_loading_it(tmp_path, real_query):
    package = init_model_package(tmp_path / "pkg")
    write_suggestion_settings(package, 0.25, {"note": "test"})
    out = tmp_path / "out"
    assert estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--out", out, "--suggest",
                    "--model", package) == 0
    report = Report.load(out)
    assert (report.suggestion.min_gain_dice, report.suggestion.min_gain_source) == (0.25, GainSource.CALIBRATED)
    assert [e.offered for e in report.suggestion.edits] == [e.gain_dice_est >= 0.25 for e in report.suggestion.edits]


@pytest.mark.parametrize("extra", [["--suggest-min-gain", "0.1"], ["--model", "somewhere"]])
def test_suggestion_options_without_suggest_are_refused(tmp_path, real_query, capsys, extra):
    assert estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--out", tmp_path / "o",
                    *extra) == 1
    assert "need --suggest" in capsys.readouterr().err


# --- segqc run --suggest -------------------------------------------------------------------------------
def test_run_with_suggest_writes_the_suggestion_with_the_bundled_model(tmp_path, real_query):
    out = tmp_path / "run"
    assert main(["run", "--image", str(real_query["image"]), "--seg", str(real_query["seg"]), "--out", str(out),
                 "--device", "cpu", "--suggest", "--progress", "none"]) == 0
    assert SUGGESTION_FILES <= {p.name for p in out.iterdir()}
    report = Report.load(out)
    suggestion = read_suggestion(out)
    assert suggestion.segmentation.shape == real_query["query"].shape
    assert report.suggestion.changed_voxels == int(np.count_nonzero(suggestion.segmentation != real_query["query"]))
    assert "suggestion" in report.timing_s
    for box in report.boxes:
        assert box.edit_offered == (box.edit_id is not None and suggestion.edit(box.edit_id).offered)


def test_run_refuses_a_min_gain_without_suggest(tmp_path, real_query, capsys):
    assert main(["run", "--image", str(real_query["image"]), "--seg", str(real_query["seg"]), "--out",
                 str(tmp_path / "o"), "--suggest-min-gain", "0.1"]) == 2
    assert "--suggest-min-gain needs --suggest" in capsys.readouterr().err


# --- report.json compatibility ---------------------------------------------------------------------------
def test_a_report_written_before_suggestions_existed_still_loads(tmp_path, real_query):
    out = tmp_path / "out"
    estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--out", out)
    data = json.loads((out / "report.json").read_text())
    data["boxes"] = [{k: v for k, v in box.items() if k not in ("center_lps", "max_prob")} | {"center_lps": [0, 0, 0]}
                     for box in data["boxes"]]
    report = Report.from_dict(data)
    assert report.suggestion is None and all(box.edit_id is None for box in report.boxes)


def test_a_report_with_suggestions_round_trips_and_unknown_keys_from_newer_versions_are_ignored(tmp_path, real_query):
    out = tmp_path / "out"
    estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--out", out, "--suggest")
    data = json.loads((out / "report.json").read_text())
    assert Report.from_dict(data).to_dict() == data
    data["boxes"][0]["from_the_future"] = 1
    data["suggestion"]["edits"][0]["from_the_future"] = 2
    data["suggestion"]["from_the_future"] = 3
    assert Report.from_dict(data).suggestion.edits[0].id == 1


# --- the threshold's source ---------------------------------------------------------------------------
def test_the_package_weights_file_names_match_the_network_package():
    assert PACKAGE_WEIGHTS_FILES == WEIGHTS_FILES


def test_a_package_without_calibration_uses_the_default_with_a_notice(tmp_path):
    package = init_model_package(tmp_path / "pkg")
    params, notices = read_suggestion_settings(package)
    assert params == SuggestionParams(DEFAULT_MIN_GAIN_DICE, GainSource.DEFAULT)
    assert notices and SUGGESTION_SETTINGS_FILE in notices[0]


def test_a_calibration_for_other_weights_is_not_used(tmp_path):
    package = init_model_package(tmp_path / "pkg")
    write_suggestion_settings(package, 0.3, {}, weights_sha256="0" * 64)
    params, notices = read_suggestion_settings(package)
    assert params.min_gain_dice == DEFAULT_MIN_GAIN_DICE
    assert "other weights" in notices[0]


def test_a_damaged_settings_file_falls_back_to_the_default(tmp_path):
    package = init_model_package(tmp_path / "pkg")
    (package / SUGGESTION_SETTINGS_FILE).write_text("{not json")
    params, notices = read_suggestion_settings(package)
    assert params.min_gain_dice == DEFAULT_MIN_GAIN_DICE and "unreadable" in notices[0]


def test_a_given_threshold_wins_over_the_packages(tmp_path):
    package = init_model_package(tmp_path / "pkg")
    write_suggestion_settings(package, 0.3, {})
    assert resolve_suggestion_params(None, package)[0] == SuggestionParams(0.3, GainSource.CALIBRATED)
    assert resolve_suggestion_params(0.05, package)[0] == SuggestionParams(0.05, GainSource.GIVEN)
    assert resolve_suggestion_params(None, None)[0] == SuggestionParams()


def test_the_engine_uses_its_packages_calibration(tmp_path):
    package = Path(shutil.copytree(default_model_path(), tmp_path / "model"))
    write_suggestion_settings(package, 0.125, {})
    engine = QCEngine(package, "cpu")
    assert engine.suggestion_params() == (SuggestionParams(0.125, GainSource.CALIBRATED), [])
    assert package_weights_sha256(package) == engine.model_info["sha256"]


def test_a_threshold_must_be_finite():
    with pytest.raises(InputError, match="finite"):
        SuggestionParams(float("nan"))


def test_error_maps_written_by_estimate_are_unchanged_by_suggest(tmp_path, real_query):
    plain, suggested = tmp_path / "plain", tmp_path / "suggested"
    estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--out", plain)
    estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--out", suggested, "--suggest")
    for label in (1, 2):
        np.testing.assert_array_equal(read_image(plain / f"error_prob_{label}.nii.gz").array,
                                      read_image(suggested / f"error_prob_{label}.nii.gz").array)
    with_suggestion, without = Report.load(suggested), Report.load(plain)
    assert [(b.label, b.slice, b.bbox_zyx, b.score) for b in with_suggestion.boxes] == \
        [(b.label, b.slice, b.bbox_zyx, b.score) for b in without.boxes]
