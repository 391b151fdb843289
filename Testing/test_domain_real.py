"""The bundled hippocampus model knows its domain: real other anatomy is flagged with reasons a user understands,
real hippocampus validation cases are not.

The decision is made before the network runs (:meth:`QCEngine.check_input`), so these tests need no network
pass except where they say so.  ``training/evaluate_domain.py`` measures the flag rates on all validation
queries (the README's figures).
"""

from __future__ import annotations

import pytest

from SegQCLib.engine import QCEngine
from SegQCLib.errors import OutOfDomainError
from SegQCLib.io.case import load_case
from SegQCLib.io.datasets import default_shared_data_dir
from training.evaluate_domain import OTHER_SUBDIR, other_cases
from training.splits import DEFAULT_SPLIT_FILE, load_split

pytestmark = pytest.mark.realdata

OTHER_DIR = default_shared_data_dir() / OTHER_SUBDIR


@pytest.fixture(scope="module")
def engine() -> QCEngine:
    return QCEngine(None, "cpu")  # the bundled model with its domain.json


@pytest.fixture(scope="module")
def others():
    if not OTHER_DIR.is_dir():
        pytest.skip(f"other-anatomy data not found at {OTHER_DIR}")
    found = other_cases(OTHER_DIR)
    assert len(found) >= 5, found
    return {name: load_case([image], seg, resample_seg=True) for name, image, seg in found}


def test_the_bundled_profile_comes_from_the_training_split_only(engine):
    profile = engine.domain_profile
    assert profile is not None and profile.cases == len(load_split(DEFAULT_SPLIT_FILE).train)
    assert "'train'" in profile.source and profile.uncertainty is not None


def test_every_case_of_other_anatomy_is_outside_the_domain(engine, others):
    verdicts = {name: engine.check_input(case).domain.in_domain for name, case in others.items()}
    assert verdicts == {name: False for name in others}


def test_a_ct_is_flagged_for_its_spacing_and_intensities(engine, others):
    reasons = " ".join(engine.check_input(others["spleen_ct"]).domain.reasons)
    assert "Voxel spacing 0.795×0.795×5 mm" in reasons
    assert "does not look like the model's T1 training images" in reasons


def test_a_multi_organ_segmentation_is_flagged_for_labels_the_model_does_not_know(engine, others):
    checked = engine.check_input(others["totalseg_mr"])
    assert any("label value(s) 3, 4, 5" in reason for reason in checked.domain.reasons)
    assert any("does not know" in notice for notice in checked.notices)


def test_a_spinal_cord_on_t1_mri_is_flagged_for_its_size_and_brightness_and_the_missing_class_is_named(engine, others):
    domain = engine.check_input(others["sct_t1_cord"]).domain
    assert any("Class 1 (anterior) measures 77×" in reason for reason in domain.reasons)
    assert any("brighter" in reason for reason in domain.reasons)
    assert any("class 2 (posterior) is missing" in warning for warning in domain.warnings)


def test_strict_refuses_other_anatomy_before_the_network_runs(engine, others):
    with pytest.raises(OutOfDomainError, match="outside the domain of model segqc-hippocampus"):
        engine.run_case(others["slicer_chest_ct"], strict=True)  # 500 windows if it ran the network


def test_hippocampus_validation_cases_are_in_domain(engine, hippocampus_cases):
    validation = set(load_split(DEFAULT_SPLIT_FILE).validation)
    cases = [c for c in hippocampus_cases if c.case_id in validation]
    flagged = {c.case_id: engine.check_input(load_case(c.images, c.label)).domain.reasons for c in cases}
    assert len(cases) == len(validation)
    assert {case_id: reasons for case_id, reasons in flagged.items() if reasons} == {}


def test_a_validation_case_runs_in_domain_through_the_network_with_its_mirror_uncertainty(engine, hippocampus_cases):
    validation = load_split(DEFAULT_SPLIT_FILE).validation[0]
    files = next(c for c in hippocampus_cases if c.case_id == validation)
    domain = engine.run_case(load_case(files.images, files.label), strict=True).report.domain
    assert domain.in_domain is True and domain.uncertainty["flip_disagreement"] >= 0
    assert domain.uncertainty["training_p95"] > 0
