"""The query bank and the training samples built from it (real cases, a few queries each)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from training_helpers import tiny_bank

from SegQCLib.network.config import ModelConfig
from SegQCLib.quality.metrics import multiclass_dice
from training.bank import BANK_MANIFEST, BankCase, defect_family, load_bank, source_defects, source_segmenter
from training.dataset import NO_AUGMENTATION, AugmentParams, QueryDataset, dice_bins, sampling_weights
from training.queries import HELD_OUT_FAMILIES
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


def test_bank_holds_truth_local_broad_and_model_queries(bank):
    train = load_bank(bank, "train")[0]
    families = {defect_family(s) for s in train.sources}
    assert {"identity", "local", "model", "model_tta"} <= families
    assert {source_segmenter(s) for s in train.sources} - {None} == {"fold0", "weak0"} or \
        {source_segmenter(s) for s in train.sources} - {None} == {"fold1", "weak1"}
    assert train.queries.shape[1:] == train.truth.shape == train.image.shape


def test_validation_queries_come_from_segmenters_and_defect_families_training_never_used(bank):
    validation = load_bank(bank, "validation")[0]
    assert {source_segmenter(s) for s in validation.sources} - {None} == {"heldout", "unet2d"}
    assert "unseen" in {defect_family(s) for s in validation.sources}
    train_defects = {d for case in load_bank(bank, "train") for s in case.sources for d in source_defects(s)}
    assert train_defects and not train_defects & {d.value for d in HELD_OUT_FAMILIES}
    unseen = [s for s in validation.sources if defect_family(s) == "unseen"]
    assert all(set(source_defects(s)) <= {d.value for d in HELD_OUT_FAMILIES} for s in unseen)


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


def test_sampling_weights_temper_the_dice_bin_balance_cap_repeats_and_give_the_truth_its_share():
    dice = np.array([0.05] * 2 + [0.55] * 18 + [0.97] * 180 + [1.0] * 10)
    identity = np.array([False] * 200 + [True] * 10)
    weights = sampling_weights(dice, identity, alpha=0.5, max_ratio=4.0, identity_share=0.1)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[identity].sum() == pytest.approx(0.1)
    others = weights[~identity]
    assert others.max() <= 4.0 * others.mean() * (1 + 1e-6)  # a sparse bin's queries are not repeated without bound
    assert others[0] > others[2] > others[-1]  # sparser bins still weigh more per query
    assert others[-180:].sum() > 0.5  # but the dense good-quality bin keeps most of the epoch
    assert dice_bins(np.array([0.0, 0.05, 0.55, 1.0])).tolist() == [0, 0, 5, 9]


def test_epochs_draw_the_truth_at_its_share(dataset):
    indices = dataset.epoch_indices(4000, np.random.default_rng(0))
    assert dataset.identity[indices].mean() == pytest.approx(0.1, abs=0.02)


def test_a_blanked_query_shows_no_segmentation_and_every_truth_voxel_is_an_error(bank):
    always_blank = QueryDataset(load_bank(bank, "train"), ModelConfig(), NO_AUGMENTATION, empty_query_probability=1.0)
    sample = always_blank.sample(1, np.random.default_rng(0))
    assert not sample.query.any() and sample.dice == 0.0
    for index, label in enumerate(LABELS):
        np.testing.assert_array_equal(sample.error_maps[index] > 0, sample.truth == label)


def test_epoch_shares_report_where_the_errors_are(dataset):
    shares = dataset.error_voxel_shares()
    assert shares["error_inside_query"] + shares["error_outside_query"] == pytest.approx(1.0)
    assert shares["identity_share"] == pytest.approx(0.1)
