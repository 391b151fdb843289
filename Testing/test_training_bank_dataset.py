"""The query bank and the training samples built from it (real cases, a few queries each)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from training_helpers import tiny_bank

from SegQCLib.network.config import ModelConfig
from SegQCLib.quality.metrics import multiclass_dice
from training.bank import BANK_MANIFEST, BankCase, load_bank
from training.dataset import DICE_BINS, NO_AUGMENTATION, AugmentParams, QueryDataset, dice_bins
from training.splits import DEFAULT_SPLIT_FILE, load_split

LABELS = [1, 2]


@pytest.fixture(scope="module")
def bank(hippocampus_cases):
    return tiny_bank()


def test_bank_keeps_training_and_validation_cases_apart_as_the_split_says(bank):
    split = load_split(DEFAULT_SPLIT_FILE)
    train_ids = {c.case_id for c in load_bank(bank, "train")}
    validation_ids = {c.case_id for c in load_bank(bank, "validation")}
    assert train_ids <= set(split.train) and validation_ids <= set(split.validation)
    manifest = json.loads((bank / BANK_MANIFEST).read_text())
    assert manifest["labels"] == LABELS


def test_bank_holds_truth_perturbation_and_model_queries(bank):
    train = load_bank(bank, "train")[0]
    validation = load_bank(bank, "validation")[0]
    heads = {s.split(":")[0] for s in train.sources}
    assert "identity" in heads and "model" in heads and "model_tta" in heads
    assert any(s.startswith("model:heldout") for s in validation.sources)
    assert train.queries.shape[1:] == train.truth.shape == train.image.shape


def test_bank_case_round_trips_through_npz(bank, tmp_path):
    case = load_bank(bank, "train")[0]
    case.save(tmp_path)
    again = BankCase.load(tmp_path / f"{case.case_id}.npz")
    np.testing.assert_array_equal(again.queries, case.queries)
    assert again.sources == case.sources and again.spacing_zyx_mm == case.spacing_zyx_mm


@pytest.fixture(scope="module")
def dataset(bank):
    return QueryDataset(load_bank(bank, "train"), ModelConfig())


def _truth_from(sample) -> np.ndarray:
    """The truth implied by the sample: T_c = Q_c xor E_c (error maps are per-class disagreements)."""
    truth = np.zeros_like(sample.query)
    for index, label in enumerate(LABELS):
        truth[((sample.query == label) ^ (sample.error_maps[index] > 0))] = label
    return truth


def test_sample_without_augmentation_has_the_true_targets_in_the_model_patch(dataset):
    for index in range(len(dataset)):
        sample = dataset.sample(index, None)
        assert sample.image.shape == (1, 48, 64, 48) and sample.query.shape == (48, 64, 48)
        assert sample.dice == pytest.approx(dataset.dice[index])
        assert multiclass_dice(sample.query, _truth_from(sample), LABELS) == pytest.approx(sample.dice, abs=1e-6)


def test_targets_are_recomputed_after_spatial_augmentation(bank):
    always = AugmentParams(spatial_probability=1.0, rotation_deg=15.0, intensity_probability=0.0)
    dataset = QueryDataset(load_bank(bank, "train"), ModelConfig(), always)
    rng = np.random.default_rng(0)
    identity = [i for i, (ci, qi) in enumerate(dataset.items) if dataset.cases[ci].sources[qi] == "identity:truth"]
    for index in identity:
        sample = dataset.sample(index, rng)
        assert sample.dice == 1.0 and not sample.error_maps.any()
    changed = 0
    for index in range(len(dataset)):
        sample = dataset.sample(index, rng)
        # The targets describe the rotated query: the truth they imply reproduces the Dice target.
        assert multiclass_dice(sample.query, _truth_from(sample), LABELS) == pytest.approx(sample.dice, abs=0.02)
        changed += not np.array_equal(sample.query, dataset.sample(index, None).query)
    assert changed > 0


def test_intensity_augmentation_changes_only_the_image(bank):
    intensity_only = AugmentParams(spatial_probability=0.0, margin_jitter_voxels=0, offcentre_probability=0.0,
                                   intensity_probability=1.0)
    dataset = QueryDataset(load_bank(bank, "train"), ModelConfig(), intensity_only)
    plain = dataset.sample(1, None)
    augmented = dataset.sample(1, np.random.default_rng(3))
    np.testing.assert_array_equal(augmented.query, plain.query)
    np.testing.assert_array_equal(augmented.error_maps, plain.error_maps)
    assert augmented.dice == plain.dice
    assert not np.allclose(augmented.image, plain.image)


def test_mask_only_samples_have_a_zero_image(bank):
    dataset = QueryDataset(load_bank(bank, "train"), ModelConfig(), NO_AUGMENTATION, mask_only=True)
    assert not dataset.sample(0, None).image.any()


def test_balanced_epochs_draw_every_occupied_dice_bin_equally(dataset):
    indices = dataset.balanced_indices(60, np.random.default_rng(0))
    counts = np.bincount(dataset.bins[indices], minlength=DICE_BINS)
    occupied = counts[np.bincount(dataset.bins, minlength=DICE_BINS) > 0]
    assert occupied.min() >= occupied.max() - 1
    assert dice_bins(np.array([0.0, 0.05, 0.55, 1.0])).tolist() == [0, 0, 5, 9]


def test_replacing_the_heldout_segmenter_swaps_only_its_validation_queries(bank, tmp_path):
    import shutil

    from SegQCLib.io.datasets import hippocampus_dir
    from training.bank import replace_heldout

    copy = tmp_path / "bank"
    shutil.copytree(bank, copy)
    before = {c.case_id: c for c in load_bank(copy, "validation")}
    replace_heldout(copy, hippocampus_dir(), iterations=3)
    for case in load_bank(copy, "validation"):
        old = before[case.case_id]
        kept = [s for s in old.sources if ":heldout" not in s]
        assert [s for s in case.sources if ":heldout" not in s] == kept
        assert {s for s in case.sources if ":heldout" in s} == {"model:heldout@1", "model:heldout@3",
                                                                 "model_tta:heldout@3"}
        np.testing.assert_array_equal(case.queries[: len(kept)],
                                      old.queries[[i for i, s in enumerate(old.sources) if ":heldout" not in s]])
    assert json.loads((copy / BANK_MANIFEST).read_text())["heldout_iterations"] == 3
