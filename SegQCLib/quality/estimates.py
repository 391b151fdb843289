"""Quality estimates from a predicted error probability map Ê (SegQC eqs. 4-8; Zhang & Chung's QI).

For one class with query mask M and error probability Ê the estimated truth is
T̂ = M(1-Ê) + (1-M)Ê.  Every estimate needs only three sums:

    m    = Σ M            (query volume, voxels)
    s_in = Σ M·Ê          (expected wrongly-included voxels)
    e    = Σ Ê            (expected error volume)

from which |M∩T|^ = m - s_in, Σ T̂ = m + e - 2 s_in and Σ|M - T̂| = e (SegQC eq. 8).  With Ê equal to
the true error map (M XOR T) these are exactly the true counts, so the estimates equal the true metrics.

Conventions for empty structures (shared with :mod:`SegQCLib.quality.metrics`): in 3D, Dice/IoU of an empty
query and empty (estimated) truth is 1.0 (nothing to find, nothing found); per slice it is NaN (the
slice says nothing about the class).  RVD/ARVD with an empty truth are NaN unless nothing is wrong (0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..arrays import bounding_box

# Sums below this count as zero (float32 maps summed in float64 keep ~1e-7 relative noise).
EMPTY_SUM_VOXELS = 1e-9


@dataclass(frozen=True)
class OverlapEstimate:
    """Estimated metrics of one class in 3D (volumes in voxels; multiply by the voxel volume for mm³)."""

    dice: float
    iou: float
    rvd: float
    arvd: float
    mask_voxels: float
    truth_voxels_est: float
    error_voxels_est: float


@dataclass(frozen=True)
class SliceEstimates:
    """Per-slice estimates of one class along ``axis``; NaN where undefined."""

    axis: int
    dice: np.ndarray
    iou: np.ndarray
    rvd: np.ndarray
    arvd: np.ndarray
    error_voxels_est: np.ndarray


def estimated_truth(mask: np.ndarray, error_prob: np.ndarray) -> np.ndarray:
    """T̂ = M(1-Ê) + (1-M)Ê (SegQC eq. 4)."""
    mask = np.asarray(mask, dtype=bool)
    error_prob = np.asarray(error_prob)
    return np.where(mask, 1.0 - error_prob, error_prob)


def _metrics_from_sums(m, s_in, e, empty_value: float):
    """Dice, IoU, RVD, ARVD from the three sums (arrays or scalars), without smoothing terms."""
    m = np.asarray(m, dtype=np.float64)
    s_in = np.asarray(s_in, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)
    intersection = m - s_in
    truth = m + e - 2.0 * s_in
    total = m + truth
    union = total - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        both_empty = total <= EMPTY_SUM_VOXELS
        dice = np.where(both_empty, empty_value, 2.0 * intersection / np.where(both_empty, 1.0, total))
        iou = np.where(both_empty, empty_value, intersection / np.where(union <= EMPTY_SUM_VOXELS, 1.0, union))
        truth_empty = truth <= EMPTY_SUM_VOXELS
        nothing_wrong = e <= EMPTY_SUM_VOXELS
        safe_truth = np.where(truth_empty, 1.0, truth)
        rvd = np.where(truth_empty, np.where(nothing_wrong, 0.0, np.nan), (m - truth) / safe_truth)
        arvd = np.where(truth_empty, np.where(nothing_wrong, 0.0, np.nan), e / safe_truth)
    return dice, iou, rvd, arvd, truth


def _check_pair(mask: np.ndarray, error_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = np.asarray(mask, dtype=bool)
    error_prob = np.asarray(error_prob)
    if mask.shape != error_prob.shape:
        raise ValueError(f"Mask shape {mask.shape} differs from error map shape {error_prob.shape}")
    return mask, error_prob


@dataclass(frozen=True)
class ClassSums:
    """Per-slice sums of one class along ``axis``: query voxels m, Σ M·Ê (s_in) and Σ Ê (e).

    3D sums are the sums of these, so one pass over the volume serves the 3D, per-slice and case
    estimates.
    """

    axis: int
    mask_voxels: np.ndarray
    error_in_mask: np.ndarray
    error: np.ndarray

    def totals(self) -> tuple[float, float, float]:
        return float(self.mask_voxels.sum()), float(self.error_in_mask.sum()), float(self.error.sum())


def class_sums(mask: np.ndarray, error_prob: np.ndarray, axis: int = 0) -> ClassSums:
    """One pass: the three sums per slice.  Work on the mask's bounding box where only it matters."""
    mask, error_prob = _check_pair(mask, error_prob)
    other_axes = tuple(a for a in range(mask.ndim) if a != axis)
    n_slices = mask.shape[axis]
    mask_voxels = np.zeros(n_slices, dtype=np.float64)
    error_in_mask = np.zeros(n_slices, dtype=np.float64)
    box = bounding_box(mask)
    if box is not None:
        crop_mask = mask[box]
        crop_prob = error_prob[box]
        offset = box[axis].start
        stop = box[axis].stop
        mask_voxels[offset:stop] = np.count_nonzero(crop_mask, axis=other_axes)
        error_in_mask[offset:stop] = np.where(crop_mask, crop_prob, 0).sum(axis=other_axes, dtype=np.float64)
    error = error_prob.sum(axis=other_axes, dtype=np.float64)
    return ClassSums(axis, mask_voxels, error_in_mask, error)


