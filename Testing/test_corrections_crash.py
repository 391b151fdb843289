"""The store survives writers killed with SIGKILL at any point, and concurrent writers (real subprocesses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from SegQCLib.corrections.names import LOCK_FILE
from SegQCLib.corrections.store import CorrectionStore
from SegQCLib.corrections.verify import ProblemKind
from SegQCLib.errors import SegQCError
from SegQCLib.geometry import Geometry
from SegQCLib.io.volumes import LabelMap, Volume

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and fork semantics are POSIX")

# A writer process: records ``count`` corrections of one case; the original mask encodes the writer's tag and
# the sequence number, so a test can tell which writer produced each record and that no record mixes two.
WRITER = r"""
import os, signal, sys, time
import numpy as np
from SegQCLib.corrections import store as corrections
from SegQCLib.geometry import Geometry
from SegQCLib.io.volumes import LabelMap, Volume

store_dir, case_id, tag, count, kill_step, shape, go_file = sys.argv[1:8]
count, tag = int(count), int(tag)
shape = tuple(int(v) for v in shape.split("x"))
if kill_step != "-":
    def hook(step):
        if step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)
    corrections._crash_hook = hook
while go_file != "-" and not os.path.exists(go_file):
    time.sleep(0.005)
geometry = Geometry(shape, (1.0, 1.0, 2.0))
rng = np.random.default_rng(tag)
image = Volume(rng.normal(0, 1, shape).astype(np.float32), geometry)
store = corrections.CorrectionStore(store_dir)
for i in range(count):
    original = np.zeros(shape, np.uint8)
    original.flat[: tag * 100 + i + 1] = 1
    corrected = np.zeros(shape, np.uint8)
    corrected[1:-1, 1:-1, 1:-1] = 2
    record = store.add(case_id, [image], LabelMap(original, geometry), LabelMap(corrected, geometry),
                       reviewer=f"writer {tag} #{i}")
    print(record.record_id, flush=True)
"""

SMALL = "6x10x10"
KILL_STEPS = ["tmp_created", "files_written", "metadata_written", "committed", "indexed"]


def start_writer(store: Path, case_id: str, tag: int, count: int, kill_step: str = "-", shape: str = SMALL,
                 go_file: str = "-") -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", WRITER, str(store), case_id, str(tag), str(count), kill_step,
                             shape, go_file], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def expected_original_voxels(reviewer: str) -> int:
    tag, number = reviewer.removeprefix("writer ").split(" #")
    return int(tag) * 100 + int(number) + 1


def assert_record_is_the_writers(record) -> None:
    """The record's original mask is exactly what the writer named in ``reviewer`` wrote for it."""
    original = record.read_original().array
    assert int(np.count_nonzero(original)) == expected_original_voxels(record.reviewer)


def seed_store(store_dir: Path) -> tuple[CorrectionStore, dict[str, bytes]]:
    """A store with two earlier records; returns it and the bytes of every file of those records."""
    geometry = Geometry((6, 10, 10))
    store = CorrectionStore(store_dir)
    mask = np.zeros((6, 10, 10), np.uint8)
    mask[2:4, 2:8, 2:8] = 1
    for i in range(2):
        store.add(f"earlier{i}", [Volume(np.ones((6, 10, 10), np.float32) * i, geometry)], LabelMap(mask, geometry),
                  LabelMap(np.roll(mask, 1, axis=1), geometry))
    files = {p.relative_to(store_dir).as_posix(): p.read_bytes()
             for p in (store_dir / "records").rglob("*") if p.is_file()}
    return store, files


