"""Ranking for review (SegQC sec. 3.5): slices by summed predicted error, boxes by score, cases by estimated Dice.

Slices are ranked by the error probability summed over all classes, not by a per-slice metric, because a
slice without the structure has no meaningful per-slice Dice.  The slice axis defaults to
:meth:`SegQCLib.geometry.Geometry.default_slice_axis` (the coarsest-spacing acquisition axis).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np

from ..errors import InputError
from .report import ErrorBox


def slice_error_scores(error_prob: Mapping[int, np.ndarray], slice_axis: int) -> np.ndarray:
    """Predicted error summed over all classes and voxels of each slice along ``slice_axis`` (float64)."""
    if slice_axis not in (0, 1, 2):
        raise InputError(f"slice axis must be 0, 1 or 2 (numpy axis of the z,y,x array), got {slice_axis}")
    if not error_prob:
        raise InputError("No error probability maps to score slices with")
    scores: Optional[np.ndarray] = None
    other_axes = tuple(a for a in (0, 1, 2) if a != slice_axis)
    for label, prob in error_prob.items():
        prob = np.asarray(prob)
        if prob.ndim != 3:
            raise InputError(f"Error probability map of label {label} is not 3D (shape {prob.shape})")
        # Float64 accumulation: a 512x512 slice sums ~2.6e5 values; float32 would lose the small differences
        # that decide the order of nearly clean slices.
        class_scores = prob.sum(axis=other_axes, dtype=np.float64)
        if scores is None:
            scores = class_scores
        elif class_scores.shape != scores.shape:
            raise InputError(f"Error probability map of label {label} has {class_scores.size} slices along axis "
                             f"{slice_axis}, others have {scores.size}")
        else:
            scores = scores + class_scores
    assert scores is not None
    return scores


def rank_slices(scores: np.ndarray) -> np.ndarray:
    """Slice indices by descending score; ties keep slice order; NaN scores (never expected) go last."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 1:
        raise InputError(f"Slice scores must be one value per slice, got shape {scores.shape}")
    # Negating keeps NaN as NaN, which a stable ascending sort puts last.
    return np.argsort(-scores, kind="stable")


def rank_boxes(boxes: Sequence[ErrorBox]) -> list[ErrorBox]:
    """Boxes by descending score (ties keep their given order)."""
    return sorted(boxes, key=lambda box: -box.score)


def _undefined(value: Optional[float]) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def rank_cases(case_ids: Sequence[str], dice_est: Sequence[Optional[float]]) -> list[str]:
    """Case ids in review order: undefined estimates first, then lowest estimated Dice first.

    An undefined estimate (None or NaN) means SegQC could not judge the case: the segmentation and the
    estimated truth are both empty (an empty mask with no predicted error: either a true negative or a
    missed structure) or the run failed for that case.  Either needs a human look, so such cases lead the
    list.  Ties keep the given order.
    """
    case_ids = list(case_ids)
    dice_est = list(dice_est)
    if len(case_ids) != len(dice_est):
        raise InputError(f"{len(case_ids)} case ids but {len(dice_est)} Dice estimates")
    if len(set(case_ids)) != len(case_ids):
        raise InputError("Case ids must be unique to rank cases")
    undefined = [case for case, value in zip(case_ids, dice_est) if _undefined(value)]
    defined = [(float(value), position) for position, value in enumerate(dice_est) if not _undefined(value)]
    defined.sort()
    return undefined + [case_ids[position] for _, position in defined]
