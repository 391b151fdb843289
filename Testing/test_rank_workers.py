"""``segqc rank --workers N``: a worker process that dies costs only its own case. The pool is restarted, the cases
that were running are run once more, alone; the case whose worker dies again fails with a message, every other case
is checked (main: BrokenProcessPool failed every case still queued)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from worker_faults import ALWAYS_DIES, DIES_ONCE, attempts, fake_case, real_case_unless_chosen

from SegQCLib.batch.cases import BatchCase
from SegQCLib.batch.results import CaseStatus
from SegQCLib.batch.runner import run_batch
from SegQCLib.batch.workers import ProcessWorkers

pytestmark = pytest.mark.skipif(os.name != "posix", reason="workers are killed with SIGKILL")


def cases(tmp_path: Path, names: list[str]) -> list[BatchCase]:
    (tmp_path / "in").mkdir(exist_ok=True)
    return [BatchCase(name, (tmp_path / "in" / f"{name}.nii.gz",), tmp_path / "in" / f"{name}_seg.nii.gz")
            for name in names]


def statuses(result) -> dict[str, CaseStatus]:
    return {row.case_id: row.status for row in result.rows}


def test_a_case_whose_worker_dies_every_time_fails_alone(tmp_path):
    names = [f"healthy{i:02d}" for i in range(6)] + [ALWAYS_DIES] + [f"late{i:02d}" for i in range(8)]
    out = tmp_path / "out"
    result = run_batch(cases(tmp_path, names), out, ProcessWorkers(None, count=2, case_function=fake_case),
                       thumbnails_per_case=0, resume=False)
    assert statuses(result) == {name: CaseStatus.FAILED if name == ALWAYS_DIES else CaseStatus.DONE for name in names}
    failure = result.failed[0]
    assert "worker process checking this case died" in failure.error and "Traceback" not in failure.error
    assert attempts(out, ALWAYS_DIES) == 2  # retried once, alone
    assert all(attempts(out, name) <= 2 for name in names)  # a bystander of the death ran at most twice


def test_a_worker_killed_once_costs_nothing_the_case_is_run_again(tmp_path):
    names = [f"healthy{i:02d}" for i in range(4)] + [DIES_ONCE] + [f"late{i:02d}" for i in range(4)]
    out = tmp_path / "out"
    result = run_batch(cases(tmp_path, names), out, ProcessWorkers(None, count=2, case_function=fake_case),
                       thumbnails_per_case=0, resume=False)
    assert set(statuses(result).values()) == {CaseStatus.DONE}
    assert attempts(out, DIES_ONCE) == 2


def test_an_error_raised_in_a_worker_fails_that_case_without_restarting_the_pool(tmp_path):
    names = ["healthy0", "raises-error", "healthy1"]
    out = tmp_path / "out"
    result = run_batch(cases(tmp_path, names), out, ProcessWorkers(None, count=2, case_function=fake_case),
                       thumbnails_per_case=0, resume=False)
    assert [r.case_id for r in result.failed] == ["raises-error"]
    assert "a bug in one case" in result.failed[0].error
    assert attempts(out, "raises-error") == 1


def test_workers_that_cannot_run_at_all_fail_the_batch_quickly_with_the_reason(tmp_path):
    names = [f"{ALWAYS_DIES}{i}" for i in range(10)]
    out = tmp_path / "out"
    result = run_batch(cases(tmp_path, names), out, ProcessWorkers(None, count=2, case_function=fake_case),
                       thumbnails_per_case=0, resume=False)
    assert len(result.failed) == 10
    assert sum("cannot run here" in r.error for r in result.failed) >= 5
    assert sum(attempts(out, name) for name in names) < 10  # not a fresh pool for every case


@pytest.mark.realdata
def test_rank_with_real_workers_loses_only_the_case_whose_worker_dies(tmp_path, hippocampus_cases):
    from test_rank import SMALL_MODEL, copy_cases

    from SegQCLib.network.config import ModelConfig
    from SegQCLib.network.package import init_model_package

    model = init_model_package(tmp_path / "model", ModelConfig(**SMALL_MODEL), seed=3)
    _, _, real = copy_cases(tmp_path, hippocampus_cases, 3)
    victim = BatchCase(ALWAYS_DIES, real[0].images, real[0].seg)
    result = run_batch([real[0], victim, *real[1:]], tmp_path / "out",
                       ProcessWorkers(str(model), count=2, case_function=real_case_unless_chosen),
                       thumbnails_per_case=0, resume=False)
    assert [r.case_id for r in result.failed] == [ALWAYS_DIES]
    assert all((tmp_path / "out" / r.report).is_file() for r in result.rows if r.status is CaseStatus.DONE)
    assert len([r for r in result.rows if r.status is CaseStatus.DONE]) == 3
