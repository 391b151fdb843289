"""Per-case intensity normalisation of the network's input (torch-free: the domain profile uses it too)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .config import Normalization

# z-score statistics over nonzero voxels need enough of them; otherwise all voxels are used.
MIN_NONZERO_FRACTION = 0.01
STD_EPSILON = 1e-8


def normalize_intensity(array: np.ndarray, normalization: str, clip_percentiles: Sequence[float] = (0.5, 99.5)
                        ) -> np.ndarray:
    """Per-case intensity normalisation of one modality (float32 result, same shape)."""
    array = np.asarray(array, dtype=np.float32)
    kind = Normalization(normalization)
    if kind is Normalization.NONE:
        return array.copy()
    nonzero = array != 0
    use_nonzero = kind is not Normalization.ZSCORE and nonzero.mean() >= MIN_NONZERO_FRACTION
    values = array[nonzero] if use_nonzero else array.ravel()
    if kind is Normalization.PERCENTILE_ZSCORE:
        low, high = np.percentile(values, clip_percentiles)
        array = np.clip(array, low, high)
        values = np.clip(values, low, high)
    mean = float(values.mean(dtype=np.float64))
    std = float(values.std(dtype=np.float64))
    return ((array - mean) / max(std, STD_EPSILON)).astype(np.float32, copy=False)
