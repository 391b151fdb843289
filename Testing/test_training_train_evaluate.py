"""Training (a few iterations on real queries) and the evaluation pipeline with its baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from training_helpers import tiny_bank

from SegQCLib.geometry import Geometry
from SegQCLib.network.package import load_model_package
from SegQCLib.network.qcresunet import QCOutput, error_logits_from_truth, one_hot
from SegQCLib.quality.metrics import case_metrics, multiclass_dice
from SegQCLib.quality.regions import RegionParams, find_error_boxes
from training.bank import load_bank
from training.dataset import Batch
from training.evaluate import (
    BAND,
    CONSTANT,
    NETWORK_ESTIMATE,
    NETWORK_HEAD,
    TTA,
    QueryScores,
    _boxes_array,
    band_prior,
    estimate_scores,
    evaluate_bank,
    localisation_scores,
    markdown_table,
    summarize,
    tta_error_prob,
)
from training.train import (
    METRICS_FILE,
    Trainer,
    TrainSettings,
    estimated_case_dice,
    learning_rate_at,
    multitask_loss,
    selection_score,
    training_progress,
)

LABELS = [1, 2]
TINY_MODEL = {"widths": [4, 8, 8, 8], "full_res_width": 4, "case_head_hidden": 8}


@pytest.fixture(scope="module")
def bank(hippocampus_cases):
    return tiny_bank()


def _settings(**changes) -> TrainSettings:
    values = dict(iterations=4, batch_size=2, evaluate_every=2, checkpoint_every=2, tuning_cases=1, tuning_queries=4,
                  warmup_iterations=2, epoch_size=8, threads=2, model_overrides=TINY_MODEL)
    values.update(changes)
    return TrainSettings(**values)


@pytest.fixture(scope="module")
def trained_run(bank, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    summary = Trainer(bank, out, _settings()).train()
    return out, summary


def test_training_writes_checkpoint_metrics_and_loadable_best_packages(trained_run):
    out, summary = trained_run
    assert summary["iterations"] == 4
    assert (out / "checkpoint.pt").is_file()
    records = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    assert [r["iteration"] for r in records] == [2, 4]
    for name in ("best_mae", "best_r", "best", "last"):
        package = load_model_package(out / name)
        assert package.config.trained and package.config.widths == TINY_MODEL["widths"]
        assert "train_mean_dice" in package.config.validation_metrics


def test_resumed_training_continues_from_the_checkpoint(bank, trained_run, tmp_path):
    out, _ = trained_run
    trainer = Trainer(bank, out, _settings(iterations=6))
    assert trainer.resume() and trainer.iteration == 4
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert trainer.train()["iterations"] == 6
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_learning_rate_warms_up_then_decays_to_the_minimum():
    settings = TrainSettings(iterations=100, warmup_iterations=10, learning_rate=1e-3, min_learning_rate=1e-5)
    rates = [learning_rate_at(i, training_progress(i, 0.0, settings), settings) for i in range(101)]
    assert rates[0] < rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[100] == pytest.approx(1e-5)
    capped = TrainSettings(iterations=100, warmup_iterations=10, max_minutes=1.0)
    assert training_progress(20, 60.0, capped) == 1.0  # the time cap ends the schedule


def test_loss_is_zero_for_a_perfect_prediction_and_grows_with_errors():
    error_maps = torch.zeros(2, 2, 4, 4, 4)
    error_maps[0, 0, :2] = 1
    batch = Batch(torch.zeros(2, 1, 4, 4, 4), torch.zeros(2, 4, 4, 4, dtype=torch.long), error_maps,
                  torch.tensor([0.5, 1.0]), torch.tensor([0.4, 1.0]), torch.zeros(2, 4, 4, 4, dtype=torch.long))
    perfect = QCOutput((error_maps * 2 - 1) * 50, batch.dice.clone(), batch.nsd.clone())
    wrong = QCOutput(-perfect.error_logits, 1 - batch.dice, 1 - batch.nsd)
    settings = TrainSettings(pearson_weight=0.0)
    assert multitask_loss(perfect, batch, settings)[0].item() == pytest.approx(0.0, abs=1e-3)
    assert multitask_loss(wrong, batch, settings)[0].item() > 2.0


def _truth_batch() -> Batch:
    """Two samples on a 6^3 grid: the first query misses half of class 1, the second is the truth."""
    truth = torch.zeros(2, 6, 6, 6, dtype=torch.long)
    truth[:, 1:5, 1:5, 1:3] = 1
    truth[:, 1:5, 1:5, 3:5] = 2
    query = truth.clone()
    query[0, 1:3][query[0, 1:3] == 1] = 0
    errors = torch.stack([torch.stack([(q == c) ^ (t == c) for c in LABELS]) for q, t in zip(query, truth)]).float()
    dice = torch.tensor([float(multiclass_dice(query[0].numpy(), truth[0].numpy(), LABELS)), 1.0])
    return Batch(torch.zeros(2, 1, 6, 6, 6), query, errors, dice, dice.clone(), truth)


def test_truth_output_loss_is_small_for_the_true_segmentation_and_large_for_the_query_copied():
    batch = _truth_batch()
    onehot = torch.nn.functional.one_hot(batch.truth, 3).permute(0, 4, 1, 2, 3).float()
    copied = torch.nn.functional.one_hot(batch.query, 3).permute(0, 4, 1, 2, 3).float()
    settings = TrainSettings()

    def loss(truth_logits) -> float:
        errors = error_logits_from_truth(truth_logits, one_hot(batch.query, LABELS))
        return multitask_loss(QCOutput(errors, batch.dice, batch.nsd, truth_logits), batch, settings, LABELS)[0].item()

    right, copy = loss((onehot * 2 - 1) * 30), loss((copied * 2 - 1) * 30)
    assert right < 0.05
    assert copy > right + 0.5  # copying the query misses its error: a visible price


def test_estimated_case_dice_matches_segqc_formula_on_the_true_error_map():
    batch = _truth_batch()
    estimate = estimated_case_dice(batch.error_maps, one_hot(batch.query, LABELS))
    torch.testing.assert_close(estimate, batch.dice, atol=1e-6, rtol=0)


def test_selection_prefers_a_model_that_leaves_perfect_queries_alone():
    good = {"est_dice_mae": 0.05, "error_map_dice": 0.6, "perfect_est_dice": 0.99}
    flags_everything = {"est_dice_mae": 0.05, "error_map_dice": 0.6, "perfect_est_dice": 0.85}
    assert selection_score(good) < selection_score(flags_everything)


# --- evaluation ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validation_case(bank):
    return load_bank(bank, "validation")[0]


def _geometry(case) -> Geometry:
    return Geometry(tuple(case.truth.shape), tuple(reversed(case.spacing_zyx_mm)))


def test_an_oracle_error_map_scores_perfectly_on_every_localisation_metric(validation_case):
    case = validation_case
    query = case.queries[0]
    oracle = {c: ((query == c) ^ (case.truth == c)).astype(np.float32) for c in LABELS}
    geometry = _geometry(case)
    axis = geometry.default_slice_axis()
    params = RegionParams()
    true_boxes = {c: _boxes_array(find_error_boxes({c: oracle[c]}, geometry, axis, params), axis, c) for c in LABELS}
    scores = QueryScores(case.case_id, case.sources[0], "x", 0.0, 0.0)
    estimate_scores(scores, oracle, query, case.truth, LABELS, axis)
    localisation_scores(scores, oracle, query, case.truth, LABELS, geometry, axis, params, true_boxes)
    truth = case_metrics(query, case.truth, LABELS, case.spacing_zyx_mm)
    np.testing.assert_allclose(scores.pred_class_dice, [c.dice for c in truth.classes], atol=1e-9)
    assert max(scores.slice_abs_errors, default=0.0) < 1e-9
    assert scores.error_map_dice == [1.0, 1.0]
    matched, predicted, true = scores.boxes["0.1"]
    assert matched == predicted == true
    if np.isfinite(scores.correction_area):
        assert scores.correction_area == pytest.approx(1.0)


def test_boundary_band_prior_marks_only_voxels_next_to_the_query_boundary(validation_case):
    query = validation_case.truth
    band = band_prior(query, LABELS)
    for label in LABELS:
        region = query == label
        assert band[label][region].any() and band[label][~region].any()
    deep_background = np.ones(query.shape, dtype=bool)
    deep_background[tuple(slice(max(0, lo - 2), hi + 2) for lo, hi in
                          zip(np.argwhere(query > 0).min(0), np.argwhere(query > 0).max(0) + 1))] = False
    assert not any(band[c][deep_background].any() for c in LABELS)


def test_tta_baseline_error_is_zero_where_tta_agrees_with_the_query(validation_case):
    query = validation_case.truth
    probabilities = np.stack([(query == k).astype(np.float32) for k in range(3)])
    assert not any(v.any() for v in tta_error_prob(probabilities, query, LABELS).values())


def test_evaluation_scores_every_method_on_the_same_queries(bank, trained_run):
    out, _ = trained_run
    cases = load_bank(bank, "validation")[:1]
    results = evaluate_bank(cases, out / "last", out / "best_r", bank / "segmenter", 0.6, max_queries_per_case=2)
    assert {NETWORK_HEAD, NETWORK_ESTIMATE, CONSTANT, BAND, TTA} <= set(results)
    sources = [s.source for s in results[NETWORK_HEAD]]
    assert all([s.source for s in scores] == sources for scores in results.values())
    assert all(s.pred_dice == 0.6 for s in results[CONSTANT])
    summaries = {name: summarize(scores, with_maps=name != CONSTANT, n_resamples=20)
                 for name, scores in results.items()}
    table = markdown_table(summaries, {k: len(v) for k, v in results.items()})
    assert "| case Dice MAE | ≤ 0.03 |" in table and NETWORK_ESTIMATE in table


def test_bundled_package_loads_with_half_size_weights_and_a_card_with_the_license(bank, trained_run, tmp_path):
    from SegQCLib.network.package import WEIGHTS_FILE, load_state_dict
    from training.bundle import bundle

    out, _ = trained_run
    model_dir = bundle(out, "best_mae", bank, tmp_path / "model", tmp_path / "segmenter", None)
    package = load_model_package(model_dir)
    assert package.config.trained and "CC-BY-SA" in package.config.license
    assert all(v.dtype == torch.float16 for v in load_state_dict(model_dir / WEIGHTS_FILE).values()
               if v.is_floating_point())
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert "CC-BY-SA 4.0" in card and "Simpson" in card
    original = load_model_package(out / "best_mae").model.state_dict()
    for key, value in package.model.state_dict().items():
        torch.testing.assert_close(value, original[key], atol=1e-2, rtol=1e-2)
    assert (tmp_path / "segmenter" / "segmenter.pt").is_file()


def test_pearson_term_penalises_predictions_that_rank_cases_backwards():
    error_maps = torch.zeros(4, 2, 4, 4, 4)
    batch = Batch(torch.zeros(4, 1, 4, 4, 4), torch.zeros(4, 4, 4, 4, dtype=torch.long), error_maps,
                  torch.tensor([0.2, 0.4, 0.6, 0.8]), torch.tensor([0.2, 0.4, 0.6, 0.8]),
                  torch.zeros(4, 4, 4, 4, dtype=torch.long))
    logits = torch.full_like(error_maps, -50.0)
    same_order = QCOutput(logits, torch.tensor([0.3, 0.4, 0.5, 0.6]), batch.nsd)
    reversed_order = QCOutput(logits, torch.tensor([0.6, 0.5, 0.4, 0.3]), batch.nsd)
    with_term = TrainSettings(pearson_weight=1.0)

    def added(output) -> float:
        plain = multitask_loss(output, batch, TrainSettings())[0].item()
        return multitask_loss(output, batch, with_term)[0].item() - plain

    assert added(same_order) == pytest.approx(0.0, abs=1e-4)  # r = 1
    assert added(reversed_order) == pytest.approx(2.0, abs=1e-4)  # r = -1


def test_segmentation_pretraining_leaves_the_case_head_out_of_the_loss():
    batch = _truth_batch()
    settings = TrainSettings(empty_query_probability=1.0)
    onehot = torch.nn.functional.one_hot(batch.truth, 3).permute(0, 4, 1, 2, 3).float() * 20

    def loss(dice) -> float:
        output = QCOutput(error_logits_from_truth(onehot, one_hot(batch.query, LABELS)), dice, dice, onehot)
        return multitask_loss(output, batch, settings, LABELS)[0].item()

    assert loss(torch.zeros(2)) == pytest.approx(loss(torch.ones(2)))


def test_training_only_the_case_head_leaves_every_other_weight_as_it_was(bank, trained_run, tmp_path):
    out, _ = trained_run
    settings = _settings(case_head_only=True, init=str(out / "last"))
    trainer = Trainer(bank, tmp_path / "head", settings)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("case_head.") for k in changed)
