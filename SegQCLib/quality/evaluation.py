"""Evaluation utilities for QC benchmarks: agreement of predicted and true quality, failure ranking,
error-map and error-box detection quality, correction curves, and bootstrap confidence intervals.

Conventions: inputs are 1D sequences of per-case (or per-slice, per-voxel) values.  Statistics that
compare two sequences drop the pairs where either value is nan ("nan-safe") and return nan when too
few pairs remain for the statistic to be defined.  Undefined results are nan, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
from scipy import ndimage, sparse, stats
from scipy.sparse.csgraph import maximum_bipartite_matching

from ..errors import InputError
from .metrics import dice

DEFAULT_BOX_IOU_THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
# Columns of a box array: slice index, then the in-plane corners (y0, x0) inclusive and (y1, x1) exclusive.
BOX_COLUMNS = ("slice", "y0", "x0", "y1", "x1")

ArrayLike = Union[np.ndarray, Sequence[float]]


def _paired(pred: ArrayLike, true: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 1D arrays with the pairs holding a nan (in either) removed."""
    pred = np.asarray(pred, dtype=np.float64).ravel()
    true = np.asarray(true, dtype=np.float64).ravel()
    if pred.shape != true.shape:
        raise InputError(f"Predicted and true values must pair up, got {pred.size} and {true.size} values")
    keep = ~(np.isnan(pred) | np.isnan(true))
    return pred[keep], true[keep]


def mae(pred: ArrayLike, true: ArrayLike) -> float:
    """Mean absolute error over the pairs without nan; nan if there are none."""
    pred, true = _paired(pred, true)
    if pred.size == 0:
        return math.nan
    return float(np.mean(np.abs(pred - true)))


def pearson_r(pred: ArrayLike, true: ArrayLike) -> float:
    """Pearson correlation over the pairs without nan; nan with fewer than 2 pairs or a constant side."""
    pred, true = _paired(pred, true)
    if pred.size < 2:
        return math.nan
    dp = pred - pred.mean()
    dt = true - true.mean()
    denominator = math.sqrt(float(np.dot(dp, dp)) * float(np.dot(dt, dt)))
    if denominator == 0.0:
        return math.nan
    # Rounding can push |r| a hair above 1 for perfectly linear data.
    return float(np.clip(np.dot(dp, dt) / denominator, -1.0, 1.0))


def spearman_rho(pred: ArrayLike, true: ArrayLike) -> float:
    """Spearman rank correlation (Pearson r of the ranks, ties given their average rank), nan-safe."""
    pred, true = _paired(pred, true)
    if pred.size < 2:
        return math.nan
    return pearson_r(stats.rankdata(pred), stats.rankdata(true))


