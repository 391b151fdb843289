"""Showing (z, y, x) arrays in the anatomical orientations a radiologist expects, whatever the file's axis order.

The array is permuted and flipped (never resampled) to the closest canonical grid whose axes point to superior,
posterior and left (LPS order reversed: S, P, L), chosen from the geometry's direction matrix.  The three views
are then displayed in radiological convention: the patient's right on the viewer's left; axial with anterior at
the top, coronal and sagittal with superior at the top, sagittal with anterior on the left.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Optional

import numpy as np

from ..geometry import Geometry


class View(str, Enum):
    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"

    @property
    def canonical_axis(self) -> int:
        """Axis of the canonical (S, P, L) array that this view's planes cut."""
        return {View.AXIAL: 0, View.CORONAL: 1, View.SAGITTAL: 2}[self]

    @property
    def edge_labels(self) -> dict[str, str]:
        """Anatomical direction at each edge of the displayed picture."""
        return {View.AXIAL: {"top": "A", "bottom": "P", "left": "R", "right": "L"},
                View.CORONAL: {"top": "S", "bottom": "I", "left": "R", "right": "L"},
                View.SAGITTAL: {"top": "S", "bottom": "I", "left": "A", "right": "P"}}[self]


@dataclass(frozen=True)
class Orientation:
    """How the canonical (S, P, L) array is made from a (z, y, x) array.

    ``axes[c]`` is the array axis that becomes canonical axis ``c``; ``flipped[c]`` says it is reversed."""

    axes: tuple[int, int, int]
    flipped: tuple[bool, bool, bool]
    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]

    @classmethod
    def from_geometry(cls, geometry: Geometry) -> Orientation:
        direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)  # columns: x, y, z index axes (LPS)
        # Row p: LPS component; column a: array axis (z, y, x) -> index axis 2 - a.
        weights = np.abs(direction[:, ::-1])
        best = max(itertools.permutations(range(3)),
                   key=lambda axes: sum(weights[2 - c, a] for c, a in enumerate(axes)))
        flipped = tuple(bool(direction[2 - c, 2 - a] < 0) for c, a in enumerate(best))
        return cls(tuple(best), flipped, tuple(geometry.shape_zyx), tuple(geometry.spacing_zyx_mm))

    def canonical(self, array: np.ndarray) -> np.ndarray:
        """The array on the canonical grid (a view: no copy)."""
        out = np.transpose(array, self.axes)
        for axis, flip in enumerate(self.flipped):
            if flip:
                out = np.flip(out, axis)
        return out

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        return tuple(self.shape_zyx[a] for a in self.axes)

    @property
    def canonical_spacing_mm(self) -> tuple[float, float, float]:
        return tuple(self.spacing_zyx_mm[a] for a in self.axes)

    def canonical_index(self, index_zyx: Sequence[int]) -> tuple[int, int, int]:
        """Canonical voxel of array voxel ``index_zyx``."""
        shape = self.canonical_shape
        return tuple(int(shape[c] - 1 - index_zyx[a]) if self.flipped[c] else int(index_zyx[a])
                     for c, a in enumerate(self.axes))

    def view_of_array_axis(self, array_axis: int) -> View:
        """The view whose planes are the array's slices along ``array_axis``."""
        return next(v for v in View if self.axes[v.canonical_axis] == array_axis)

    def plane_of_slice(self, array_axis: int, index: int) -> tuple[View, int]:
        """(view, canonical plane index) of array slice ``index`` along ``array_axis``."""
        view = self.view_of_array_axis(array_axis)
        c = view.canonical_axis
        return view, int(self.canonical_shape[c] - 1 - index) if self.flipped[c] else int(index)

    def plane(self, canonical: np.ndarray, view: View, index: int) -> np.ndarray:
        """The displayed 2D picture (rows top to bottom, columns left to right) of one plane."""
        if view is View.AXIAL:
            return canonical[index]
        if view is View.CORONAL:
            return canonical[::-1, index, :]
        return canonical[::-1, :, index]

    def plane_spacing_mm(self, view: View) -> tuple[float, float]:
        """(row, column) pixel size of the displayed picture."""
        s = self.canonical_spacing_mm
        return {View.AXIAL: (s[1], s[2]), View.CORONAL: (s[0], s[2]), View.SAGITTAL: (s[0], s[1])}[view]

    def plane_position(self, view: View, canonical_index: Sequence[int]) -> tuple[int, int]:
        """(row, column) of a canonical voxel on its plane of ``view``."""
        c0, c1, c2 = canonical_index
        last = self.canonical_shape[0] - 1
        return {View.AXIAL: (c1, c2), View.CORONAL: (last - c0, c2), View.SAGITTAL: (last - c0, c1)}[view]

    def plane_rect(self, bbox_zyx: Sequence[Sequence[int]], view: View, index: int
                   ) -> Optional[tuple[int, int, int, int]]:
        """(row0, col0, row1, col1), end exclusive, of an array box on the displayed plane; None when the plane
        does not cut it."""
        start, end = bbox_zyx
        corners = [self.canonical_index(start), self.canonical_index([e - 1 for e in end])]
        low = [min(a, b) for a, b in zip(*corners)]
        high = [max(a, b) + 1 for a, b in zip(*corners)]
        c = view.canonical_axis
        if not low[c] <= index < high[c]:
            return None
        n0 = self.canonical_shape[0]
        if view is View.AXIAL:
            return low[1], low[2], high[1], high[2]
        if view is View.CORONAL:
            return n0 - high[0], low[2], n0 - low[0], high[2]
        return n0 - high[0], low[1], n0 - low[0], high[1]
