"""Calibrating which suggested edits are offered (training split) and measuring whether accepting them helps
(validation split)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from SegQCLib.io.datasets import hippocampus_dir
from SegQCLib.network.package import default_model_path
from SegQCLib.quality.suggestion_settings import (
    DEFAULT_MIN_GAIN_DICE,
    SUGGESTION_SETTINGS_FILE,
    GainSource,
    read_suggestion_settings,
)
from training import calibrate_suggestions, measure_suggestions
from training.calibrate_suggestions import NEVER_OFFER_GAIN, calibrate_min_gain
from training.queries import TRAIN_MIX, VALIDATION_MIX
from training.splits import DEFAULT_SPLIT_FILE, load_split
from training.suggestion_study import STRATEGIES, StudySettings


# --- the threshold rule ----------------------------------------------------------------------------------
def test_the_threshold_is_where_the_mean_true_gain_turns_positive():
    rng = np.random.default_rng(0)
    expected = rng.uniform(0.0, 0.2, 4000)
    true = expected - 0.05 + rng.normal(0.0, 0.01, expected.size)  # edits help from an expected gain of 0.05
    calibration = calibrate_min_gain(expected, true)
    assert calibration.min_gain_dice == pytest.approx(0.05, abs=0.01)
    assert calibration.offered_mean_true_gain > 0 > calibration.withheld_mean_true_gain
    assert calibration.offered_edits == int((expected >= calibration.min_gain_dice).sum())


def test_harmful_edits_at_a_low_expected_gain_are_withheld_even_when_large_good_ones_lift_the_average():
    expected = np.array([0.01] * 50 + [0.5] * 5)
    true = np.array([-0.02] * 50 + [0.4] * 5)  # mean over all edits is positive
    assert true.mean() > 0
    assert calibrate_min_gain(expected, true).min_gain_dice == 0.5


def test_the_threshold_is_never_below_the_default():
    expected = np.linspace(-0.1, 0.1, 101)
    assert calibrate_min_gain(expected, np.full(expected.size, 0.02)).min_gain_dice == DEFAULT_MIN_GAIN_DICE


def test_when_no_edit_helps_none_is_offered():
    calibration = calibrate_min_gain([0.1, 0.2, 0.3], [-0.1, -0.2, -0.01])
    assert calibration.min_gain_dice == NEVER_OFFER_GAIN and calibration.offered_edits == 0


def test_without_tuning_edits_the_default_stays():
    assert calibrate_min_gain([], []).min_gain_dice == DEFAULT_MIN_GAIN_DICE


# --- the scripts, end to end on a few real cases -----------------------------------------------------------
@pytest.fixture()
def data_dir(hippocampus_cases) -> Path:
    return hippocampus_dir()


def test_calibration_uses_training_cases_only_and_writes_the_packages_threshold(tmp_path, data_dir):
    package = Path(shutil.copytree(default_model_path(), tmp_path / "model"))
    assert calibrate_suggestions.main(["--model", str(package), "--data", str(data_dir), "--max-cases", "2",
                                       "--queries-per-case", "2", "--out", str(tmp_path / "calibration")]) == 0
    settings = json.loads((package / SUGGESTION_SETTINGS_FILE).read_text())
    split = load_split(DEFAULT_SPLIT_FILE)
    assert settings["calibration"]["split"] == "train" and settings["calibration"]["cases"] == 2
    assert settings["calibration"]["queries"] == 2 * 3  # two perturbations and the segmenter's prediction
    assert settings["min_gain_dice"] >= DEFAULT_MIN_GAIN_DICE
    params, notices = read_suggestion_settings(package)
    assert (params.min_gain_dice, params.min_gain_source, notices) == (settings["min_gain_dice"],
                                                                       GainSource.CALIBRATED, [])
    tuned = set(json.loads((tmp_path / "calibration" / "calibration.json").read_text())["case_ids"])
    assert len(tuned) == 2 and tuned <= set(split.train)


def test_calibration_refuses_validation_cases_and_measurement_refuses_training_cases(tmp_path, data_dir):
    common = dict(data_dir=data_dir, model_dir=None, queries_per_case=1, seed=0, split_file=DEFAULT_SPLIT_FILE)
    with pytest.raises(ValueError, match="training-split"):
        calibrate_suggestions.calibrate(StudySettings(split_side="validation", mix=VALIDATION_MIX, **common))
    with pytest.raises(ValueError, match="validation-split"):
        measure_suggestions.measure(StudySettings(split_side="train", mix=TRAIN_MIX, **common), tmp_path)


def test_measurement_writes_the_before_after_table_and_figures(tmp_path, data_dir):
    out = tmp_path / "measured"
    assert measure_suggestions.main(["--data", str(data_dir), "--out", str(out), "--max-cases", "2",
                                     "--queries-per-case", "2", "--bootstrap", "20", "--min-gain", "0.01"]) == 0
    table = (out / measure_suggestions.TABLE_FILE).read_text()
    for row in (measure_suggestions.NONE, *STRATEGIES, "offered", "offered, on segmenter predictions",
                "not offered (below the threshold)", "segmenter"):
        assert f"| {row} |" in table
    assert "expected Dice gain >= 0.01" in table
    data = json.loads((out / measure_suggestions.RESULTS_FILE).read_text())
    assert len(data["queries"]) == 2 * 3
    assert {q["case_id"] for q in data["queries"]} <= set(load_split(DEFAULT_SPLIT_FILE).validation)
    for query in data["queries"]:
        assert set(query["dice_after"]) == set(STRATEGIES)
        offered = [e for e in query["edits"] if e["offered"]]
        assert all(e["expected_gain"] >= 0.01 for e in offered)
        if not offered:
            assert query["dice_after"]["all offered"] == query["dice_before"]
    assert (out / measure_suggestions.GAINS_FIGURE).stat().st_size > 0
    assert (out / measure_suggestions.DICE_FIGURE).stat().st_size > 0
    (out / measure_suggestions.TABLE_FILE).unlink()
    assert measure_suggestions.main(["--out", str(out), "--redraw", "--bootstrap", "20"]) == 0
    assert (out / measure_suggestions.TABLE_FILE).read_text() == table  # the same tables without any QC run
