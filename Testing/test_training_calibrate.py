"""Temperature calibration of a truth-output QC model on its run's tuning cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from training_helpers import tiny_bank

from SegQCLib.network.package import load_model_package
from training.calibrate import (
    CALIBRATION_FILE,
    TuningOutputs,
    calibrate,
    fit_temperature,
    lowest_estimate_mae_temperature,
    scores_at,
)
from training.train import Trainer, TrainSettings

LABELS = [1, 2]
TINY_TRUTH_MODEL = {"widths": [4, 8, 8, 8], "full_res_width": 4, "case_head_hidden": 8, "output": "truth"}


def _overconfident(scale: float, seed: int = 0) -> TuningOutputs:
    """Labels drawn from softmax(z); the network reports scale * z (over-confident when scale > 1)."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(4, 3, 8, 8, 8, generator=generator) * 1.5
    truth = torch.distributions.Categorical(logits=z.permute(0, 2, 3, 4, 1)).sample()
    query = torch.ones_like(truth)  # every voxel near the query: the whole volume is scored
    return TuningOutputs(z * scale, query, truth, np.full(4, 0.5), np.zeros(4, dtype=bool))


def test_the_fitted_temperature_undoes_a_known_over_confidence():
    torch.manual_seed(0)
    assert fit_temperature(_overconfident(2.5), LABELS) == pytest.approx(2.5, rel=0.15)


def test_calibrated_cross_entropy_is_no_worse_than_uncalibrated():
    outputs = _overconfident(3.0, seed=1)
    fitted = fit_temperature(outputs, LABELS)
    assert scores_at(outputs, fitted, LABELS)["near_cross_entropy"] <= scores_at(outputs, 1.0, LABELS)[
        "near_cross_entropy"]


def test_calibrating_a_run_writes_a_package_with_its_temperature_and_the_tuning_figures(hippocampus_cases,
                                                                                        tmp_path):
    bank = tiny_bank()
    settings = TrainSettings(iterations=2, batch_size=2, evaluate_every=2, checkpoint_every=2, tuning_cases=1,
                             tuning_queries=4, warmup_iterations=1, epoch_size=4, threads=2,
                             model_overrides=TINY_TRUTH_MODEL)
    Trainer(bank, tmp_path / "run", settings).train()
    result = calibrate(tmp_path / "run", "last", bank, tmp_path / "calibrated")
    package = load_model_package(tmp_path / "calibrated")
    assert package.config.truth_temperature == pytest.approx(result["after"]["temperature"], abs=1e-3)
    assert result["after"]["near_cross_entropy"] <= result["before"]["near_cross_entropy"] + 1e-6
    assert json.loads((tmp_path / "calibrated" / CALIBRATION_FILE).read_text())["queries"] == result["queries"]


def test_the_estimate_objective_picks_the_grid_temperature_with_the_lowest_dice_error():
    outputs = _overconfident(2.0, seed=2)
    chosen = lowest_estimate_mae_temperature(outputs, LABELS, grid=(0.5, 1.0, 2.0, 4.0))
    errors = {t: scores_at(outputs, t, LABELS)["est_dice_mae"] for t in (0.5, 1.0, 2.0, 4.0)}
    assert errors[chosen] == min(errors.values())
