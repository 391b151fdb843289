"""A tiny query bank built from two real training and two real validation cases (shared by training tests).

Built once per test session (the segmenters and queries take most of a training test's time) in a
temporary folder removed at exit; tests that change a bank work on a copy.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch

from SegQCLib.io.datasets import hippocampus_dir
from training.bank import build_bank
from training.segmenter import SegmenterConfig
from training.splits import DEFAULT_SPLIT_FILE


@functools.lru_cache(maxsize=1)
def tiny_bank() -> Path:
    torch.set_num_threads(2)
    folder = Path(tempfile.mkdtemp(prefix="segqc-tiny-bank-"))
    atexit.register(shutil.rmtree, folder, True)
    return build_bank(hippocampus_dir(), folder, DEFAULT_SPLIT_FILE, seed=1, train_queries=4, validation_queries=3,
                      segmenter_iterations=2, heldout_iterations=2, max_cases=2,
                      segmenter_config=SegmenterConfig(base_channels=4, levels=2))