def _tie_averaged(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``values`` with each run of equal ``keys`` (keys already sorted) replaced by the run's mean.

    A cumulative sum over such values is the expectation over every way of breaking the ties, so
    orderings that depend on tied scores are scored without an arbitrary tie-break.
    """
    if values.size == 0:
        return values
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    sums = np.add.reduceat(values, starts)
    lengths = np.diff(np.r_[starts, values.size])
    return np.repeat(sums / lengths, lengths)


def _risk_coverage(confidence: ArrayLike, risk: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    confidence, risk = _paired(confidence, risk)
    order = np.argsort(-confidence, kind="stable")
    sorted_risk = _tie_averaged(risk[order], confidence[order])
    k = np.arange(1, risk.size + 1)
    return k / risk.size, np.cumsum(sorted_risk) / k


def risk_coverage_curve(confidence: ArrayLike, risk: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, selective risk): keeping the k most confident cases, coverage k/n and their mean risk."""
    return _risk_coverage(confidence, risk)


def aurc(confidence: ArrayLike, risk: ArrayLike) -> float:
    """Area under the risk-coverage curve (Geifman et al. 2019), lower is better.

    Cases are accepted in order of decreasing confidence (for SegQC: predicted Dice); the selective risk
    at coverage k/n is the mean risk (1 - true Dice) of the k accepted cases, and AURC is the mean of
    the selective risks over k = 1..n.  Tied confidences are scored by the expectation over their
    orderings.  Pairs with a nan are dropped; nan if none remain.
    """
    _, selective_risk = _risk_coverage(confidence, risk)
    if selective_risk.size == 0:
        return math.nan
    return float(np.mean(selective_risk))


def e_aurc(confidence: ArrayLike, risk: ArrayLike) -> float:
    """Excess AURC: AURC minus the AURC of the oracle that accepts cases in order of increasing risk.

    0 for a perfect ranking, positive otherwise; independent of the risk level of the data set.
    """
    confidence, risk = _paired(confidence, risk)
    return aurc(confidence, risk) - aurc(-risk, risk)


def error_map_dice(pred_prob_or_binary: np.ndarray, true_binary: np.ndarray, threshold: float = 0.5) -> float:
    """Dice of a predicted error map against the true one (QCResUNet's DSC_SEM).

    A boolean prediction is used as is; a probability map is binarised with ``prob >= threshold``.
    Both empty: 1.0 (as :func:`SegQCLib.quality.metrics.dice`).
    """
    pred = np.asarray(pred_prob_or_binary)
    if pred.dtype != bool:
        pred = pred >= threshold
    return dice(pred, np.asarray(true_binary, dtype=bool))


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the precision-recall curve, as the step sum AP = Σ_k (R_k - R_{k-1}) P_k.

    The thresholds are the distinct scores (descending); at each, everything scoring at least that
    is called positive, so tied scores enter together.  For voxel error maps: scores = error
    probabilities, labels = true error.  nan when there is no positive label.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if scores.shape != labels.shape:
        raise InputError(f"Scores and labels must pair up, got {scores.size} and {labels.size} values")
    n_positive = int(np.count_nonzero(labels))
    if n_positive == 0:
        return math.nan
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    true_positives = np.cumsum(labels[order])
    # Only the last index of each run of equal scores is a threshold.
    last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    tp = true_positives[last_of_run].astype(np.float64)
    called = (np.flatnonzero(last_of_run) + 1).astype(np.float64)
    precision = tp / called
    recall = tp / n_positive
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


# ----------------------------------------------------------------------------------------------------
# Error boxes


def _as_boxes(boxes: ArrayLike) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, 5))
    if boxes.ndim != 2 or boxes.shape[1] != len(BOX_COLUMNS):
        raise InputError(f"Boxes must be an (N, 5) array of {list(BOX_COLUMNS)}, got shape {boxes.shape}")
    if np.any(boxes[:, 3] < boxes[:, 1]) or np.any(boxes[:, 4] < boxes[:, 2]):
        raise InputError("Boxes must have y1 >= y0 and x1 >= x0 (end-exclusive corners)")
    return boxes


