"""The in-memory types every reader returns: a scalar :class:`Volume` and a :class:`LabelMap`, with geometry.

Arrays are (z, y, x) as SimpleITK gives them; :func:`validate_label_array` is the one check that an
array really is a label map (integer class labels, 0 = background).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..geometry import Geometry

# Label values above this cannot be a class index in any realistic segmentation; larger ones mean a
# continuous image was passed where a label map was expected.
MAX_LABEL_VALUE = 32767
# More distinct values than this (TotalSegmentator has 117 classes, FreeSurfer's aparc+aseg about 110) means an
# image, not a label map: an integer-valued MRI has hundreds or thousands.
MAX_DISTINCT_LABELS = 255
SWAPPED_HINT = "it looks like an image: were the image and the segmentation swapped (--image / --seg)?"


@dataclass
class Volume:
    """A scalar 3D image: (z, y, x) float32 array and its geometry."""

    array: np.ndarray
    geometry: Geometry
    path: str | None = None
    notices: list[str] = field(default_factory=list)  # what reading it found worth saying (e.g. header conflicts)


@dataclass(frozen=True)
class SegmentStyle:
    """How 3D Slicer shows a segment: its colour and its terminology, kept from a ``.seg.nrrd`` or a Slicer
    segmentation to any ``.seg.nrrd`` SegQC writes, so a segment looks and means the same after a round trip.

    ``terminology`` is Slicer's ``TerminologyEntry`` string (context~category~type~modifier~anatomic context~
    region~region modifier, codes as ``scheme^value^meaning``), as ``vtkSegment::GetTerminology`` gives it.
    """

    color_rgb: tuple[float, float, float] | None = None  # each in [0, 1]
    terminology: str | None = None


@dataclass
class LabelMap:
    """A 3D label map: (z, y, x) integer array (0 = background), geometry, optional segment names and styles."""

    array: np.ndarray
    geometry: Geometry
    names: dict[int, str] = field(default_factory=dict)
    path: str | None = None
    notices: list[str] = field(default_factory=list)
    styles: dict[int, SegmentStyle] = field(default_factory=dict)

    @property
    def labels(self) -> list[int]:
        """Foreground labels present in the array."""
        return [int(v) for v in np.unique(self.array) if v != 0]


def nonfinite_message(what: str, source: str, count: int) -> str:
    """The one message for NaN or infinite voxel values, whatever the file format."""
    return (f"{what} {source} contains NaN or infinite values ({count} voxel{'s' if count != 1 else ''}); "
            "SegQC needs finite numbers in every voxel")


def validate_label_array(array: np.ndarray, source: str) -> np.ndarray:
    """Return ``array`` as a compact integer label array, or raise InputError saying what is wrong."""
    if array.ndim != 3:
        raise InputError(f"Segmentation {source} is {array.ndim}D; SegQC needs a 3D label map")
    if array.size == 0:
        raise InputError(f"Segmentation {source} has no voxels")
    if np.issubdtype(array.dtype, np.floating):
        nonfinite = int(array.size - np.count_nonzero(np.isfinite(array)))
        if nonfinite:
            raise InputError(nonfinite_message("Segmentation", source, nonfinite) + "; expected integer labels")
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise InputError(
                f"Segmentation {source} has non-integer values (e.g. {array[np.mod(array, 1) != 0].flat[0]:.4g}); "
                "expected a label map with integer class labels, not a probability map or image"
            )
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise InputError(f"Segmentation {source} has unsupported voxel type {array.dtype}")
    low, high = (array.min(), array.max())
    if low < 0:
        raise InputError(f"Segmentation {source} has negative labels (min {low}); labels must be 0 (background) or "
                         f">0; {SWAPPED_HINT}")
    if high > MAX_LABEL_VALUE:
        raise InputError(f"Segmentation {source} has label {high}, above {MAX_LABEL_VALUE}; {SWAPPED_HINT}")
    if high > MAX_DISTINCT_LABELS:
        distinct = np.unique(array).size
        if distinct > MAX_DISTINCT_LABELS:
            raise InputError(f"Segmentation {source} has {distinct} different label values (up to {high}); "
                             f"{SWAPPED_HINT}")
    dtype = np.uint8 if high <= np.iinfo(np.uint8).max else np.int16
    return array.astype(dtype, copy=False)