def assert_earlier_records_intact(store: CorrectionStore, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        assert (store.root / relative).read_bytes() == data, relative
    for i in range(2):
        store.load(f"earlier{i}/v0001", check=True)


@pytest.mark.parametrize("kill_step", KILL_STEPS)
def test_writer_killed_at_each_step_loses_no_earlier_record_and_verify_explains_the_rest(tmp_path, kill_step):
    store, earlier_files = seed_store(tmp_path / "store")
    writer = start_writer(store.root, "victim", 1, 1, kill_step)
    _, stderr = writer.communicate(timeout=120)
    assert writer.returncode == -signal.SIGKILL, stderr

    assert_earlier_records_intact(store, earlier_files)
    report = store.verify()
    committed = KILL_STEPS.index(kill_step) >= KILL_STEPS.index("committed")
    # A record is whole or absent: never a corrupt one, whatever the step.
    assert report.records_ok == report.records_checked == 2 + committed
    kinds = {p.kind for p in report.problems}
    assert kinds <= {ProblemKind.INCOMPLETE_WRITE, ProblemKind.INDEX_DAMAGED, ProblemKind.LEDGER_INCOMPLETE}
    if not committed:
        assert ProblemKind.INCOMPLETE_WRITE in kinds  # the partial folder or the writer's lock file
    if kill_step == "committed":  # renamed into place but not yet in the ledger and the index
        assert kinds == {ProblemKind.INDEX_DAMAGED, ProblemKind.LEDGER_INCOMPLETE}
    if kill_step == "indexed":
        assert report.ok
    assert all(p.describe() for p in report.problems)

    store.verify(repair=True)
    assert store.verify().ok
    assert_earlier_records_intact(store, earlier_files)
    ids = [r.record_id for r in store.list()]
    assert ids == ["earlier0/v0001", "earlier1/v0001"] + (["victim/v0001"] if committed else [])
    if committed:
        assert_record_is_the_writers(store.load("victim/v0001"))


@pytest.mark.slow
def test_writers_killed_at_random_moments_leave_only_whole_records(tmp_path):
    store, earlier_files = seed_store(tmp_path / "store")
    rng = np.random.default_rng(7)
    for round_number in range(4):
        # Larger volumes so that the kill often lands while a file is being compressed and written.
        writer = start_writer(store.root, "victim", round_number + 1, 50, shape="48x96x96")
        first = writer.stdout.readline()
        assert first.strip(), writer.stderr.read()
        time.sleep(float(rng.uniform(0.0, 0.4)))
        writer.send_signal(signal.SIGKILL)
        printed = [first.strip()] + [line.strip() for line in writer.communicate(timeout=60)[0].splitlines()]

        report = store.verify()
        assert report.records_ok == report.records_checked
        assert {p.kind for p in report.problems} <= {ProblemKind.INCOMPLETE_WRITE, ProblemKind.INDEX_DAMAGED,
                                                     ProblemKind.LEDGER_INCOMPLETE}
        store.verify(repair=True)
        assert store.verify().ok
        listed = {r.record_id for r in store.list()}
        assert set(printed) <= listed  # every record the writer reported as committed survived
        assert_earlier_records_intact(store, earlier_files)
    for record in store.list():
        if record.case_id == "victim":
            assert_record_is_the_writers(store.load(record.record_id))


def test_two_concurrent_writers_lose_nothing_and_never_share_a_record_id(tmp_path):
    store = CorrectionStore(tmp_path / "store")
    go = tmp_path / "go"
    per_writer = 6
    writers = [start_writer(store.root, "shared case", tag, per_writer, go_file=str(go)) for tag in (1, 2)]
    time.sleep(0.3)
    go.touch()
    outputs = [w.communicate(timeout=300) for w in writers]
    assert [w.returncode for w in writers] == [0, 0], [o[1] for o in outputs]

    printed = [line for out, _ in outputs for line in out.split()]
    assert len(printed) == len(set(printed)) == 2 * per_writer
    records = store.list()
    assert sorted(r.record_id for r in records) == sorted(printed)
    assert sorted(r.version for r in records) == list(range(1, 2 * per_writer + 1))
    for record in records:
        assert_record_is_the_writers(store.load(record.record_id))
    assert store.verify().ok


def test_a_writer_killed_while_holding_the_store_lock_leaves_the_store_unlocked(tmp_path):
    store, _ = seed_store(tmp_path / "store")
    writer = start_writer(store.root, "victim", 1, 1, "metadata_written")  # killed inside the store lock
    _, stderr = writer.communicate(timeout=120)
    assert writer.returncode == -signal.SIGKILL, stderr
    with store._locked(timeout_s=5.0):  # released by the OS with the process: no wait for a stale lock
        pass


def test_a_live_writer_holding_the_store_lock_makes_others_wait_then_say_the_store_is_busy(tmp_path):
    store, _ = seed_store(tmp_path / "store")
    holder = FileLock(str(store.root / LOCK_FILE))
    holder.acquire(timeout=0)
    try:
        with pytest.raises(SegQCError, match="is busy"), store._locked(timeout_s=0.2):
            pass
    finally:
        holder.release()
