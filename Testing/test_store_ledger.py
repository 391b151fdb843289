"""The store's ledger: a deleted record is reported as lost (never as mere index damage), a repair records the loss
and never makes the store look whole, ``verify`` says so every time after, version numbers are never given twice,
and a store that lost its marker gets the same advice from every command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from SegQCLib.commands.cli import main as segqc
from SegQCLib.corrections.records import metadata_digest
from SegQCLib.corrections.store import CorrectionStore
from SegQCLib.corrections.verify import ProblemKind
from SegQCLib.errors import InputError
from SegQCLib.geometry import Geometry
from SegQCLib.io.volumes import LabelMap, Volume

GEOMETRY = Geometry((6, 12, 10), (0.8, 0.9, 2.5))
EXIT_DAMAGED = 3


def correction(seed: int = 0) -> tuple[list[Volume], LabelMap, LabelMap]:
    rng = np.random.default_rng(seed)
    truth = np.zeros(GEOMETRY.shape_zyx, np.uint8)
    truth[1:5, 3:9, 2:8] = 1
    original = truth.copy()
    original[1 + seed % 3] = 0
    return ([Volume(rng.normal(100, 20, GEOMETRY.shape_zyx).astype(np.float32), GEOMETRY)],
            LabelMap(original, GEOMETRY), LabelMap(truth, GEOMETRY))


def verify_cli(store: CorrectionStore, *extra: str) -> int:
    return segqc(["corrections", "verify", "--store", str(store.root), *extra])


@pytest.fixture
def store(tmp_path) -> CorrectionStore:
    store = CorrectionStore(tmp_path / "store")
    store.add("kept", *correction(0), reviewer="ann")
    store.add("victim", *correction(1), reviewer="bob")
    return store


def test_a_deleted_record_is_lost_not_index_damage(store, capsys):
    shutil.rmtree(store.records_dir / "victim")
    report = store.verify()
    lost = [p for p in report.problems if p.kind is ProblemKind.LOST_RECORD]
    assert [p.record_id for p in lost] == ["victim/v0001"]
    assert "bob" in lost[0].detail and "missing" in lost[0].detail
    assert verify_cli(store) == EXIT_DAMAGED
    text = capsys.readouterr().out
    assert "1 record(s) LOST" in text and "no record is lost" not in text


def test_repair_records_the_loss_and_verify_says_so_every_time_after(store, capsys):
    shutil.rmtree(store.records_dir / "victim")
    assert verify_cli(store, "--repair") == EXIT_DAMAGED  # repaired what it could, but not whole
    for _ in range(2):
        assert verify_cli(store) == EXIT_DAMAGED
        assert "victim/v0001" in capsys.readouterr().out
    report = store.verify()
    assert not report.ok and [p.record_id for p in report.lost] == ["victim/v0001"]
    assert "recorded" in report.lost[0].detail
    assert [r.case_id for r in store.list()] == ["kept"]  # the index no longer lists it; the ledger remembers


def test_an_export_of_a_store_that_lost_a_record_says_so(store, tmp_path):
    from SegQCLib.corrections.export import export_store

    shutil.rmtree(store.records_dir / "victim")
    result = export_store(store, "qc", tmp_path / "export")
    assert [c.record_id for c in result.cases] == ["kept/v0001"]
    assert any("lost" in notice and "victim/v0001" in notice for notice in result.notices)


def test_the_next_record_of_a_deleted_case_gets_a_new_version_number(store):
    shutil.rmtree(store.records_dir / "victim")
    store.verify(repair=True)
    assert store.add("victim", *correction(2)).record_id == "victim/v0002"


def test_version_numbers_survive_the_loss_of_the_record_and_of_its_quarantine_copy(store):
    second = store.add("victim", *correction(2))
    (second.path / "original.nii.gz").write_bytes(b"damaged")
    store.verify(repair=True)
    shutil.rmtree(store.quarantine_dir)
    store.quarantine_dir.mkdir()
    assert store.add("victim", *correction(3)).record_id == "victim/v0003"
    assert [p.record_id for p in store.verify().lost] == ["victim/v0002"]


def test_a_lost_record_put_back_from_a_backup_is_whole_again(store, tmp_path):
    backup = tmp_path / "backup"
    shutil.copytree(store.records_dir / "victim", backup)
    shutil.rmtree(store.records_dir / "victim")
    store.verify(repair=True)
    shutil.copytree(backup, store.records_dir / "victim")
    report = store.verify(repair=True)
    assert report.ok and store.verify().ok, store.verify().to_text()


def test_a_self_consistent_record_that_is_not_the_committed_one_is_damaged(store):
    path = store.records_dir / "victim" / "v0001" / "record.json"
    data = json.loads(path.read_text())
    data["reviewer"] = "mallory"
    data["metadata_sha256"] = metadata_digest(data)
    path.write_text(json.dumps(data))
    problems = store.verify().problems
    assert [(p.kind, p.record_id) for p in problems] == [(ProblemKind.CORRUPT_RECORD, "victim/v0001")]
    assert "not the one committed" in problems[0].detail


def test_an_add_interrupted_before_the_ledger_is_completed_by_repair(store):
    (store.root / "ledger.jsonl").write_text("\n".join(store.ledger_path.read_text().splitlines()[:-1]) + "\n")
    report = store.verify()
    assert [p.kind for p in report.problems] == [ProblemKind.LEDGER_INCOMPLETE]
    assert store.verify(repair=True).ok and store.verify().ok


def test_a_deleted_ledger_is_reported_and_restarted_by_repair(store):
    store.ledger_path.unlink()
    assert [p.kind for p in store.verify().problems] == [ProblemKind.LEDGER_DAMAGED]
    repaired = store.verify(repair=True)
    assert repaired.ok and any("may go unnoticed" in line for line in store.ledger_path.read_text().splitlines())
    assert store.verify().ok


def test_a_store_made_before_the_ledger_knows_its_indexed_records_and_starts_a_ledger(store):
    store.ledger_path.unlink()
    marker = json.loads(store.marker_path.read_text())
    store.marker_path.write_text(json.dumps({**marker, "format_version": 1}))
    assert store.verify().ok and any("before the ledger" in n for n in store.verify().notes)
    shutil.rmtree(store.records_dir / "victim")  # the index still lists it: that is enough to know it is lost
    assert [p.record_id for p in store.verify().lost] == ["victim/v0001"]
    assert store.add("victim", *correction(2)).record_id == "victim/v0002"
    assert store.ledger_path.is_file()
    assert [p.record_id for p in store.verify().lost] == ["victim/v0001"]


# --- a store without its marker ----------------------------------------------------------------------
MARKER_ADVICE = "verify --repair"


@pytest.mark.parametrize("command", [
    ["list"],
    ["export", "--format", "qc", "--out", "{tmp}/export"],
    ["add", "--case-id", "new", "--image", "{tmp}/image.nii.gz", "--original", "{tmp}/seg.nii.gz",
     "--corrected", "{tmp}/seg.nii.gz"],
])
def test_every_command_refuses_a_store_without_its_marker_with_the_same_advice(store, tmp_path, command, capsys):
    from SegQCLib.io.image_files import write_array

    image, original, _ = correction(5)
    write_array(tmp_path / "image.nii.gz", image[0].array, GEOMETRY)
    write_array(tmp_path / "seg.nii.gz", original.array, GEOMETRY)
    store.marker_path.unlink()
    args = [part.format(tmp=tmp_path) for part in command]
    assert segqc(["corrections", args[0], "--store", str(store.root), *args[1:]]) == 1
    error = capsys.readouterr().err
    assert "segqc-store.json marker is missing" in error and MARKER_ADVICE in error
    assert not store.marker_path.exists() and not (tmp_path / "export").exists()


def test_repair_writes_a_new_marker_and_the_store_works_again(store):
    store.marker_path.unlink()
    assert [p.kind for p in store.verify().problems] == [ProblemKind.MARKER_MISSING]
    assert verify_cli(store) == EXIT_DAMAGED
    assert verify_cli(store, "--repair") == 0
    assert store.verify().ok
    assert [r.case_id for r in store.list()] == ["kept", "victim"]
    assert store.add("victim", *correction(2)).record_id == "victim/v0002"


def test_a_folder_that_never_was_a_store_is_not_made_one_by_repair(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"jpeg")
    assert segqc(["corrections", "verify", "--store", str(folder), "--repair"]) == EXIT_DAMAGED
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg"]
    with pytest.raises(InputError, match="not a SegQC corrections store"):
        CorrectionStore(folder).list()


def test_the_same_store_path_written_twice_by_concurrent_creators_is_one_store(tmp_path):
    first, second = CorrectionStore(tmp_path / "s"), CorrectionStore(tmp_path / "s")
    first.add("a", *correction(0))
    second.add("b", *correction(1))
    assert CorrectionStore(tmp_path / "s").verify().ok
    assert Path(tmp_path / "s" / "ledger.jsonl").read_text().count('"committed"') == 2
