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
from training.bank import BankPlan, build_bank
from training.segmenter import SegmenterConfig
from training.splits import DEFAULT_SPLIT_FILE

TINY_SEGMENTER = SegmenterConfig(base_channels=4, levels=2)
TINY_PLAN = BankPlan(folds=2, segmenter_iterations=3, weak_iterations=2, heldout_iterations=3,
                     second_architecture_iterations=2, train_local_queries=3, train_broad_queries=2,
                     validation_queries=3, validation_local_queries=1, validation_unseen_family_queries=2,
                     segmenter=TINY_SEGMENTER, weak_segmenter=TINY_SEGMENTER,
                     second_architecture=SegmenterConfig(base_channels=4, levels=2, architecture="unet2d"),
                     max_cases=2)


@functools.lru_cache(maxsize=1)
def tiny_bank() -> Path:
    torch.set_num_threads(2)
    folder = Path(tempfile.mkdtemp(prefix="segqc-tiny-bank-"))
    atexit.register(shutil.rmtree, folder, True)
    return build_bank(hippocampus_dir(), folder, DEFAULT_SPLIT_FILE, seed=1, plan=TINY_PLAN)
