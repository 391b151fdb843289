"""From a segmentation and its per-class error probabilities Ê to one :class:`Report`.

This is the network-independent half of the engine: ``segqc estimate`` feeds it error maps from any
source, ``segqc run`` feeds it the QC network's output.  Steps: estimates (3D, per slice, case), error
boxes, slice ranking; each is timed into ``report.timing_s``.  :mod:`.outputs` writes the result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from ..errors import InputError
from ..io.volumes import LabelMap
from .estimates import case_dice_from_sums, class_sums, estimate_from_sums, per_slice_from_sums, quality_index
from .ranking import rank_slices, slice_error_scores
from .regions import RegionParams, find_error_boxes
from .report import CaseEstimate, ClassEstimate, Report, SliceEntry

logger = logging.getLogger(__name__)

# Probabilities written by other tools may overshoot [0, 1] by interpolation round-off.
PROBABILITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class PostprocessParams:
    regions: RegionParams = field(default_factory=RegionParams)
    slice_axis: Optional[int] = None


def class_name(label: int, segmentation: LabelMap, class_names: Optional[Mapping[int, str]]) -> str:
    if class_names and label in class_names:
        return str(class_names[label])
    if label in segmentation.names:
        return segmentation.names[label]
    return f"label_{label}"


def validate_error_prob(error_prob: Mapping[int, np.ndarray], segmentation: LabelMap) -> dict[int, np.ndarray]:
    """Check shapes, labels and value range; return float32 maps clipped to [0, 1]."""
    if not error_prob:
        raise InputError("No error probability maps given")
    checked: dict[int, np.ndarray] = {}
    shape = tuple(segmentation.array.shape)
    for label, prob in sorted(error_prob.items()):
        label = int(label)
        if label <= 0:
            raise InputError(f"Error probability map for label {label}: labels must be positive class labels")
        prob = np.asarray(prob)
        if prob.shape != shape:
            raise InputError(f"Error probability map of label {label} has shape {prob.shape}, segmentation {shape}")
        prob = prob.astype(np.float32, copy=False)
        low, high = float(prob.min()), float(prob.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            raise InputError(f"Error probability map of label {label} contains NaN or infinite values")
        if low < -PROBABILITY_TOLERANCE or high > 1.0 + PROBABILITY_TOLERANCE:
            raise InputError(
                f"Error probability map of label {label} has values in [{low:.3g}, {high:.3g}]; expected "
                "probabilities in [0, 1] (pass sigmoid outputs, not logits)"
            )
        if low < 0.0 or high > 1.0:
            prob = np.clip(prob, 0.0, 1.0)
        checked[label] = prob
    missing = sorted(set(segmentation.labels) - set(checked))
    if missing:
        raise InputError(
            f"Segmentation has labels {missing} without an error probability map (have {sorted(checked)}); "
            "give one map per class"
        )
    return checked


def build_report(
    segmentation: LabelMap,
    error_prob: Mapping[int, np.ndarray],
    params: Optional[PostprocessParams] = None,
    class_names: Optional[Mapping[int, str]] = None,
) -> Report:
    """Estimates, error boxes and rankings of one case as a :class:`Report`."""
    params = params or PostprocessParams()
    timing: dict[str, float] = {}
    started = time.perf_counter()
    error_prob = validate_error_prob(error_prob, segmentation)
    geometry = segmentation.geometry
    slice_axis = geometry.default_slice_axis() if params.slice_axis is None else int(params.slice_axis)
    if slice_axis not in (0, 1, 2):
        raise InputError(f"slice axis must be 0, 1 or 2 (numpy axis of the z,y,x array), got {slice_axis}")
    voxel_mm3 = geometry.voxel_volume_mm3
    seg = segmentation.array

    classes: list[ClassEstimate] = []
    per_slice_dice: dict[str, np.ndarray] = {}
    sums = {}
    for label, prob in error_prob.items():
        sums[label] = class_sums(seg == label, prob, slice_axis)
        estimate = estimate_from_sums(sums[label])
        classes.append(ClassEstimate(
            label=label, name=class_name(label, segmentation, class_names), dice_est=estimate.dice,
            iou_est=estimate.iou, arvd_est=estimate.arvd, rvd_est=estimate.rvd,
            volume_mm3=estimate.mask_voxels * voxel_mm3, volume_est_mm3=estimate.truth_voxels_est * voxel_mm3,
            error_volume_mm3=estimate.error_voxels_est * voxel_mm3,
        ))
        per_slice_dice[str(label)] = per_slice_from_sums(sums[label]).dice
    case_dice = case_dice_from_sums(sums)
    qi = quality_index(error_prob)
    case_estimate = CaseEstimate(dice_est=case_dice, qi=qi,
                                 iou_est=case_dice / (2.0 - case_dice) if case_dice is not None else None)
    timing["estimates"] = time.perf_counter() - started

    started = time.perf_counter()
    scores = slice_error_scores(error_prob, slice_axis)
    order = rank_slices(scores)
    slice_dice_table = np.stack([per_slice_dice[str(label)] for label in error_prob], axis=1)[order]
    label_keys = [str(label) for label in error_prob]
    slices = [
        SliceEntry(index=int(index), error_score=float(score),
                   dice_est={key: (None if np.isnan(value) else float(value)) for key, value in zip(label_keys, row)})
        for index, score, row in zip(order.tolist(), scores[order].tolist(), slice_dice_table.tolist())
    ]
    timing["ranking"] = time.perf_counter() - started

    started = time.perf_counter()
    boxes = find_error_boxes(error_prob, geometry, slice_axis, params.regions)
    timing["regions"] = time.perf_counter() - started

    return Report(
        slice_axis=slice_axis,
        case=case_estimate,
        classes=classes,
        slices=slices,
        boxes=boxes,
        timing_s={key: round(value, 4) for key, value in timing.items()},
        geometry=geometry.to_dict(),
        parameters={"regions": asdict(params.regions), "slice_axis": slice_axis},
    )
