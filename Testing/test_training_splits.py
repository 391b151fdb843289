"""The train/validation split: by case id, disjoint, reproducible, extended (never reshuffled) as data grows,
and the committed file is that split."""

from __future__ import annotations

import pytest

from SegQCLib.errors import InputError
from training.splits import (
    DEFAULT_SPLIT_FILE,
    extend_split,
    load_or_make_split,
    load_split,
    make_split,
    save_split,
    split_from_generations,
)

IDS = [f"case_{i:03d}" for i in range(50)]
MORE = [f"case_{i:03d}" for i in range(50, 80)]


def test_split_is_disjoint_and_covers_every_case():
    split = make_split(IDS)
    assert not set(split.train) & set(split.validation)
    assert sorted(split.train + split.validation) == IDS
    assert 0 < len(split.validation) < len(IDS)


def test_split_depends_only_on_the_seed_not_the_order_of_ids():
    assert make_split(IDS, seed=3) == make_split(list(reversed(IDS)), seed=3)
    assert make_split(IDS, seed=3) != make_split(IDS, seed=4)


def test_saved_split_loads_back_identically(tmp_path):
    split = extend_split(make_split(IDS), IDS + MORE)
    save_split(split, tmp_path / "s.json")
    assert load_split(tmp_path / "s.json") == split


def test_stored_split_naming_unknown_cases_is_refused(tmp_path):
    save_split(make_split(IDS), tmp_path / "s.json")
    with pytest.raises(InputError, match="absent"):
        load_or_make_split(IDS[:10], tmp_path / "s.json")


def test_a_grown_dataset_keeps_every_existing_assignment_and_adds_the_new_cases_to_training():
    before = make_split(IDS)
    after = extend_split(before, IDS + MORE)
    assert after.validation == before.validation
    assert set(after.train) == set(before.train) | set(MORE)
    assert after.generations == (tuple(IDS), tuple(MORE))


def test_extending_with_no_new_case_changes_nothing():
    split = make_split(IDS)
    assert extend_split(split, IDS) == split


def test_stored_split_is_extended_and_saved_when_the_dataset_grows(tmp_path):
    save_split(make_split(IDS), tmp_path / "s.json")
    grown = load_or_make_split(IDS + MORE, tmp_path / "s.json")
    assert load_split(tmp_path / "s.json") == grown
    assert grown.validation == make_split(IDS).validation


def test_a_split_is_reproducible_from_its_seed_and_generations():
    split = extend_split(extend_split(make_split(IDS), IDS + MORE[:10]), IDS + MORE)
    assert split_from_generations(split.generations, split.seed) == split


def test_generations_that_disagree_with_the_cases_are_refused(tmp_path):
    split = make_split(IDS)
    with pytest.raises(InputError, match="generations"):
        type(split)(split.seed, split.train, split.validation, (tuple(IDS[:-1]),))


def test_committed_hippocampus_split_is_the_seeded_split_of_its_first_cases_extended_by_the_rest(
        hippocampus_cases):
    committed = load_split(DEFAULT_SPLIT_FILE)
    assert committed == split_from_generations(committed.generations, committed.seed)
    assert committed.cases == {c.case_id for c in hippocampus_cases}


def test_committed_hippocampus_validation_is_the_original_42_cases():
    committed = load_split(DEFAULT_SPLIT_FILE)
    assert len(committed.generations[0]) == 140
    assert committed.validation == make_split(committed.generations[0]).validation
    assert len(committed.validation) == 42
