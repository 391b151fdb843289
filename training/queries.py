"""Query segmentations of every quality level made from a ground truth, and their QC targets.

A *query* is a segmentation the QC network has to judge.  Perturbation queries are made from the truth:

* SegGen (QCResUNet §2.2, Table 2): rotation ±15°, scaling 0.85-1.25, translation and elastic deformation,
  each applied with probability 0.5 (at least one), with translation/displacement ranges scaled to the
  structure size (Table 2's ±20 voxels are for 240-voxel BraTS volumes);
* boundary erosion/dilation, missing parts, false-positive blobs, label swaps between classes, slice
  drop-outs, in-plane shifts of slabs of slices and coarse resampling;
* *local* defects, what reviewers mostly meet in good segmentations: a boundary pushed out or in by 1-2
  voxels over one patch of the surface only, a small missed part, a small extra blob;
* the ground truth itself (a perfect query: Dice 1, empty error map);
* families held out of training entirely, to measure generalisation to defects the network never saw
  (:data:`HELD_OUT_FAMILIES`): slice shifts, coarse (blocky) resampling and over-smoothed contours
  (:func:`smoothed`, made by another kind of generator: blurring and re-thresholding the class masks).

Model-made queries (segmenters sampled along training, TTA) come from :mod:`training.segmenter`.

A *mix* says how often each defect is drawn and how many are composed into one query; validation uses a
different mix (more compositions, other weights) than training, and a different seed.

Targets follow QCResUNet: per-class error maps E_c = (Q == c) xor (T == c), the multi-class case Dice and
the mean class NSD, computed by :mod:`SegQCLib.quality.metrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from scipy import ndimage

from SegQCLib.quality.metrics import case_metrics, error_maps

logger = logging.getLogger(__name__)

# SegGen, Table 2 of QCResUNet, rescaled where it is in voxels.
SEGGEN_PROBABILITY = 0.5
SEGGEN_ROTATION_DEG = 15.0
SEGGEN_SCALE_RANGE = (0.85, 1.25)
# Table 2 moves ±20 voxels on 240-voxel volumes (~8 %); the hippocampus is ~40 voxels long, so ±5
# (a little more than 8 %, so the strongest queries reach the lowest Dice bins).
SEGGEN_TRANSLATION_VOXELS = 5.0
# Elastic displacement amplitude (voxels) on a coarse control grid, smoothly interpolated.
SEGGEN_ELASTIC_VOXELS = 3.0
ELASTIC_CONTROL_SPACING_VOXELS = 8

MAX_BOUNDARY_ITERATIONS = 2
PART_RADIUS_VOXELS = (2.0, 8.0)
BLOB_RADIUS_VOXELS = (1.5, 6.0)
# A false-positive blob lands within this distance of the structure (voxels): errors near the organ are
# the realistic ones; far-away blobs are trivially detectable.
BLOB_MAX_DISTANCE_VOXELS = 10.0
MAX_DROPPED_SLICES = 6
MAX_SHIFT_VOXELS = 4
COARSE_FACTORS = (2, 3, 4)
LOCAL_RADIUS_VOXELS = (3.0, 9.0)
MAX_LOCAL_BOUNDARY_ITERATIONS = 2
SMOOTH_SIGMA_VOXELS = (1.0, 2.5)
SMOOTH_THRESHOLD_RANGE = (0.3, 0.7)

DEFAULT_NSD_TOLERANCE_MM = 1.0


class Defect(str, Enum):
    IDENTITY = "identity"
    SEGGEN = "seggen"
    BOUNDARY = "boundary"
    MISSING_PART = "missing_part"
    FALSE_POSITIVE = "false_positive"
    LABEL_SWAP = "label_swap"
    SLICE_DROPOUT = "slice_dropout"
    SLICE_SHIFT = "slice_shift"
    COARSE = "coarse_resample"
    LOCAL_BOUNDARY = "local_boundary"
    SMOOTHED = "smoothed"
    MODEL = "model"
    MODEL_TTA = "model_tta"


PERTURBATIONS = (
    Defect.SEGGEN, Defect.BOUNDARY, Defect.MISSING_PART, Defect.FALSE_POSITIVE, Defect.LABEL_SWAP,
    Defect.SLICE_DROPOUT, Defect.SLICE_SHIFT, Defect.COARSE, Defect.LOCAL_BOUNDARY, Defect.SMOOTHED,
)
# Never in a training query: the validation's measure of generalisation to unseen defect families.
HELD_OUT_FAMILIES = frozenset({Defect.SLICE_SHIFT, Defect.COARSE, Defect.SMOOTHED})


@dataclass(frozen=True)
class QueryMix:
    """How perturbation queries are drawn: defect weights, how many are composed, the identity share."""

    weights: dict[Defect, float]
    max_composed: int = 2
    composed_probability: float = 0.35
    identity_fraction: float = 0.05
    # severity = u ** exponent, u uniform: 1 spreads severities evenly, larger values favour small defects.
    severity_exponent: float = 1.0

    def __post_init__(self) -> None:
        if not self.weights or min(self.weights.values()) < 0 or sum(self.weights.values()) <= 0:
            raise ValueError("QueryMix needs non-negative defect weights with a positive sum")
        unknown = set(self.weights) - set(PERTURBATIONS)
        if unknown:
            raise ValueError(f"QueryMix weights name non-perturbation defects: {sorted(d.value for d in unknown)}")


# Broad defects of every severity, without the held-out families.
TRAIN_MIX = QueryMix(
    weights={
        Defect.SEGGEN: 3.0, Defect.BOUNDARY: 1.5, Defect.MISSING_PART: 1.0, Defect.FALSE_POSITIVE: 1.0,
        Defect.LABEL_SWAP: 0.7, Defect.SLICE_DROPOUT: 0.7, Defect.LOCAL_BOUNDARY: 1.0,
    },
    identity_fraction=0.0,
)
# What reviewers mostly check: good segmentations with one or two local errors (true Dice about 0.85-1).
LOCAL_MIX = QueryMix(
    weights={
        Defect.LOCAL_BOUNDARY: 3.0, Defect.MISSING_PART: 1.5, Defect.FALSE_POSITIVE: 1.5, Defect.LABEL_SWAP: 1.0,
        Defect.SLICE_DROPOUT: 0.5, Defect.BOUNDARY: 0.5, Defect.SEGGEN: 0.5,
    },
    composed_probability=0.3,
    identity_fraction=0.0,
    severity_exponent=2.5,
)
# Held out: other proportions, mostly compositions of two or three defects, so validation queries are
# combinations the network never saw in these proportions.
VALIDATION_MIX = QueryMix(
    weights={
        Defect.SEGGEN: 1.0, Defect.BOUNDARY: 1.0, Defect.MISSING_PART: 1.5, Defect.FALSE_POSITIVE: 1.5,
        Defect.LABEL_SWAP: 1.0, Defect.SLICE_DROPOUT: 1.0, Defect.SLICE_SHIFT: 1.5, Defect.COARSE: 1.0,
    },
    max_composed=3,
    composed_probability=0.7,
    identity_fraction=0.05,
)
# Only the families the training never saw, alone: the unseen-family evaluation.
HELD_OUT_MIX = QueryMix(
    weights={Defect.SLICE_SHIFT: 1.0, Defect.COARSE: 1.0, Defect.SMOOTHED: 1.0},
    composed_probability=0.0,
    identity_fraction=0.0,
)


@dataclass
class Query:
    """A query label map and how it was made."""

    mask: np.ndarray
    defects: tuple[Defect, ...]
    source: str = ""


@dataclass
class QueryTargets:
    """What the QC network must predict for a query: per-class error maps, case Dice and NSD, class Dice."""

    error_maps: np.ndarray  # (C, Z, Y, X) bool, class order = labels
    dice: float
    nsd: float
    class_dice: np.ndarray = field(default_factory=lambda: np.zeros(0))


def compute_targets(
    query: np.ndarray,
    truth: np.ndarray,
    labels: Sequence[int],
    spacing_zyx_mm: Sequence[float] = (1.0, 1.0, 1.0),
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> QueryTargets:
    maps = error_maps(query, truth, labels)
    metrics = case_metrics(query, truth, labels, spacing_zyx_mm, nsd_tolerance_mm)
    return QueryTargets(
        error_maps=np.stack([maps[int(c)] for c in labels]),
        dice=float(metrics.dice),
        nsd=float(metrics.nsd),
        class_dice=np.array([c.dice for c in metrics.classes], dtype=np.float32),
    )


# ----------------------------------------------------------------------------------------------------
# Individual defects.  Each takes the current query label map and returns a new one; ``severity`` in
# [0, 1] scales the magnitude so the queries cover every Dice bin.


def _centre(mask: np.ndarray) -> np.ndarray:
    coords = np.argwhere(mask > 0)
    if len(coords) == 0:
        return (np.array(mask.shape, dtype=float) - 1) / 2
    return coords.mean(axis=0)


def _rotation_matrix(angles_rad: np.ndarray) -> np.ndarray:
    cz, cy, cx = np.cos(angles_rad)
    sz, sy, sx = np.sin(angles_rad)
    rot_z = np.array([[1, 0, 0], [0, cz, -sz], [0, sz, cz]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_x = np.array([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


def elastic_displacement(shape: Sequence[int], amplitude_voxels: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random displacement field (3, Z, Y, X): uniform control points upsampled cubically."""
    control = [max(2, int(np.ceil(s / ELASTIC_CONTROL_SPACING_VOXELS)) + 1) for s in shape]
    coarse = rng.uniform(-amplitude_voxels, amplitude_voxels, size=(3, *control))
    factors = [s / c for s, c in zip(shape, control)]
    field_ = np.stack([ndimage.zoom(c, factors, order=3, mode="nearest", grid_mode=True) for c in coarse])
    return field_[:, : shape[0], : shape[1], : shape[2]]


