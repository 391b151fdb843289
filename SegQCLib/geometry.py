"""Image geometry that travels with (z, y, x) arrays, and the one place where LPS/RAS conversions happen.

SimpleITK stores spacing/origin/direction in (x, y, z) order and physical points in LPS.  Arrays from
``sitk.GetArrayFromImage`` are indexed (z, y, x).  Slicer works in RAS with IJK = (x, y, z) indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Two geometries closer than these tolerances are the same (header round-off in NIfTI/NRRD writers).
SPACING_TOLERANCE_MM = 1e-4
ORIGIN_TOLERANCE_MM = 1e-3
DIRECTION_TOLERANCE = 1e-4

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a 3D image in SimpleITK conventions.

    ``direction`` is the 3x3 direction matrix, row-major, whose columns are the physical directions
    of the x, y and z index axes (as ``sitk.Image.GetDirection`` returns it).
    """

    shape_zyx: tuple[int, int, int]
    spacing_xyz_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.shape_zyx) != 3 or len(self.spacing_xyz_mm) != 3 or len(self.origin_lps_mm) != 3:
            raise ValueError("Geometry is 3D: shape, spacing and origin need three values each")
        if len(self.direction) != 9:
            raise ValueError("Geometry direction needs nine values (3x3 row-major)")
        if min(self.spacing_xyz_mm) <= 0:
            raise ValueError(f"Spacing must be positive, got {self.spacing_xyz_mm}")

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_sitk(cls, image) -> Geometry:
        size_xyz = image.GetSize()
        return cls(
            shape_zyx=(int(size_xyz[2]), int(size_xyz[1]), int(size_xyz[0])),
            spacing_xyz_mm=tuple(float(v) for v in image.GetSpacing()),
            origin_lps_mm=tuple(float(v) for v in image.GetOrigin()),
            direction=tuple(float(v) for v in image.GetDirection()),
        )

    def apply_to(self, image) -> None:
        """Copy this geometry onto a SimpleITK image of the same size."""
        image.SetSpacing(self.spacing_xyz_mm)
        image.SetOrigin(self.origin_lps_mm)
        image.SetDirection(self.direction)

    def with_shape(self, shape_zyx: tuple[int, int, int], offset_zyx: tuple[int, int, int] = (0, 0, 0)) -> Geometry:
        """Geometry of a sub-grid starting at voxel ``offset_zyx`` (for crops and pads)."""
        origin = self.index_zyx_to_lps(np.asarray(offset_zyx, dtype=float))
        return Geometry(tuple(int(s) for s in shape_zyx), self.spacing_xyz_mm, tuple(float(v) for v in origin),
                        self.direction)

    # --- derived quantities -------------------------------------------------------------------
    @property
    def spacing_zyx_mm(self) -> tuple[float, float, float]:
        sx, sy, sz = self.spacing_xyz_mm
        return (sz, sy, sx)

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing_xyz_mm))

    def default_slice_axis(self) -> int:
        """Numpy axis of the (z, y, x) array along which slices are reviewed.

        The acquisition axis is the one with the coarsest spacing; when spacing is (nearly) isotropic
        there is no such axis and the first array axis is used.
        """
        spacing = np.asarray(self.spacing_zyx_mm)
        coarsest = int(np.argmax(spacing))
        if spacing[coarsest] > spacing.min() * (1.0 + 1e-3) and np.sum(np.isclose(spacing, spacing[coarsest])) == 1:
            return coarsest
        return 0

    # --- coordinate transforms ------------------------------------------------------------------
    def index_zyx_to_lps(self, index_zyx: np.ndarray) -> np.ndarray:
        """Continuous (z, y, x) indices, shape (..., 3), to LPS physical points in mm."""
        index_zyx = np.asarray(index_zyx, dtype=float)
        index_xyz = index_zyx[..., ::-1]
        scaled = index_xyz * np.asarray(self.spacing_xyz_mm)
        return scaled @ self.direction_matrix.T + np.asarray(self.origin_lps_mm)

    def index_zyx_to_ras(self, index_zyx: np.ndarray) -> np.ndarray:
        return lps_to_ras(self.index_zyx_to_lps(index_zyx))

    def lps_to_index_zyx(self, points_lps: np.ndarray) -> np.ndarray:
        points = np.asarray(points_lps, dtype=float) - np.asarray(self.origin_lps_mm)
        index_xyz = points @ np.linalg.inv(self.direction_matrix).T / np.asarray(self.spacing_xyz_mm)
        return index_xyz[..., ::-1]

    def ijk_to_ras_matrix(self) -> np.ndarray:
        """4x4 matrix mapping Slicer IJK (= x, y, z index) to RAS, as vtkMRMLVolumeNode.SetIJKToRASMatrix wants."""
        matrix = np.eye(4)
        matrix[:3, :3] = LPS_TO_RAS @ self.direction_matrix @ np.diag(self.spacing_xyz_mm)
        matrix[:3, 3] = LPS_TO_RAS @ np.asarray(self.origin_lps_mm)
        return matrix

    @classmethod
    def from_ijk_to_ras_matrix(cls, matrix: np.ndarray, shape_zyx: tuple[int, int, int]) -> Geometry:
        """Inverse of :meth:`ijk_to_ras_matrix` (used by the Slicer logic to turn a volume node into arrays)."""
        matrix = np.asarray(matrix, dtype=float)
        lps = LPS_TO_RAS @ matrix[:3, :3]
        spacing = np.linalg.norm(lps, axis=0)
        direction = lps / spacing
        origin = LPS_TO_RAS @ matrix[:3, 3]
        return cls(tuple(int(s) for s in shape_zyx), tuple(float(s) for s in spacing),
                   tuple(float(v) for v in origin), tuple(float(v) for v in direction.ravel()))

    # --- comparison ---------------------------------------------------------------------------
    def differences(self, other: Geometry) -> list[str]:
        """Human-readable list of what differs from ``other`` (empty when the grids match)."""
        found = []
        if tuple(self.shape_zyx) != tuple(other.shape_zyx):
            found.append(f"size (z,y,x) {tuple(self.shape_zyx)} vs {tuple(other.shape_zyx)}")
        if not np.allclose(self.spacing_xyz_mm, other.spacing_xyz_mm, atol=SPACING_TOLERANCE_MM):
            found.append(f"spacing (x,y,z) mm {_fmt(self.spacing_xyz_mm)} vs {_fmt(other.spacing_xyz_mm)}")
        if not np.allclose(self.origin_lps_mm, other.origin_lps_mm, atol=ORIGIN_TOLERANCE_MM):
            found.append(f"origin (LPS) mm {_fmt(self.origin_lps_mm)} vs {_fmt(other.origin_lps_mm)}")
        if not np.allclose(self.direction, other.direction, atol=DIRECTION_TOLERANCE):
            found.append(f"direction {_fmt(self.direction)} vs {_fmt(other.direction)}")
        return found

    def matches(self, other: Geometry) -> bool:
        return not self.differences(other)

    def to_dict(self) -> dict:
        return {
            "shape_zyx": list(self.shape_zyx),
            "spacing_xyz_mm": list(self.spacing_xyz_mm),
            "origin_lps_mm": list(self.origin_lps_mm),
            "direction": list(self.direction),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Geometry:
        return cls(tuple(data["shape_zyx"]), tuple(data["spacing_xyz_mm"]), tuple(data["origin_lps_mm"]),
                   tuple(data["direction"]))


def lps_to_ras(points: np.ndarray) -> np.ndarray:
    """LPS <-> RAS (the same sign flip both ways)."""
    points = np.asarray(points, dtype=float)
    return points * np.array([-1.0, -1.0, 1.0])


ras_to_lps = lps_to_ras


def affine_ras_to_lps(affine: np.ndarray) -> np.ndarray:
    """A 3x4 voxel-index -> RAS mm affine (NIfTI's sform rows) as voxel-index -> LPS mm."""
    return LPS_TO_RAS @ np.asarray(affine, dtype=float)  # the flip maps RAS to LPS as well


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