def estimate_from_sums(sums: ClassSums) -> OverlapEstimate:
    m, s_in, e = sums.totals()
    dice, iou, rvd, arvd, truth = _metrics_from_sums(m, s_in, e, empty_value=1.0)
    return OverlapEstimate(float(dice), float(iou), float(rvd), float(arvd), m, float(truth), e)


def per_slice_from_sums(sums: ClassSums) -> SliceEstimates:
    dice, iou, rvd, arvd, _ = _metrics_from_sums(sums.mask_voxels, sums.error_in_mask, sums.error,
                                                 empty_value=np.nan)
    return SliceEstimates(sums.axis, dice, iou, rvd, arvd, sums.error)


def case_dice_from_sums(sums: Mapping[int, ClassSums]) -> float:
    """Multi-class estimated Dice 2ΣTP/(2ΣTP+FP+FN), pooled over classes (QCResUNet appendix A)."""
    numerator = 0.0
    denominator = 0.0
    for class_total in sums.values():
        m, s_in, e = class_total.totals()
        numerator += 2.0 * (m - s_in)
        denominator += m + (m + e - 2.0 * s_in)
    if denominator <= EMPTY_SUM_VOXELS:
        return 1.0
    return numerator / denominator


def estimate_class(mask: np.ndarray, error_prob: np.ndarray) -> OverlapEstimate:
    """Estimated Dice, IoU, RVD and ARVD of one class in 3D (SegQC eqs. 5-8)."""
    return estimate_from_sums(class_sums(mask, error_prob))


def estimate_class_per_slice(mask: np.ndarray, error_prob: np.ndarray, axis: int) -> SliceEstimates:
    """The same estimates on every slice along ``axis`` at once (2D sums, no loop over slices)."""
    return per_slice_from_sums(class_sums(mask, error_prob, axis))


def estimate_case_dice(segmentation: np.ndarray, error_prob: Mapping[int, np.ndarray]) -> float:
    """Multi-class estimated Dice over the classes of ``error_prob`` (see :func:`case_dice_from_sums`)."""
    return case_dice_from_sums({label: class_sums(segmentation == label, prob) for label, prob in error_prob.items()})


def voxel_error_probability(error_prob: Mapping[int, np.ndarray]) -> np.ndarray:
    """Probability that a voxel is wrong in any class, approximated by the maximum over classes.

    The maximum is exact for binary maps (a voxel labelled with the wrong class is an error of both
    classes) and avoids counting one mislabelled voxel twice.
    """
    arrays = list(error_prob.values())
    if not arrays:
        raise ValueError("No error probability maps given")
    result = np.array(arrays[0], dtype=np.float32, copy=True)
    for prob in arrays[1:]:
        np.maximum(result, prob, out=result)
    return result


def quality_index(error_prob: Mapping[int, np.ndarray]) -> float:
    """QI = 1 - mean voxel error probability over the volume (Zhang & Chung), in [0, 1]."""
    arrays = list(error_prob.values())
    if len(arrays) == 1:
        return 1.0 - float(np.mean(arrays[0], dtype=np.float64))
    return 1.0 - float(np.mean(voxel_error_probability(error_prob), dtype=np.float64))
