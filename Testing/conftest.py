"""Shared fixtures: real hippocampus cases from ../shared/data (or $SEGQC_DATA_DIR)."""

from __future__ import annotations

import os

import pytest

from SegQCLib.io.datasets import CaseFiles, hippocampus_dir, list_nnunet_cases
from SegQCLib.io.image_files import read_image, read_labelmap
from SegQCLib.io.volumes import LabelMap, Volume

# Tests must behave the same on a laptop and in CI: keep torch from grabbing every core.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def hippocampus_cases() -> list[CaseFiles]:
    root = hippocampus_dir()
    if not (root / "imagesTr").is_dir():
        pytest.skip(f"real data not found at {root} (set SEGQC_DATA_DIR to the folder holding hippocampus/)")
    return list_nnunet_cases(root)


@pytest.fixture(scope="session")
def hippocampus_case(hippocampus_cases) -> tuple[Volume, LabelMap]:
    """The first shared case: (image, ground-truth label map)."""
    case = hippocampus_cases[0]
    return read_image(case.images[0]), read_labelmap(case.label)


@pytest.fixture(scope="session")
def hippocampus_sample(hippocampus_cases) -> list[tuple[str, Volume, LabelMap]]:
    """Five shared cases spread over the dataset."""
    step = max(1, len(hippocampus_cases) // 5)
    chosen = hippocampus_cases[::step][:5]
    return [(c.case_id, read_image(c.images[0]), read_labelmap(c.label)) for c in chosen]


# --- ending the test process ------------------------------------------------------------------------
# The whole suite loads VTK (slicer-core), Ray, OpenVINO and torch into one process; one full run on the
# development VM ended with a segmentation fault *after* pytest had printed its result (exit code 139 for a run
# whose tests had all been decided). The outcome is known once the session finishes, so the process then
# ends at once with pytest's own exit status instead of tearing those libraries down.
def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    status = config.stash.get(_EXIT_STATUS, None)
    if status is not None and os.environ.get("SEGQC_TEST_FAST_EXIT", "1") == "1":
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


_EXIT_STATUS = pytest.StashKey[int]()
