"""A tiny query bank built from two real training and two real validation cases (shared by training tests)."""

from __future__ import annotations

from pathlib import Path

import torch

from SegQCLib.datasets import hippocampus_dir
from training.bank import build_bank
from training.segmenter import SegmenterConfig
from training.splits import DEFAULT_SPLIT_FILE


def build_tiny_bank(folder: Path) -> Path:
    torch.set_num_threads(2)
    return build_bank(hippocampus_dir(), folder, DEFAULT_SPLIT_FILE, seed=1, train_queries=4, validation_queries=3,
                      segmenter_iterations=2, heldout_iterations=2, max_cases=2,
                      segmenter_config=SegmenterConfig(base_channels=4, levels=2))
