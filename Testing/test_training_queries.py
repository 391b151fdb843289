"""Query generation: every defect makes a valid, different label map; targets match the truth exactly."""

from __future__ import annotations

import numpy as np
import pytest

from SegQCLib.quality.metrics import multiclass_dice
from training.queries import (
    PERTURBATIONS,
    TRAIN_MIX,
    VALIDATION_MIX,
    Defect,
    apply_defect,
    compute_targets,
    perturbation_queries,
)

LABELS = (1, 2)


@pytest.fixture(scope="module")
def truth(hippocampus_case):
    return hippocampus_case[1].array


def test_the_ground_truth_as_query_has_dice_one_and_an_empty_error_map(truth):
    targets = compute_targets(truth.copy(), truth, LABELS)
    assert targets.dice == 1.0
    assert targets.nsd == 1.0
    assert not targets.error_maps.any()


def test_error_maps_are_the_per_class_disagreement_with_the_truth(truth):
    query = apply_defect(truth, Defect.BOUNDARY, LABELS, np.random.default_rng(1), 1.0)
    targets = compute_targets(query, truth, LABELS)
    for index, label in enumerate(LABELS):
        np.testing.assert_array_equal(targets.error_maps[index], (query == label) != (truth == label))
    assert targets.dice == pytest.approx(multiclass_dice(query, truth, LABELS))
    assert 0.0 < targets.dice < 1.0


@pytest.mark.parametrize("defect", PERTURBATIONS, ids=lambda d: d.value)
def test_every_defect_changes_the_mask_and_keeps_valid_labels(truth, defect):
    rng = np.random.default_rng(3)
    changed = [apply_defect(truth, defect, LABELS, rng, 0.8) for _ in range(3)]
    for query in changed:
        assert query.shape == truth.shape and query.dtype == truth.dtype
        assert set(np.unique(query)) <= {0, *LABELS}
    assert any(not np.array_equal(q, truth) for q in changed), f"{defect.value} never changed the mask"


def test_stronger_seggen_gives_lower_dice_on_average(truth):
    rng = np.random.default_rng(5)
    mild = [multiclass_dice(apply_defect(truth, Defect.SEGGEN, LABELS, rng, 0.0), truth, LABELS) for _ in range(6)]
    strong = [multiclass_dice(apply_defect(truth, Defect.SEGGEN, LABELS, rng, 1.0), truth, LABELS) for _ in range(6)]
    assert np.mean(strong) < np.mean(mild)


def test_queries_are_reproducible_from_the_seed_and_differ_between_seeds(truth):
    first = perturbation_queries(truth, LABELS, 6, np.random.default_rng(11), TRAIN_MIX)
    again = perturbation_queries(truth, LABELS, 6, np.random.default_rng(11), TRAIN_MIX)
    other = perturbation_queries(truth, LABELS, 6, np.random.default_rng(12), TRAIN_MIX)
    assert all(np.array_equal(a.mask, b.mask) and a.defects == b.defects for a, b in zip(first, again))
    assert any(not np.array_equal(a.mask, b.mask) for a, b in zip(first, other))


def test_queries_cover_a_wide_range_of_quality(truth):
    queries = perturbation_queries(truth, LABELS, 40, np.random.default_rng(2), VALIDATION_MIX)
    dice = np.array([multiclass_dice(q.mask, truth, LABELS) for q in queries])
    assert dice.max() == 1.0  # the identity share
    assert dice.min() < 0.6
    assert len(np.unique(np.clip((dice * 10).astype(int), 0, 9))) >= 4


def test_validation_mix_composes_more_defects_than_training_mix(truth):
    train = perturbation_queries(truth, LABELS, 40, np.random.default_rng(4), TRAIN_MIX)
    validation = perturbation_queries(truth, LABELS, 40, np.random.default_rng(4), VALIDATION_MIX)
    assert max(len(q.defects) for q in validation) == 3
    assert max(len(q.defects) for q in train) <= 2
    assert np.mean([len(q.defects) for q in validation]) > np.mean([len(q.defects) for q in train])