def warp(array: np.ndarray, matrix: np.ndarray, centre: np.ndarray, shift: np.ndarray,
         displacement: np.ndarray | None, order: int) -> np.ndarray:
    """Resample ``array`` at ``matrix @ (x - centre) + centre + shift + displacement(x)`` (pull-back)."""
    grid = np.indices(array.shape, dtype=np.float32).reshape(3, -1)
    coords = (matrix @ (grid - centre[:, None])) + centre[:, None] + shift[:, None]
    if displacement is not None:
        coords = coords + displacement.reshape(3, -1)
    out = ndimage.map_coordinates(array, coords, order=order, mode="constant", cval=0.0, prefilter=order > 1)
    return out.reshape(array.shape).astype(array.dtype, copy=False)


def seggen(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator, severity: float) -> np.ndarray:
    """QCResUNet's SegGen: rotation, scaling, translation, elastic deformation, each with probability 0.5."""
    applied = rng.random(4) < SEGGEN_PROBABILITY
    if not applied.any():
        applied[rng.integers(4)] = True
    strength = 0.25 + 0.75 * severity
    matrix = np.eye(3)
    if applied[0]:
        matrix = _rotation_matrix(np.deg2rad(rng.uniform(-1, 1, 3) * SEGGEN_ROTATION_DEG * strength))
    if applied[1]:
        low, high = SEGGEN_SCALE_RANGE
        scale = float(np.exp(rng.uniform(np.log(1 + (low - 1) * strength), np.log(1 + (high - 1) * strength))))
        matrix = matrix / scale  # pull-back: sampling coordinates shrink when the mask grows
    shift = rng.uniform(-1, 1, 3) * SEGGEN_TRANSLATION_VOXELS * strength if applied[2] else np.zeros(3)
    displacement = None
    if applied[3]:
        displacement = elastic_displacement(mask.shape, SEGGEN_ELASTIC_VOXELS * strength, rng)
    return warp(mask, matrix, _centre(mask), shift, displacement, order=0)


