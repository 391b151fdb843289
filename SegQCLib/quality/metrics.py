"""Segmentation metrics from ground truth: per class and multi-class, in 3D and per slice.

These are the *true* metrics that SegQC's estimates (``estimates.py``) approximate without ground truth;
they are used to build training targets, to evaluate QC predictions and to check that the estimates are
exact when the predicted error map equals the true one.

Notation (SegQC paper, eqs. 1-3): M is the query mask, T the ground truth, both boolean.

* Dice = 2|M∩T| / (|M|+|T|);  IoU = |M∩T| / |M∪T|
* RVD = (|M|-|T|) / |T|  (signed relative volume difference)
* ARVD = Σ|m-t| / Σt = |M xor T| / |T|, as the paper writes it: the symmetric-difference volume over the
  true volume (not |RVD|, which would let over- and under-segmentation cancel).
* NSD (normalised surface Dice, Nikolov et al. 2021): the fraction of the boundary voxels of both masks
  that lie within ``tolerance_mm`` of the other mask's boundary, distances in mm (spacing-aware).

Empty masks (the conventions every caller relies on; nan is written as JSON null in reports):

* 3D, both masks empty: perfect agreement, so Dice = IoU = NSD = 1 and RVD = ARVD = 0.
* 3D, truth empty and query not: RVD = ARVD = nan (relative to a zero volume); Dice = IoU = NSD = 0.
* Per slice: a slice where *neither* mask has the class carries no information about the overlap, so
  per-slice Dice, IoU and NSD are nan there.  RVD and ARVD follow the 3D rule within each slice: 0 where
  both are empty (no volume error), nan where the slice's truth is empty but its query is not.  (The
  same conventions as :mod:`SegQCLib.quality.estimates`, so estimates and true values line up slice by slice.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage

from ..arrays import bounding_box
from ..errors import InputError

# Surface tolerance when the caller gives none: one voxel at the typical 1 mm MRI resolution.  NSD is
# only comparable between results computed with the same tolerance; set it per structure when known.
DEFAULT_NSD_TOLERANCE_MM = 1.0

# Probing the other boundary at every offset within the tolerance costs at most (#offsets × #boundary
# voxels) lookups of ~8 ns (usually far fewer: most voxels match at the first offsets); the two
# distance transforms cost ~190 ns per voxel of the box (both measured with scipy 1.x on one core).
# Probe while its worst case stays below the transforms' cost.
_PROBE_COST_PER_VOXEL = 16

# NSD works on the bounding box of both masks.  No margin is needed: the erosion treats everything
# beyond the array as background (border_value=0), which is exactly what lies beyond the box, and every
# boundary voxel, hence every nearest one, lies inside the box.


@dataclass
class ClassMetrics:
    """True metrics of one foreground class (query vs ground truth)."""

    label: int
    dice: float
    iou: float
    rvd: float
    arvd: float
    nsd: float


@dataclass
class CaseMetrics:
    """True case-level metrics: multi-class Dice (QCResUNet appendix A), mean NSD, and each class."""

    dice: float
    nsd: float
    classes: list[ClassMetrics]


def _as_bool_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"Masks must have the same shape to be compared, got {a.shape} and {b.shape}")
    return a.astype(bool, copy=False), b.astype(bool, copy=False)


def _check_labels_pair(query: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    query = np.asarray(query)
    truth = np.asarray(truth)
    if query.shape != truth.shape:
        raise InputError(f"Label maps must have the same shape, got query {query.shape} and truth {truth.shape}")
    return query, truth


def _check_spacing(spacing_zyx_mm: Sequence[float], ndim: int) -> tuple[float, ...]:
    spacing = tuple(float(s) for s in spacing_zyx_mm)
    if len(spacing) != ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"Spacing must be {ndim} positive finite values in mm, got {spacing_zyx_mm}")
    return spacing


def _check_tolerance(tolerance_mm: float) -> None:
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise InputError(f"NSD tolerance must be a finite distance >= 0 mm, got {tolerance_mm}")


def error_maps(query: np.ndarray, truth: np.ndarray, labels: Sequence[int]) -> dict[int, np.ndarray]:
    """Per-class true error maps E_c = (M == c) xor (T == c), boolean, one per label."""
    query, truth = _check_labels_pair(query, truth)
    return {int(c): (query == c) ^ (truth == c) for c in labels}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice 2|A∩B|/(|A|+|B|) of two masks; 1.0 when both are empty."""
    a, b = _as_bool_pair(a, b)
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union |A∩B|/|A∪B|; 1.0 when both masks are empty."""
    a, b = _as_bool_pair(a, b)
    union = int(np.count_nonzero(a | b))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(a & b)) / union


def _relative_to_truth(numerator: int, query_volume: int, truth_volume: int) -> float:
    if truth_volume == 0:
        return 0.0 if query_volume == 0 else math.nan
    return numerator / truth_volume


def rvd(query: np.ndarray, truth: np.ndarray) -> float:
    """Signed relative volume difference (|M|-|T|)/|T|; 0 if both empty, nan if only the truth is empty."""
    query, truth = _as_bool_pair(query, truth)
    m = int(np.count_nonzero(query))
    t = int(np.count_nonzero(truth))
    return _relative_to_truth(m - t, m, t)


def arvd(query: np.ndarray, truth: np.ndarray) -> float:
    """ARVD Σ|m-t|/Σt = |M xor T|/|T| (SegQC eq. 3); 0 if both empty, nan if only the truth is empty."""
    query, truth = _as_bool_pair(query, truth)
    m = int(np.count_nonzero(query))
    t = int(np.count_nonzero(truth))
    return _relative_to_truth(int(np.count_nonzero(query ^ truth)), m, t)


def multiclass_dice(query: np.ndarray, truth: np.ndarray, labels: Sequence[int]) -> float:
    """Subject-level multi-class Dice 2TP/(2TP+FP+FN) over the foreground ``labels`` (QCResUNet app. A).

    Equals 2 Σ_c |M_c∩T_c| / Σ_c (|M_c|+|T_c|): a voxel given the wrong foreground label counts as a
    false positive of its query class and a false negative of its true class.  1.0 when no listed
    class occurs in either map.
    """
    query, truth = _check_labels_pair(query, truth)
    labels = [int(c) for c in labels]
    if min([int(query.min(initial=0)), int(truth.min(initial=0)), *labels]) < 0:
        raise InputError("Label maps and labels must be non-negative integers")
    # One pass each over the maps instead of one per class: histogram the labels and the agreements.
    size = max([int(query.max(initial=0)), int(truth.max(initial=0)), *labels]) + 1
    query_counts = np.bincount(query.ravel().astype(np.int64, copy=False), minlength=size)
    truth_counts = np.bincount(truth.ravel().astype(np.int64, copy=False), minlength=size)
    agree = query == truth
    tp_counts = np.bincount(query[agree].astype(np.int64, copy=False), minlength=size)
    total = int(query_counts[labels].sum() + truth_counts[labels].sum())
    if total == 0:
        return 1.0
    return 2.0 * int(tp_counts[labels].sum()) / total


def _boundary(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    # border_value=0: voxels on the array border are boundary, as if the volume were padded with background.
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _ball_radius(spacing: Sequence[float], tolerance_mm: float, flat_axis: Optional[int]) -> list[int]:
    radius = [int(math.floor(tolerance_mm / s)) for s in spacing]
    if flat_axis is not None:
        radius[flat_axis] = 0
    return radius


def _ball_offsets(spacing: Sequence[float], tolerance_mm: float, flat_axis: Optional[int]) -> np.ndarray:
    """Integer voxel offsets no farther than ``tolerance_mm`` (none along ``flat_axis``), nearest first.

    The distance is computed as ``distance_transform_edt`` computes it (sqrt of the sum of squared
    scaled offsets, in axis order), so both ways of testing the tolerance agree to the last bit.
    """
    radius = _ball_radius(spacing, tolerance_mm, flat_axis)
    grids = np.meshgrid(*[np.arange(-r, r + 1) for r in radius], indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    distance_mm = np.sqrt(np.add.reduce((offsets.astype(np.float64) * np.asarray(spacing)) ** 2, axis=1))
    keep = distance_mm <= tolerance_mm
    order = np.argsort(distance_mm[keep], kind="stable")
    return offsets[keep][order]


def _near(source: np.ndarray, target: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The voxels of ``source`` that have a ``target`` voxel at one of ``offsets``.

    Loops over the (few) offsets, each step vectorised over the source voxels not yet matched; with
    the offsets nearest first most voxels are settled by the first ones.
    """
    radius = np.abs(offsets).max(axis=0)
    padded = np.ascontiguousarray(np.pad(target, [(int(r), int(r)) for r in radius]))
    flat_target = padded.ravel()
    strides = np.array(padded.strides, dtype=np.int64) // padded.itemsize
    coords = np.nonzero(source)
    remaining = sum((c.astype(np.int64) + int(r)) * int(st) for c, r, st in zip(coords, radius, strides))
    remaining_index = np.arange(remaining.size)
    hit = np.zeros(remaining.size, dtype=bool)
    for step in offsets.astype(np.int64) @ strides:
        found = flat_target[remaining + step]
        hit[remaining_index[found]] = True
        remaining = remaining[~found]
        remaining_index = remaining_index[~found]
        if remaining.size == 0:
            break
    out = np.zeros_like(source)
    out[coords] = hit
    return out


