"""Per-case functions for ProcessWorkers that kill their own worker process on chosen cases (importable by spawned
workers: Testing/ is on their path).  Each attempt is counted in ``<out>/attempts/<case_id>``."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from SegQCLib.batch.results import CaseStatus, RankRow

ALWAYS_DIES = "always-dies"  # a case whose worker dies every time (a hostile input that crashes native code)
DIES_ONCE = "dies-once"  # a case whose worker is killed once from outside (the OOM killer, a user)


def attempts(out_dir: Path, case_id: str) -> int:
    path = Path(out_dir) / "attempts" / case_id
    return len(path.read_text()) if path.exists() else 0


def fake_case(case, out_dir, _model_path, _device="cpu", _params=None, _thumbnails=0) -> RankRow:
    """Counts the attempt, dies as the case id says, else returns a row (no model: the pool logic is tested)."""
    folder = Path(out_dir) / "attempts"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / case.case_id, "a") as stream:
        stream.write("x")
    if case.case_id.startswith(ALWAYS_DIES) or (case.case_id.startswith(DIES_ONCE)
                                                 and attempts(out_dir, case.case_id) == 1):
        os.kill(os.getpid(), signal.SIGKILL)
    if case.case_id.startswith("raises"):
        raise ValueError("a bug in one case")
    return RankRow(case.case_id, CaseStatus.DONE, dice_est=0.5 + len(case.case_id) / 100, qi=0.9, n_boxes=0)


def real_case_unless_chosen(case, out_dir, model_path, device="cpu", params=None, thumbnails=0) -> RankRow:
    """The real per-case work (model loaded in the worker), except that the chosen case kills its worker."""
    from SegQCLib.batch.case_steps import process_case_with_model

    if case.case_id.startswith(ALWAYS_DIES):
        os.kill(os.getpid(), signal.SIGKILL)
    return process_case_with_model(case, out_dir, model_path, device, params, thumbnails)