def _same_slice_pairs(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (pred index, true index) pairs on the same slice, without forming the full N×M product."""
    true_order = np.argsort(true[:, 0], kind="stable")
    true_slices = true[true_order, 0]
    first = np.searchsorted(true_slices, pred[:, 0], side="left")
    last = np.searchsorted(true_slices, pred[:, 0], side="right")
    counts = last - first
    pred_index = np.repeat(np.arange(pred.shape[0]), counts)
    # Position of each pair within its pred's run of same-slice true boxes.
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    true_index = true_order[np.repeat(first, counts) + offsets]
    return pred_index, true_index


def box_iou_pairs(pred: np.ndarray, true: np.ndarray, pred_index: np.ndarray, true_index: np.ndarray) -> np.ndarray:
    """2D IoU of the given (pred, true) box pairs (end-exclusive corners; area-0 boxes have IoU 0)."""
    p = pred[pred_index]
    t = true[true_index]
    height = np.clip(np.minimum(p[:, 3], t[:, 3]) - np.maximum(p[:, 1], t[:, 1]), 0, None)
    width = np.clip(np.minimum(p[:, 4], t[:, 4]) - np.maximum(p[:, 2], t[:, 2]), 0, None)
    intersection = height * width
    area_p = (p[:, 3] - p[:, 1]) * (p[:, 4] - p[:, 2])
    area_t = (t[:, 3] - t[:, 1]) * (t[:, 4] - t[:, 2])
    union = area_p + area_t - intersection
    out = np.zeros(intersection.shape)
    np.divide(intersection, union, out=out, where=union > 0)
    return out


def _matched_count(pred: np.ndarray, true: np.ndarray, iou_threshold: float) -> int:
    if pred.shape[0] == 0 or true.shape[0] == 0:
        return 0
    pred_index, true_index = _same_slice_pairs(pred, true)
    ious = box_iou_pairs(pred, true, pred_index, true_index)
    hit = ious >= iou_threshold
    if not hit.any():
        return 0
    graph = sparse.csr_matrix(
        (np.ones(int(hit.sum()), dtype=np.int8), (pred_index[hit], true_index[hit])),
        shape=(pred.shape[0], true.shape[0]),
    )
    matching = maximum_bipartite_matching(graph, perm_type="column")
    return int(np.count_nonzero(matching >= 0))


def box_precision_recall(pred_boxes: ArrayLike, true_boxes: ArrayLike, iou_threshold: float) -> tuple[float, float]:
    """Detection precision and recall of predicted error boxes against true error boxes.

    Boxes are (N, 5) arrays [slice, y0, x0, y1, x1] (end exclusive).  A predicted box can match a true
    box on the same slice when their 2D IoU >= ``iou_threshold``; matching is one-to-one and maximal
    (maximum bipartite matching, so the result does not depend on box order or scores).  precision =
    matched / #predicted (nan with no predicted box), recall = matched / #true (nan with no true box).
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise InputError(f"Box IoU threshold must be in (0, 1], got {iou_threshold}")
    pred = _as_boxes(pred_boxes)
    true = _as_boxes(true_boxes)
    matched = _matched_count(pred, true, iou_threshold)
    precision = matched / pred.shape[0] if pred.shape[0] else math.nan
    recall = matched / true.shape[0] if true.shape[0] else math.nan
    return precision, recall


@dataclass
class BoxPRCurve:
    """Box precision and recall at each IoU threshold."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


def box_pr_curve_over_thresholds(
    pred_boxes: ArrayLike, true_boxes: ArrayLike, thresholds: Sequence[float] = DEFAULT_BOX_IOU_THRESHOLDS
) -> BoxPRCurve:
    """:func:`box_precision_recall` at each IoU threshold (SegQC reports 0.05-0.2)."""
    values = [box_precision_recall(pred_boxes, true_boxes, float(t)) for t in thresholds]
    return BoxPRCurve(
        thresholds=np.asarray(thresholds, dtype=np.float64),
        precision=np.array([v[0] for v in values]),
        recall=np.array([v[1] for v in values]),
    )


# ----------------------------------------------------------------------------------------------------
# Localisation as a reviewer meets it: substantive true error regions found, predicted boxes that are right

# A true error region is a 2D component (8-connected) of a class's true error on one slice, of at least
# this area, holding a part that survives an in-plane opening with a square of OPENING_SIZE_PX pixels:
# thin one-pixel boundary bands alone are observer variability, not errors a reviewer must be shown.
REGION_MIN_AREA_MM2 = 10.0
OPENING_SIZE_PX = 3
REGION_IOU = 0.1
REGION_COVERED_FRACTION = 0.5  # predicted boxes together cover at least this share of the surviving part
BOX_TRUE_ERROR_FRACTION = 0.3  # a box at least this full of its class's true error is right


@dataclass(frozen=True)
class LocalisationCounts:
    """Counts of one class (or summed over classes and queries): true regions found / all, boxes right / all."""

    found: int
    regions: int
    right: int
    boxes: int

    def __add__(self, other: LocalisationCounts) -> LocalisationCounts:
        return LocalisationCounts(self.found + other.found, self.regions + other.regions, self.right + other.right,
                                  self.boxes + other.boxes)

    @property
    def recall(self) -> float:
        return self.found / self.regions if self.regions else math.nan

    @property
    def precision(self) -> float:
        return self.right / self.boxes if self.boxes else math.nan


def _flat(slice_axis: int, connectivity: int, size: int = 3) -> np.ndarray:
    structure = np.zeros((size, size, size), dtype=bool)
    index: list = [slice(None)] * 3
    index[slice_axis] = size // 2
    structure[tuple(index)] = (ndimage.generate_binary_structure(2, connectivity) if size == 3 and connectivity < 2
                               else np.ones((size, size), dtype=bool))
    return structure


def _boxes_of(objects: Sequence, slice_axis: int) -> np.ndarray:
    """(N, 5) [slice, a0, b0, a1, b1] rows of find_objects slices (None entries give empty rows of -1)."""
    a, b = [x for x in range(3) if x != slice_axis]
    rows = [[s[slice_axis].start, s[a].start, s[b].start, s[a].stop, s[b].stop] if s is not None else [-1] * 5
            for s in objects]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def _box_pixel_sums(volume: np.ndarray, boxes: np.ndarray, slice_axis: int) -> np.ndarray:
    """Sum of ``volume`` inside each (slice, a0, b0, a1, b1) box, from one in-plane summed-area table."""
    moved = np.moveaxis(volume.astype(np.int64), slice_axis, 0)
    table = np.zeros((moved.shape[0], moved.shape[1] + 1, moved.shape[2] + 1), dtype=np.int64)
    table[:, 1:, 1:] = moved.cumsum(1).cumsum(2)
    s, a0, b0, a1, b1 = (boxes[:, i].astype(np.int64) for i in range(5))
    return table[s, a1, b1] - table[s, a0, b1] - table[s, a1, b0] + table[s, a0, b0]


def localisation_counts(pred_boxes: ArrayLike, true_error: np.ndarray, slice_axis: int,
                        spacing_zyx_mm: Sequence[float]) -> LocalisationCounts:
    """Found true error regions and right predicted boxes of one class (the rule of the model-v2 issue).

    ``pred_boxes``: (N, 5) [slice, a0, b0, a1, b1] of the class's predicted boxes (in-plane axes in array
    order, end exclusive); ``true_error``: the class's true error (query XOR truth), a 3D bool array.

    A true region (see :data:`REGION_MIN_AREA_MM2`) is found when a predicted box on its slice has IoU
    >= 0.1 with the region's box or with the box of its surviving part, or when the predicted boxes
    together cover at least half of that part.  A predicted box is right when its IoU with the box of
    some true error component of its class (any size) is >= 0.1, or when at least 30 % of its pixels are
    true error of its class.
    """
    pred = _as_boxes(pred_boxes)
    true_error = np.asarray(true_error, dtype=bool)
    a, b = [x for x in range(3) if x != slice_axis]
    pixel_mm2 = float(spacing_zyx_mm[a]) * float(spacing_zyx_mm[b])
    labels, count = ndimage.label(true_error, structure=_flat(slice_axis, 2))
    components = _boxes_of(ndimage.find_objects(labels), slice_axis)
    core = ndimage.binary_opening(true_error, structure=_flat(slice_axis, 2, OPENING_SIZE_PX))
    area = np.bincount(labels[true_error], minlength=count + 1)[1:] * pixel_mm2
    core_pixels = np.bincount(labels[core], minlength=count + 1)[1:]
    substantive = (area >= REGION_MIN_AREA_MM2) & (core_pixels > 0)
    core_boxes = _boxes_of(ndimage.find_objects(np.where(core, labels, 0), max_label=count), slice_axis)

    found = np.zeros(count, dtype=bool)
    if pred.shape[0] and substantive.any():
        for boxes in (components, core_boxes):
            candidates = np.flatnonzero(substantive)
            pred_index, true_index = _same_slice_pairs(pred, boxes[candidates])
            hits = box_iou_pairs(pred, boxes[candidates], pred_index, true_index) >= REGION_IOU
            found[candidates[true_index[hits]]] = True
        covered = np.zeros(true_error.shape, dtype=bool)
        moved = np.moveaxis(covered, slice_axis, 0)  # a view: painting it paints ``covered``
        for s, a0, b0, a1, b1 in pred.astype(np.int64):  # one rectangle per predicted box
            moved[s, a0:a1, b0:b1] = True
        covered_core = np.bincount(labels[core & covered], minlength=count + 1)[1:]
        found |= substantive & (covered_core >= REGION_COVERED_FRACTION * np.maximum(core_pixels, 1))

    right = np.zeros(pred.shape[0], dtype=bool)
    if pred.shape[0]:
        if count:
            pred_index, true_index = _same_slice_pairs(pred, components)
            hits = box_iou_pairs(pred, components, pred_index, true_index) >= REGION_IOU
            right[pred_index[hits]] = True
        box_area = (pred[:, 3] - pred[:, 1]) * (pred[:, 4] - pred[:, 2])
        error_inside = _box_pixel_sums(true_error, pred, slice_axis)
        right |= error_inside >= BOX_TRUE_ERROR_FRACTION * np.maximum(box_area, 1)
    return LocalisationCounts(int(found.sum()), int(substantive.sum()), int(right.sum()), int(pred.shape[0]))


# ----------------------------------------------------------------------------------------------------
# Correction curves


def correction_curve(slice_scores: ArrayLike, true_error_per_slice: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of the true error fixed vs fraction of slices corrected, in order of descending score.

    Returns (fraction_slices, fraction_error_fixed), both of length n+1 starting at (0, 0).  Slices with
    tied scores are scored by the expectation over their orderings.  All-zero true error: the fixed
    fraction is undefined and returned as nan.
    """
    scores = np.asarray(slice_scores, dtype=np.float64).ravel()
    error = np.asarray(true_error_per_slice, dtype=np.float64).ravel()
    if scores.shape != error.shape:
        raise InputError(f"Scores and errors must pair up, got {scores.size} and {error.size} slices")
    if not (np.all(np.isfinite(scores)) and np.all(np.isfinite(error))) or np.any(error < 0):
        raise InputError("Correction curves need finite scores and finite non-negative errors")
    order = np.argsort(-scores, kind="stable")
    fixed = np.r_[0.0, np.cumsum(_tie_averaged(error[order], scores[order]))]
    total = float(error.sum())
    fraction_slices = np.arange(error.size + 1) / max(error.size, 1)
    if total == 0.0:
        return fraction_slices, np.full(error.size + 1, np.nan)
    return fraction_slices, fixed / total