def _surface_agreement(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float], tolerance_mm: float, flat_axis: Optional[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boundaries of a and b, and which of their voxels lie within tolerance of the other boundary.

    Both masks must be non-empty.  With ``flat_axis`` the boundaries and distances are 2D, within each
    slice along that axis.  Two exact ways, whichever touches fewer voxels: probing the other boundary
    at every offset within the tolerance (small tolerances: a handful of offsets per boundary voxel),
    or one Euclidean distance transform per boundary (large tolerances).  For 2D distances the
    transform is given a spacing along ``flat_axis`` larger than any in-plane distance plus the
    tolerance, so a boundary voxel in another slice can never be nearer, or within tolerance.
    """
    structure = ndimage.generate_binary_structure(a.ndim, 1)
    if flat_axis is not None:
        in_plane = np.zeros_like(structure)
        index: list = [slice(None)] * a.ndim
        index[flat_axis] = 1
        in_plane[tuple(index)] = ndimage.generate_binary_structure(a.ndim - 1, 1)
        structure = in_plane
    boundary_a = _boundary(a, structure)
    boundary_b = _boundary(b, structure)
    n_boundary = int(np.count_nonzero(boundary_a)) + int(np.count_nonzero(boundary_b))
    budget = _PROBE_COST_PER_VOXEL * a.size
    # The ball holds about half the offsets of its bounding box: skip building it when even that is too many.
    n_box_offsets = math.prod(2 * r + 1 for r in _ball_radius(spacing, tolerance_mm, flat_axis))
    if n_box_offsets * n_boundary <= 2 * budget:
        offsets = _ball_offsets(spacing, tolerance_mm, flat_axis)
        if len(offsets) * n_boundary <= budget:
            ok_a = _near(boundary_a, boundary_b, offsets)
            return boundary_a, boundary_b, ok_a, _near(boundary_b, boundary_a, offsets)
    sampling = list(spacing)
    if flat_axis is not None:
        in_plane_extent_mm = sum(n * s for i, (n, s) in enumerate(zip(a.shape, spacing)) if i != flat_axis)
        sampling[flat_axis] = in_plane_extent_mm + tolerance_mm + 1.0
    dist_to_b = ndimage.distance_transform_edt(~boundary_b, sampling=sampling)
    dist_to_a = ndimage.distance_transform_edt(~boundary_a, sampling=sampling)
    return boundary_a, boundary_b, boundary_a & (dist_to_b <= tolerance_mm), boundary_b & (dist_to_a <= tolerance_mm)


def normalized_surface_dice(
    a: np.ndarray, b: np.ndarray, spacing_zyx_mm: Sequence[float], tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM
) -> float:
    """Normalised surface Dice of two masks at ``tolerance_mm`` (Nikolov et al.), voxel-boundary version.

    Surfaces are the boundary voxels (mask voxels with a face neighbour outside the mask); distances
    between them are Euclidean in mm (as ``distance_transform_edt`` with ``sampling=spacing`` gives
    them; see :func:`_surface_agreement` for the two exact ways the tolerance is tested).  NSD is
    (#boundary voxels of A within tolerance of B's boundary + the same for B) / (#boundary voxels of A
    and B).  The work is done on the bounding box of A∪B, so it scales with the structure,
    not the volume.  Both empty: 1.0; exactly one empty: 0.0.
    """
    a, b = _as_bool_pair(a, b)
    spacing = _check_spacing(spacing_zyx_mm, a.ndim)
    _check_tolerance(tolerance_mm)
    has_a = bool(a.any())
    has_b = bool(b.any())
    if not has_a and not has_b:
        return 1.0
    if not has_a or not has_b:
        return 0.0
    crop = bounding_box(a | b)
    boundary_a, boundary_b, ok_a, ok_b = _surface_agreement(a[crop], b[crop], spacing, tolerance_mm, None)
    n_ok = int(np.count_nonzero(ok_a)) + int(np.count_nonzero(ok_b))
    return n_ok / (int(np.count_nonzero(boundary_a)) + int(np.count_nonzero(boundary_b)))


def case_metrics(
    query: np.ndarray,
    truth: np.ndarray,
    labels: Sequence[int],
    spacing_zyx_mm: Sequence[float],
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> CaseMetrics:
    """All true metrics of a multi-class query label map against the truth.

    Case Dice is the multi-class Dice over ``labels``; case NSD is the mean class NSD over the classes
    present in the query or the truth (1.0 when none is, matching the both-empty convention).
    """
    query, truth = _check_labels_pair(query, truth)
    classes = []
    present = []
    for label in labels:
        m = query == label
        t = truth == label
        classes.append(
            ClassMetrics(
                label=int(label),
                dice=dice(m, t),
                iou=iou(m, t),
                rvd=rvd(m, t),
                arvd=arvd(m, t),
                nsd=normalized_surface_dice(m, t, spacing_zyx_mm, nsd_tolerance_mm),
            )
        )
        present.append(bool(m.any() or t.any()))
    nsd_values = [c.nsd for c, p in zip(classes, present) if p]
    case_nsd = float(np.mean(nsd_values)) if nsd_values else 1.0
    return CaseMetrics(dice=multiclass_dice(query, truth, labels), nsd=case_nsd, classes=classes)


# ----------------------------------------------------------------------------------------------------
# Per slice: every function reduces over the in-plane axes in one call, no loop over slices.


def _in_plane_axes(ndim: int, axis: int) -> tuple[int, ...]:
    if not -ndim <= axis < ndim:
        raise InputError(f"Slice axis {axis} is out of range for a {ndim}D array")
    axis %= ndim
    return tuple(i for i in range(ndim) if i != axis)


def _slice_counts(a: np.ndarray, b: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-slice |A|, |B| and |A∩B| as float64 arrays."""
    a, b = _as_bool_pair(a, b)
    plane = _in_plane_axes(a.ndim, axis)
    count_a = np.count_nonzero(a, axis=plane).astype(np.float64)
    count_b = np.count_nonzero(b, axis=plane).astype(np.float64)
    count_ab = np.count_nonzero(a & b, axis=plane).astype(np.float64)
    return count_a, count_b, count_ab


def _divide_or_nan(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def per_slice_dice(query_mask: np.ndarray, truth_mask: np.ndarray, axis: int) -> np.ndarray:
    """Dice of each slice along ``axis``; nan where both masks are empty in the slice."""
    m, t, mt = _slice_counts(query_mask, truth_mask, axis)
    return _divide_or_nan(2.0 * mt, m + t)


def per_slice_iou(query_mask: np.ndarray, truth_mask: np.ndarray, axis: int) -> np.ndarray:
    """IoU of each slice along ``axis``; nan where both masks are empty in the slice."""
    m, t, mt = _slice_counts(query_mask, truth_mask, axis)
    return _divide_or_nan(mt, m + t - mt)


def _relative_to_truth_per_slice(numerator: np.ndarray, query: np.ndarray, truth: np.ndarray) -> np.ndarray:
    out = _divide_or_nan(numerator, truth)
    out[(truth == 0) & (query == 0)] = 0.0
    return out


def per_slice_rvd(query_mask: np.ndarray, truth_mask: np.ndarray, axis: int) -> np.ndarray:
    """(|M|-|T|)/|T| of each slice; 0 where both are empty, nan where only the slice's truth is."""
    m, t, _ = _slice_counts(query_mask, truth_mask, axis)
    return _relative_to_truth_per_slice(m - t, m, t)


def per_slice_arvd(query_mask: np.ndarray, truth_mask: np.ndarray, axis: int) -> np.ndarray:
    """|M xor T|/|T| of each slice; 0 where both are empty, nan where only the slice's truth is."""
    m, t, mt = _slice_counts(query_mask, truth_mask, axis)
    return _relative_to_truth_per_slice(m + t - 2.0 * mt, m, t)


def per_slice_nsd(
    a: np.ndarray,
    b: np.ndarray,
    spacing_zyx_mm: Sequence[float],
    tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    axis: int = 0,
) -> np.ndarray:
    """2D normalised surface Dice of each slice along ``axis``.

    Surfaces are the 2D boundaries within each slice (4-connected erosion in the slice plane) and the
    distances are 2D, in mm, within the slice.  Both come from whole-volume calls, no loop over slices:
    the erosion uses a structuring element that is flat along ``axis``; the tolerance test either probes
    in-plane offsets only, or runs one 3D distance transform with, along ``axis``, a spacing larger than
    any in-plane distance plus the tolerance, so that a boundary voxel in another slice can never be
    nearer (or within tolerance) than one in the same slice.  nan where both masks are empty in the
    slice, 0 where exactly one is.
    """
    a, b = _as_bool_pair(a, b)
    if a.ndim != 3:
        raise InputError(f"per_slice_nsd needs 3D masks, got {a.ndim}D")
    spacing = _check_spacing(spacing_zyx_mm, a.ndim)
    plane = _in_plane_axes(a.ndim, axis)
    axis %= a.ndim
    _check_tolerance(tolerance_mm)
    has_a = np.any(a, axis=plane)
    has_b = np.any(b, axis=plane)
    result = np.full(a.shape[axis], np.nan)
    result[has_a ^ has_b] = 0.0
    both = has_a & has_b
    if not both.any():
        return result
    crop = bounding_box(a | b)
    boundary_a, boundary_b, ok_a, ok_b = _surface_agreement(a[crop], b[crop], spacing, tolerance_mm, axis)
    n_ok = np.count_nonzero(ok_a, axis=plane) + np.count_nonzero(ok_b, axis=plane)
    n_boundary = np.count_nonzero(boundary_a, axis=plane) + np.count_nonzero(boundary_b, axis=plane)
    # Slices outside the box hold neither mask and stay nan.
    in_box = slice(crop[axis].start, crop[axis].stop)
    both_in_box = both[in_box]
    result[in_box][both_in_box] = n_ok[both_in_box] / n_boundary[both_in_box]
    return result
