"""The domain check: a case is compared with the profile of a model's training cases, and says why it differs.

Synthetic training data: 40x48x40 images at 1 mm of a two-part structure (classes 1 and 2, a few thousand mm³)
on a textured background, with random sizes, positions and contrast.  Each test changes one property of an
otherwise typical case.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from SegQCLib.errors import ModelError
from SegQCLib.geometry import Geometry
from SegQCLib.network.config import ModelConfig
from SegQCLib.network.domain import (
    DOMAIN_FILE,
    DomainProfile,
    Spread,
    UncertaintyProfile,
    build_domain_profile,
    read_domain_profile,
    write_domain_profile,
)
from SegQCLib.network.domain_check import DomainReport, add_uncertainty, check_domain

SHAPE = (40, 48, 40)
CONFIG = ModelConfig(classes={1: "head", 2: "tail"}, modalities=["T1"])


def make_case(rng: np.random.Generator, scale: float = 1.0, spacing_xyz=(1.0, 1.0, 1.0), shape=SHAPE,
              contrast: float = 1.0):
    """(image, labels, geometry): an ellipsoid split into class 1 (front half) and class 2 (back half)."""
    z, y, x = np.meshgrid(*(np.arange(s, dtype=float) for s in shape), indexing="ij")
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    radii = np.array([6.0, 10.0, 5.0]) * scale * rng.uniform(0.9, 1.1, 3)
    inside = ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2
    labels = np.where(inside <= 1, np.where(y < centre[1], 1, 2), 0).astype(np.uint8)
    background = 100 + rng.uniform(15, 25) * np.sin(x / 3 + rng.uniform(0, 6)) * np.cos(y / 4) + rng.normal(0, 5, shape)
    image = np.where(labels > 0, 60 * contrast * rng.uniform(0.9, 1.1), background) + rng.normal(0, 3, shape)
    return image.astype(np.float32), labels, Geometry(tuple(shape), spacing_xyz)


@pytest.fixture(scope="module")
def profile() -> DomainProfile:
    rng = np.random.default_rng(0)
    return build_domain_profile((make_case(rng) for _ in range(12)), CONFIG, source="synthetic training cases")


def check(profile, image, labels, geometry, ignored=()) -> DomainReport:
    return check_domain(profile, [image], labels, geometry, CONFIG, ignored)


def failed(report: DomainReport) -> dict[str, str]:
    return {c.name: c.message for c in report.checks if not c.passed}


# --- the profile ------------------------------------------------------------------------------------------
def test_profile_records_spacing_classes_and_which_classes_every_case_has(profile):
    assert profile.cases == 12 and profile.source == "synthetic training cases"
    assert [s.min for s in profile.spacing_zyx_mm] == [1.0, 1.0, 1.0]
    assert sorted(profile.classes) == [1, 2] and profile.required_classes == [1, 2]
    assert profile.classes[1].name == "head" and profile.classes[1].cases == 12
    assert 500 < profile.classes[1].volume_mm3.min <= profile.classes[1].volume_mm3.max < 2000


def test_profile_intensity_histogram_is_a_distribution_over_the_normalised_range(profile):
    modality = profile.modalities[0]
    assert modality.name == "T1" and len(modality.histogram_edges) == len(modality.histogram) + 1
    assert sum(modality.histogram) == pytest.approx(1.0)
    assert modality.quantiles[0].median < modality.quantiles[-1].median


def test_profile_survives_domain_json(tmp_path, profile):
    profile.uncertainty = UncertaintyProfile(2, 12, Spread.of([0.1, 0.2, 0.3]), "calibration")
    write_domain_profile(tmp_path, profile)
    assert read_domain_profile(tmp_path) == profile
    profile.uncertainty = None


def test_a_package_without_domain_json_has_no_profile(tmp_path):
    assert read_domain_profile(tmp_path) is None


def test_an_unreadable_domain_json_is_refused_with_what_to_do(tmp_path):
    (tmp_path / DOMAIN_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ModelError, match="segqc model profile"):
        read_domain_profile(tmp_path)


def test_profile_needs_one_image_per_modality():
    image, labels, geometry = make_case(np.random.default_rng(1))
    with pytest.raises(ModelError, match="modalities"):
        build_domain_profile([([image, image], labels, geometry)], CONFIG)


# --- cases like the training data ---------------------------------------------------------------------------
def test_a_new_case_from_the_training_distribution_is_in_domain(profile):
    report = check(profile, *make_case(np.random.default_rng(99)))
    assert report.in_domain is True and report.reasons == [] and report.score < 1


def test_a_bad_segmentation_of_the_right_structure_stays_in_domain(profile):
    image, labels, geometry = make_case(np.random.default_rng(98))
    shifted = np.roll(labels, 3, axis=1)  # a poor segmentation: 3 mm off
    assert check(profile, image, shifted, geometry).in_domain is True


# --- cases unlike it ---------------------------------------------------------------------------------------
def test_coarse_spacing_is_out_of_domain_and_names_both_spacings(profile):
    image, labels, geometry = make_case(np.random.default_rng(2), spacing_xyz=(1.0, 1.0, 4.0))
    report = check(profile, image, labels, geometry)
    assert report.in_domain is False
    assert "1×1×4 mm" in failed(report)["spacing"] and "1 mm" in failed(report)["spacing"]


def test_a_structure_far_larger_than_in_training_is_out_of_domain_with_volumes_in_mm3(profile):
    image, labels, geometry = make_case(np.random.default_rng(3), scale=2.2, shape=(60, 80, 60))
    report = check(profile, image, labels, geometry)
    assert report.in_domain is False
    assert "mm³" in failed(report)["volume"] and "training cases" in failed(report)["volume"]


def test_intensities_unlike_the_training_images_are_out_of_domain(profile):
    image, labels, geometry = make_case(np.random.default_rng(4))
    report = check(profile, np.where(image > 80, 1000.0, image).astype(np.float32) ** 2, labels, geometry)
    assert report.in_domain is False
    assert {"intensity", "histogram"} & set(failed(report))


def test_a_structure_brighter_than_in_training_is_out_of_domain(profile):
    image, labels, geometry = make_case(np.random.default_rng(5), contrast=4.0)
    report = check(profile, image, labels, geometry)
    assert report.in_domain is False and "brighter" in failed(report)["class_intensity"]


def test_labels_the_model_does_not_know_are_out_of_domain_and_named(profile):
    image, labels, geometry = make_case(np.random.default_rng(6))
    report = check(profile, image, labels, geometry, ignored=[3, 7])
    assert report.in_domain is False and "3, 7" in failed(report)["labels"]


def test_one_label_for_the_whole_structure_is_a_warning_naming_the_missing_class_not_out_of_domain(profile):
    image, labels, geometry = make_case(np.random.default_rng(7))
    labels[labels == 2] = 1  # a binary mask: class 1 only
    report = check(profile, image, labels, geometry)
    assert report.in_domain is True
    assert len(report.warnings) == 1 and "2 (tail) is missing" in report.warnings[0]


def test_a_much_larger_field_of_view_is_a_warning_only(profile):
    image, labels, geometry = make_case(np.random.default_rng(8))
    padded = np.pad(image, ((40, 40), (60, 60), (40, 40)), mode="reflect")
    report = check(profile, padded, np.pad(labels, ((40, 40), (60, 60), (40, 40))), Geometry(padded.shape))
    assert "field_of_view" in failed(report) and "field of view" in report.warnings[0]
    assert not any(c.decisive for c in report.checks if c.name == "field_of_view")


# --- the network's own uncertainty ----------------------------------------------------------------------------
def test_mirror_disagreement_above_the_calibrated_limit_is_a_warning(profile):
    calibrated = DomainProfile(**{**profile.__dict__,
                                  "uncertainty": UncertaintyProfile(2, 12, Spread.of([0.1, 0.2, 0.3]))})
    report = check(calibrated, *make_case(np.random.default_rng(9)))
    add_uncertainty(report, disagreement=5.0, dice_change=0.3, axis_zyx=2, profile=calibrated)
    assert report.in_domain is True and any("mirrored" in w for w in report.warnings)
    assert report.uncertainty["flip_disagreement"] == 5.0 and report.uncertainty["limit"] > 0


def test_mirror_disagreement_without_calibration_is_recorded_without_judgement(profile):
    report = check(profile, *make_case(np.random.default_rng(10)))
    add_uncertainty(report, disagreement=5.0, dice_change=0.3, axis_zyx=2, profile=profile)
    assert report.uncertainty["limit"] is None and report.warnings == []


def test_domain_report_round_trips_through_json(profile):
    report = check(profile, *make_case(np.random.default_rng(11)), ignored=[4])
    assert DomainReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