def _area(fraction_slices: np.ndarray, fraction_fixed: np.ndarray) -> float:
    widths = np.diff(fraction_slices)
    return float(np.sum(widths * (fraction_fixed[1:] + fraction_fixed[:-1]) / 2.0))


def correction_curve_area(slice_scores: ArrayLike, true_error_per_slice: ArrayLike) -> float:
    """Normalised area under the correction curve: (A - A_random) / (A_oracle - A_random).

    A is the trapezoid area of :func:`correction_curve`; the random order's expected curve is the
    diagonal (A_random = 1/2); the oracle corrects slices by decreasing true error.  1 = oracle, 0 =
    random on average, negative = worse than random.  nan when undefined: no error at all, or all
    slices with the same error (then every order is the oracle).
    """
    x, y = correction_curve(slice_scores, true_error_per_slice)
    if np.isnan(y).any():
        return math.nan
    error = np.asarray(true_error_per_slice, dtype=np.float64).ravel()
    random_area = 0.5
    oracle_area = _area(*correction_curve(error, error))
    if oracle_area - random_area <= 1e-12:
        return math.nan
    return (_area(x, y) - random_area) / (oracle_area - random_area)


def fraction_fixed_at(slice_scores: ArrayLike, true_error: ArrayLike, fraction: float) -> float:
    """Fraction of the true error fixed after correcting ``fraction`` of the slices (e.g. 0.1, 0.2).

    Read off :func:`correction_curve` with linear interpolation between whole slices (the expected
    value when the last slice is corrected with that probability); nan for all-zero error.
    """
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"Fraction of slices must be in [0, 1], got {fraction}")
    x, y = correction_curve(slice_scores, true_error)
    return float(np.interp(fraction, x, y))


