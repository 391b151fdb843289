"""Small array helpers shared by the estimates, metrics and inference."""

from __future__ import annotations

from typing import Optional

import numpy as np


def bounding_box(mask: np.ndarray) -> Optional[tuple[slice, ...]]:
    """Smallest box holding all True voxels, or None when there are none.

    Each later axis is searched only inside the range already found for the earlier ones, so the
    projections after the first touch only the occupied slab.
    """
    box: list[slice] = [slice(None)] * mask.ndim
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(np.any(mask[tuple(box)], axis=other))
        if present.size == 0:
            return None
        start = (box[axis].start or 0) + int(present[0])
        box[axis] = slice(start, start + int(present[-1] - present[0]) + 1)
    return tuple(box)
