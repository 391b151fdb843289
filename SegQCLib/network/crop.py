"""The part of a case the network sees: the segmentation's bounding box grown by a margin (torch-free)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..arrays import bounding_box
from ..geometry import Geometry


@dataclass(frozen=True)
class CropBox:
    start_zyx: tuple[int, int, int]
    stop_zyx: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start_zyx, self.stop_zyx))  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start_zyx, self.stop_zyx))  # type: ignore[return-value]


def crop_box_around(seg: np.ndarray, geometry: Geometry, margin_mm: float) -> Optional[CropBox]:
    """Bounding box of the foreground grown by ``margin_mm`` (clipped to the image); None when empty."""
    box = bounding_box(np.asarray(seg) != 0)
    if box is None:
        return None
    margins = [int(math.ceil(margin_mm / spacing_mm)) for spacing_mm in geometry.spacing_zyx_mm]
    start = tuple(max(0, b.start - m) for b, m in zip(box, margins))
    stop = tuple(min(size, b.stop + m) for b, m, size in zip(box, margins, seg.shape))
    return CropBox(start, stop)  # type: ignore[arg-type]
