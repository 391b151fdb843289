"""The train/validation split: by case id, disjoint, reproducible, and the committed file is that split."""

from __future__ import annotations

import pytest

from SegQCLib.errors import InputError
from training.splits import DEFAULT_SPLIT_FILE, load_or_make_split, load_split, make_split, save_split

IDS = [f"case_{i:03d}" for i in range(50)]


def test_split_is_disjoint_and_covers_every_case():
    split = make_split(IDS)
    assert not set(split.train) & set(split.validation)
    assert sorted(split.train + split.validation) == IDS
    assert 0 < len(split.validation) < len(IDS)


def test_split_depends_only_on_the_seed_not_the_order_of_ids():
    assert make_split(IDS, seed=3) == make_split(list(reversed(IDS)), seed=3)
    assert make_split(IDS, seed=3) != make_split(IDS, seed=4)


def test_saved_split_loads_back_identically(tmp_path):
    split = make_split(IDS)
    save_split(split, tmp_path / "s.json")
    assert load_split(tmp_path / "s.json") == split


def test_stored_split_naming_unknown_cases_is_refused(tmp_path):
    save_split(make_split(IDS), tmp_path / "s.json")
    with pytest.raises(InputError, match="absent"):
        load_or_make_split(IDS[:10], tmp_path / "s.json")


def test_committed_hippocampus_split_is_the_seeded_split_of_the_shared_cases(hippocampus_cases):
    ids = [c.case_id for c in hippocampus_cases]
    assert load_split(DEFAULT_SPLIT_FILE) == make_split(ids)
