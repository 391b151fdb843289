"""Direction matrices as read from image headers: orthonormal, nearly so (rounded headers), or refused.

SegQC, like ITK and 3D Slicer, works with voxel axes that are orthogonal unit vectors.  A header whose
direction deviates from that by header rounding (at most :data:`ROUNDING_TOLERANCE` in any entry of
DᵀD − I) is used as read; up to :data:`ORTHONORMAL_TOLERANCE` it is replaced by the nearest rotation (the
orthogonal factor of its polar decomposition) and a notice says so; beyond that (sheared or skewed axes),
or when it is singular (an axis of length zero, two axes along one line), or not finite, the file is
refused with a message.  NRRD, MetaImage and Slicer ``.seg.nrrd`` files go through the same check;
SimpleITK refuses sheared NIfTI headers itself (:func:`explain_itk_geometry_error` words its message).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Optional

import numpy as np

from ..errors import InputError

ROUNDING_TOLERANCE = 1e-6
ORTHONORMAL_TOLERANCE = 1e-3
SINGULAR_DETERMINANT = 1e-6
ADVICE = ("SegQC, like ITK and 3D Slicer, needs voxel axes at right angles: resample the volume onto an "
          "orthogonal grid (e.g. with 3D Slicer's Resample Image (BRAINS) or SimpleITK.Resample) and check again.")


def _axis_angles(matrix: np.ndarray) -> str:
    unit = matrix / np.linalg.norm(matrix, axis=0)
    angles = [float(np.degrees(np.arccos(np.clip(unit[:, a] @ unit[:, b], -1.0, 1.0))))
              for a, b in itertools.combinations(range(3), 2)]
    return ", ".join(f"{name} {angle:.1f}°" for name, angle in zip(("x-y", "x-z", "y-z"), angles))


def checked_direction(direction: Sequence[float], source: str, what: str) -> tuple[tuple[float, ...], Optional[str]]:
    """(direction to use, notice or None); InputError for a singular, sheared or non-finite direction."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(matrix)):
        raise InputError(f"{what} {source} has a direction matrix with NaN or infinite entries; its header is "
                         "damaged")
    if abs(np.linalg.det(matrix)) < SINGULAR_DETERMINANT:
        raise InputError(f"{what} {source} has a singular direction matrix (determinant 0: an axis of length zero "
                         f"or two axes along one line), so its voxels have no position. {ADVICE}")
    deviation = float(np.max(np.abs(matrix.T @ matrix - np.eye(3))))
    if deviation <= ROUNDING_TOLERANCE:
        return tuple(float(v) for v in matrix.ravel()), None
    if deviation > ORTHONORMAL_TOLERANCE:
        raise InputError(f"{what} {source} has a non-orthonormal direction matrix (angles between its voxel axes: "
                         f"{_axis_angles(matrix)}; largest deviation of DᵀD from the identity {deviation:.3g}). "
                         f"{ADVICE}")
    left, _singular, right = np.linalg.svd(matrix)
    rotation = left @ right
    notice = (f"{what} {source}: its direction matrix deviates from orthonormal by {deviation:.2g} (header "
              "rounding); SegQC uses the nearest orthonormal matrix, a change of at most "
              f"{float(np.max(np.abs(rotation - matrix))):.2g} per entry")
    return tuple(float(v) for v in rotation.ravel()), notice


def explain_itk_geometry_error(message: str, source: str, what: str) -> Optional[str]:
    """Our words for SimpleITK's refusals of a file's geometry, or None for other errors."""
    if "orthonormal direction cosines" in message:
        return (f"{what} {source} has a non-orthonormal direction in its NIfTI header (sheared or skewed voxel "
                f"axes). {ADVICE}")
    if "determinant is 0" in message:
        return (f"{what} {source} has a singular direction matrix (determinant 0: an axis of length zero or two "
                f"axes along one line), so its voxels have no position. {ADVICE}")
    return None