def boundary(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator, severity: float) -> np.ndarray:
    """Erode or dilate one or every class by 1-2 voxels (dilation only into background)."""
    out = mask.copy()
    chosen = [c for c in labels if rng.random() < 0.6] or [int(rng.choice(labels))]
    iterations = 1 + int(severity * MAX_BOUNDARY_ITERATIONS * rng.random())
    for label in chosen:
        region = mask == label
        if rng.random() < 0.5:
            out[region & ~ndimage.binary_erosion(region, iterations=iterations)] = 0
        else:
            grown = ndimage.binary_dilation(region, iterations=iterations)
            out[grown & (mask == 0)] = label
    return out


def _ball(shape: Sequence[int], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    distance = ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
    return distance + ((x - centre[2]) / radii[2]) ** 2 <= 1


def missing_part(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator, severity: float) -> np.ndarray:
    """Remove an ellipsoidal part of one class (under-segmentation: a missed region)."""
    label = int(rng.choice(labels))
    coords = np.argwhere(mask == label)
    if len(coords) == 0:
        return mask.copy()
    low, high = PART_RADIUS_VOXELS
    radii = rng.uniform(low, low + (high - low) * (0.3 + 0.7 * severity), 3)
    out = mask.copy()
    out[_ball(mask.shape, coords[rng.integers(len(coords))], radii) & (mask == label)] = 0
    return out


def false_positive(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator, severity: float) -> np.ndarray:
    """Add an ellipsoidal blob of one class near the structure (over-segmentation / spurious component)."""
    label = int(rng.choice(labels))
    fg = mask > 0
    distance = ndimage.distance_transform_edt(~fg) if fg.any() else np.zeros(mask.shape)
    candidates = np.argwhere(~fg & (distance <= BLOB_MAX_DISTANCE_VOXELS))
    if len(candidates) == 0:
        candidates = np.argwhere(np.ones(mask.shape, dtype=bool))
    low, high = BLOB_RADIUS_VOXELS
    radii = rng.uniform(low, low + (high - low) * (0.3 + 0.7 * severity), 3)
    blob = _ball(mask.shape, candidates[rng.integers(len(candidates))], radii)
    out = mask.copy()
    out[blob & (mask == 0)] = label
    return out


def label_swap(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator, severity: float) -> np.ndarray:
    """Give part of one class (or all of it) another class's label; needs two or more classes."""
    if len(labels) < 2:
        return missing_part(mask, labels, rng, severity)
    source, target = rng.choice(labels, size=2, replace=False)
    region = mask == source
    if rng.random() < 0.3 * severity:
        swap = region
    else:
        coords = np.argwhere(region)
        if len(coords) == 0:
            return mask.copy()
        radius = PART_RADIUS_VOXELS[0] + (PART_RADIUS_VOXELS[1] - PART_RADIUS_VOXELS[0]) * severity
        swap = region & _ball(mask.shape, coords[rng.integers(len(coords))], np.full(3, max(radius, 2.0)))
    out = mask.copy()
    out[swap] = target
    return out


def _foreground_slices(mask: np.ndarray, axis: int) -> np.ndarray:
    other = tuple(a for a in range(3) if a != axis)
    return np.flatnonzero(np.any(mask > 0, axis=other))


def slice_dropout(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator, severity: float) -> np.ndarray:
    """Erase the labels on a few slices that contain the structure (missed slices in slice-wise work)."""
    axis = int(rng.integers(3))
    occupied = _foreground_slices(mask, axis)
    if len(occupied) == 0:
        return mask.copy()
    count = min(len(occupied), 1 + int(severity * MAX_DROPPED_SLICES * rng.random()))
    dropped = rng.choice(occupied, size=count, replace=False)
    out = mask.copy()
    index = [slice(None)] * 3
    index[axis] = dropped
    out[tuple(index)] = 0
    return out


def slice_shift(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator, severity: float) -> np.ndarray:
    """Shift a slab of consecutive slices in-plane (inter-slice misregistration / motion)."""
    axis = int(rng.integers(3))
    occupied = _foreground_slices(mask, axis)
    if len(occupied) == 0:
        return mask.copy()
    start = int(rng.integers(occupied[0], occupied[-1] + 1))
    stop = min(mask.shape[axis], start + 1 + int(rng.integers(1, max(2, len(occupied) // 2 + 1))))
    shift = np.zeros(3, dtype=int)
    in_plane = [a for a in range(3) if a != axis]
    magnitude = max(1, int(round(1 + severity * (MAX_SHIFT_VOXELS - 1) * rng.random())))
    shift[in_plane] = rng.choice([-1, 0, 1], size=2) * magnitude
    if not shift.any():
        shift[in_plane[0]] = magnitude
    index = [slice(None)] * 3
    index[axis] = slice(start, stop)
    out = mask.copy()
    out[tuple(index)] = ndimage.shift(mask[tuple(index)], shift, order=0, mode="constant", cval=0)
    return out


def coarse_resample(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator, severity: float) -> np.ndarray:
    """Downsample by 2-4 along one or more axes and back with nearest neighbour (blocky, thick slices)."""
    factors = np.ones(3, dtype=int)
    axes = [a for a in range(3) if rng.random() < 0.5] or [int(rng.integers(3))]
    top = 1 + int(round(severity * (len(COARSE_FACTORS) - 1)))
    for a in axes:
        factors[a] = int(rng.choice(COARSE_FACTORS[:top]))
    offset = [int(rng.integers(f)) for f in factors]
    small = mask[offset[0]::factors[0], offset[1]::factors[1], offset[2]::factors[2]]
    big = np.repeat(np.repeat(np.repeat(small, factors[0], 0), factors[1], 1), factors[2], 2)
    out = np.zeros_like(mask)
    pad = [(o, max(0, s - o - b)) for o, s, b in zip(offset, mask.shape, big.shape)]
    big = np.pad(big, pad)[: mask.shape[0], : mask.shape[1], : mask.shape[2]]
    out[: big.shape[0], : big.shape[1], : big.shape[2]] = big
    return out


def _surface_voxel(region: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    surface = region & ~ndimage.binary_erosion(region)
    coords = np.argwhere(surface)
    return coords[rng.integers(len(coords))] if len(coords) else None


def local_boundary(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator, severity: float
                   ) -> np.ndarray:
    """Push one class's boundary out (into background) or in by 1-2 voxels over one patch of its surface."""
    label = int(rng.choice(labels))
    region = mask == label
    centre = _surface_voxel(region, rng)
    if centre is None:
        return mask.copy()
    low, high = LOCAL_RADIUS_VOXELS
    radius = low + (high - low) * severity * rng.random() + rng.random()
    patch = _ball(mask.shape, centre, np.full(3, radius))
    iterations = 1 + int(rng.random() < severity * MAX_LOCAL_BOUNDARY_ITERATIONS / 2)
    out = mask.copy()
    if rng.random() < 0.5:
        out[patch & region & ~ndimage.binary_erosion(region, iterations=iterations)] = 0
    else:
        grown = ndimage.binary_dilation(region, iterations=iterations)
        out[patch & grown & (mask == 0)] = label
    return out


def smoothed(mask: np.ndarray, labels: Sequence[int], rng: np.random.Generator, severity: float) -> np.ndarray:
    """Blur every class's mask with a Gaussian and re-threshold (an over-smoothed, biased contour).

    A different generator from the morphological ones: thin parts vanish, concavities fill, and a
    threshold off 0.5 grows or shrinks the whole structure smoothly.
    """
    low, high = SMOOTH_SIGMA_VOXELS
    sigma = low + (high - low) * severity * rng.random()
    threshold = rng.uniform(*SMOOTH_THRESHOLD_RANGE)
    blurred = np.stack([ndimage.gaussian_filter((mask == c).astype(np.float32), sigma) for c in labels])
    winner = np.argmax(blurred, axis=0)
    foreground = blurred.sum(axis=0) >= threshold
    out = np.zeros_like(mask)
    out[foreground] = np.asarray(labels, dtype=mask.dtype)[winner[foreground]]
    return out


DEFECT_FUNCTIONS = {
    Defect.SEGGEN: seggen,
    Defect.BOUNDARY: boundary,
    Defect.MISSING_PART: missing_part,
    Defect.FALSE_POSITIVE: false_positive,
    Defect.LABEL_SWAP: label_swap,
    Defect.SLICE_DROPOUT: slice_dropout,
    Defect.SLICE_SHIFT: slice_shift,
    Defect.COARSE: coarse_resample,
    Defect.LOCAL_BOUNDARY: local_boundary,
    Defect.SMOOTHED: smoothed,
}


def apply_defect(mask: np.ndarray, defect: Defect, labels: Sequence[int], rng: np.random.Generator,
                 severity: float) -> np.ndarray:
    if defect == Defect.IDENTITY:
        return mask.copy()
    return DEFECT_FUNCTIONS[defect](mask, labels, rng, float(np.clip(severity, 0.0, 1.0)))


def perturbation_queries(truth: np.ndarray, labels: Sequence[int], count: int, rng: np.random.Generator,
                         mix: QueryMix = TRAIN_MIX) -> list[Query]:
    """``count`` perturbation queries of ``truth``: the identity share first, then drawn defects."""
    defects = list(mix.weights)
    probabilities = np.array([mix.weights[d] for d in defects], dtype=float)
    probabilities /= probabilities.sum()
    # At least one perfect query per case when the mix asks for any: Dice 1 and an empty map must be learnt.
    n_identity = max(1, int(round(mix.identity_fraction * count))) if mix.identity_fraction > 0 else 0
    queries = [Query(truth.copy(), (Defect.IDENTITY,), "truth") for _ in range(min(n_identity, count))]
    while len(queries) < count:
        n = 1
        if mix.max_composed > 1 and rng.random() < mix.composed_probability:
            n = int(rng.integers(2, mix.max_composed + 1))
        chosen = tuple(defects[i] for i in rng.choice(len(defects), size=n, p=probabilities))
        severity = float(rng.random()) ** mix.severity_exponent
        mask = truth
        for defect in chosen:
            mask = apply_defect(mask, defect, labels, rng, severity)
        queries.append(Query(mask.astype(truth.dtype, copy=False), chosen, "perturbation"))
    return queries