# ----------------------------------------------------------------------------------------------------
# Bootstrap


def bootstrap_ci(
    values_or_pairs: Union[ArrayLike, Sequence[ArrayLike]],
    statistic: Callable[..., float],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Percentile bootstrap over cases: (statistic on all cases, lower, upper) at level 1 - alpha.

    ``values_or_pairs`` is one per-case array (``statistic(values)``, e.g. ``np.mean``) or a tuple of
    equally long per-case arrays resampled together (``statistic(pred, true)``, e.g. :func:`mae`,
    :func:`pearson_r`).  Resamples whose statistic is nan are ignored by the percentiles.
    """
    if isinstance(values_or_pairs, tuple):
        columns = [np.asarray(v, dtype=np.float64).ravel() for v in values_or_pairs]
    else:
        columns = [np.asarray(values_or_pairs, dtype=np.float64).ravel()]
    n = columns[0].size
    if any(c.size != n for c in columns):
        raise InputError("All per-case arrays given to bootstrap_ci must have the same length")
    if n == 0 or n_resamples < 1 or not 0.0 < alpha < 1.0:
        raise InputError("bootstrap_ci needs at least one case, n_resamples >= 1 and 0 < alpha < 1")
    estimate = float(statistic(*columns))
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n, size=(n_resamples, n))
    # One statistic call per resample: the statistic is an arbitrary callable over cases.
    replicates = np.array([float(statistic(*(c[idx] for c in columns))) for idx in indices])
    if np.all(np.isnan(replicates)):
        return estimate, math.nan, math.nan
    low, high = np.nanpercentile(replicates, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return estimate, float(low), float(high)
