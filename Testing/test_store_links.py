"""A corrections store never follows a symbolic link planted inside it: commands refuse to act through one, touch
nothing outside the store, and ``verify`` names every link (``--repair`` moves the links, not their targets)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from SegQCLib.commands.cli import main as segqc
from SegQCLib.corrections.store import CorrectionStore
from SegQCLib.corrections.verify import ProblemKind
from SegQCLib.errors import SegQCError
from SegQCLib.geometry import Geometry
from SegQCLib.io.volumes import LabelMap, Volume

pytestmark = pytest.mark.skipif(os.name != "posix", reason="symbolic links as POSIX has them")

GEOMETRY = Geometry((6, 12, 10), (0.8, 0.9, 2.5))


def correction(seed: int = 0) -> tuple[Volume, LabelMap, LabelMap]:
    rng = np.random.default_rng(seed)
    truth = np.zeros(GEOMETRY.shape_zyx, np.uint8)
    truth[1:5, 3:9, 2:8] = 1
    original = truth.copy()
    original[1] = 0
    return (Volume(rng.normal(100, 20, GEOMETRY.shape_zyx).astype(np.float32), GEOMETRY),
            LabelMap(original, GEOMETRY), LabelMap(truth, GEOMETRY))


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def store(tmp_path) -> CorrectionStore:
    store = CorrectionStore(tmp_path / "store")
    store.add("first", *_as_add(correction(0)))
    return store


def _as_add(parts):
    image, original, corrected = parts
    return [image], original, corrected


@pytest.fixture
def outside(tmp_path) -> Path:
    """Somebody else's folder with a file the store must never touch."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "precious.txt").write_text("not the store's")
    return folder


def plant(link: Path, target: Path) -> None:
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    elif link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(target)


def verify_exit(store: CorrectionStore, *extra: str) -> int:
    return segqc(["corrections", "verify", "--store", str(store.root), *extra])


@pytest.mark.parametrize("entry", ["quarantine", ".tmp", "records", "index.jsonl", "ledger.jsonl", ".lock"])
def test_add_refuses_a_store_whose_own_entry_is_a_link_and_writes_nothing_outside(store, outside, entry, capsys):
    target = outside / "precious.txt" if entry in ("index.jsonl", "ledger.jsonl", ".lock") else outside
    before = tree(outside)
    plant(store.root / entry, target)
    with pytest.raises(SegQCError, match="is a symbolic link"):
        store.add("second", *_as_add(correction(1)))
    assert tree(outside) == before  # not appended to, not truncated, nothing created there
    assert segqc(["corrections", "list", "--store", str(store.root)]) == 1
    assert "symbolic link" in capsys.readouterr().err


@pytest.mark.parametrize("entry", ["quarantine", ".tmp", "index.jsonl", ".lock", "ledger.jsonl"])
def test_verify_reports_a_planted_link_and_repair_moves_only_the_link(store, outside, entry):
    target = outside / "precious.txt" if entry in ("index.jsonl", "ledger.jsonl", ".lock") else outside
    leftover = store.tmp_dir / "first.deadbeef"  # something for the repair to quarantine
    leftover.mkdir()
    (leftover / "image_0000.nii.gz").write_bytes(b"partial")
    before = tree(outside)
    plant(store.root / entry, target)

    report = store.verify()
    assert not report.ok
    assert [p.path for p in report.problems if p.kind is ProblemKind.PLANTED_LINK] == [str(store.root / entry)]
    assert verify_exit(store) == 3

    repaired = store.verify(repair=True)
    assert tree(outside) == before
    assert not (store.root / entry).is_symlink()
    assert store.quarantine_dir.is_dir() and not store.quarantine_dir.is_symlink()
    assert any(p.is_symlink() for p in store.quarantine_dir.iterdir())  # the link itself, kept for inspection
    assert repaired.ok, repaired.to_text()
    assert store.verify().ok, store.verify().to_text()
    store.add("second", *_as_add(correction(1)))  # the store works again, inside itself
    assert tree(outside) == before
    assert [r.case_id for r in store.list()] == ["first", "second"]


def test_a_case_folder_linked_outside_is_never_written_into(store, outside):
    plant(store.records_dir / "second", outside)
    with pytest.raises(SegQCError, match="is a symbolic link"):
        store.add("second", *_as_add(correction(1)))
    assert list(outside.iterdir()) == [outside / "precious.txt"]
    assert any(p.kind is ProblemKind.PLANTED_LINK for p in store.verify().problems)


def test_records_linked_elsewhere_are_neither_listed_nor_exported(store, tmp_path):
    foreign = CorrectionStore(tmp_path / "foreign")
    foreign.add("foreign case", *_as_add(correction(2)))
    plant(store.records_dir / "foreign case", foreign.records_dir / "foreign case")
    assert [r.case_id for r in store.list()] == ["first"]
    report = store.verify()
    assert [p.kind for p in report.problems] == [ProblemKind.PLANTED_LINK]


def test_a_record_file_replaced_by_a_link_makes_the_record_damaged_and_is_not_exported(store, tmp_path):
    record = store.list()[0]
    image = record.path / "image_0000.nii.gz"
    copy = tmp_path / "copy.nii.gz"
    shutil.copyfile(image, copy)  # identical bytes: only the link is wrong
    plant(image, copy)
    problems = store.verify().problems
    assert any(p.kind is ProblemKind.CORRUPT_RECORD and "symbolic link" in p.detail for p in problems)
    assert segqc(["corrections", "export", "--store", str(store.root), "--format", "qc",
                  "--out", str(tmp_path / "export")]) == 1
    assert not (tmp_path / "export").exists()


def test_a_marker_that_is_a_link_is_refused_and_repair_writes_a_real_one(store, tmp_path, capsys):
    elsewhere = tmp_path / "marker.json"
    shutil.copyfile(store.root / "segqc-store.json", elsewhere)
    plant(store.root / "segqc-store.json", elsewhere)
    assert segqc(["corrections", "list", "--store", str(store.root)]) == 1
    assert "symbolic link" in capsys.readouterr().err
    assert verify_exit(store) == 3
    assert verify_exit(store, "--repair") == 0
    assert not (store.root / "segqc-store.json").is_symlink()
    assert [r.case_id for r in store.list()] == ["first"]
    assert store.verify().ok
