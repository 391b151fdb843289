"""Fixed-size crops of small volumes and intensity normalisation shared by the segmenter and the QC training.

Hippocampus volumes are at most 47×59×43 voxels, so every case fits a 48×64×48 (z, y, x) box: padding to it
keeps whole cases in one batch without resizing (resizing would change the voxel size the errors live on).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_CROP_ZYX = (48, 64, 48)
# Percentiles clipped before z-scoring: MRI has a few very bright voxels (vessels, fat) that would
# otherwise squash the tissue contrast into a narrow range.
CLIP_PERCENTILES = (0.5, 99.5)
MIN_STD = 1e-6


def normalize_intensity(image: np.ndarray) -> np.ndarray:
    """Clip to the 0.5-99.5 percentiles and z-score (float32)."""
    image = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(image, CLIP_PERCENTILES)
    clipped = np.clip(image, low, high)
    return ((clipped - clipped.mean()) / max(float(clipped.std()), MIN_STD)).astype(np.float32)


def crop_offsets(shape: Sequence[int], crop: Sequence[int], rng: np.random.Generator | None = None) -> tuple[int, ...]:
    """Start of the crop window in each axis (negative = pad before): centred, or random when ``rng`` is given.

    Where the volume is smaller than the crop the volume is placed inside the window; where it is larger the
    window is placed inside the volume.
    """
    offsets = []
    for size, window in zip(shape, crop):
        slack = size - window
        if rng is None:
            offsets.append(slack // 2 if slack >= 0 else -((-slack) // 2))
        elif slack >= 0:
            offsets.append(int(rng.integers(0, slack + 1)))
        else:
            offsets.append(-int(rng.integers(0, -slack + 1)))
    return tuple(offsets)


def crop_or_pad(array: np.ndarray, crop: Sequence[int], offsets: Sequence[int], fill: float = 0) -> np.ndarray:
    """The ``crop``-sized window starting at ``offsets`` (negative offsets pad with ``fill``)."""
    out = np.full(tuple(crop), fill, dtype=array.dtype)
    src = []
    dst = []
    for size, window, offset in zip(array.shape, crop, offsets):
        start = max(offset, 0)
        stop = min(offset + window, size)
        src.append(slice(start, stop))
        dst.append(slice(start - offset, stop - offset))
    out[tuple(dst)] = array[tuple(src)]
    return out


def uncrop(array: np.ndarray, shape: Sequence[int], offsets: Sequence[int], fill: float = 0) -> np.ndarray:
    """Inverse of :func:`crop_or_pad`: put the window back into a ``shape`` volume (outside = ``fill``)."""
    out = np.full(tuple(shape), fill, dtype=array.dtype)
    src = []
    dst = []
    for size, window, offset in zip(shape, array.shape, offsets):
        start = max(offset, 0)
        stop = min(offset + window, size)
        dst.append(slice(start, stop))
        src.append(slice(start - offset, stop - offset))
    out[tuple(dst)] = array[tuple(src)]
    return out
