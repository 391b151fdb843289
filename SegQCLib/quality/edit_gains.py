"""Expected gain of a suggested edit: the estimated Dice of its class after the edit, from Ê, minus before.

The estimated Dice of a mask A of class c against the estimated truth T̂_c is 2ΣA·T̂_c / (ΣA + ΣT̂_c) (SegQC
eqs. 4-5; the same estimate as :mod:`.estimates`, 1 when both are empty).  T̂_c describes the truth, not the
query, so it stays the same when the query is edited: an edit that adds voxels ``add`` to class c and removes
voxels ``rem`` changes ΣM·T̂ by Σ_add T̂ − Σ_rem T̂ and ΣM by |add| − |rem|.  Per edit these are four sums,
taken for all edits of a class at once with ``bincount``.  With Ê equal to the true error T̂ = T and the
expected gain is the true gain.

Adding a voxel raises the estimate when its T̂ exceeds half the current estimated Dice and removing one when
its T̂ is below half of it, so an edit can have a negative expected gain (for instance removals with T̂ just
below 0.5 from a class whose estimated Dice is near 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..arrays import bounding_box
from .edit_regions import EditRegions
from .estimates import EMPTY_SUM_VOXELS, class_sums, estimated_truth


def dice_from_sums(intersection, mask_voxels, truth_voxels):
    """2I / (|A| + |T|), 1 where both are empty (arrays or scalars)."""
    intersection = np.asarray(intersection, dtype=np.float64)
    total = np.asarray(mask_voxels, dtype=np.float64) + np.asarray(truth_voxels, dtype=np.float64)
    empty = total <= EMPTY_SUM_VOXELS
    return np.where(empty, 1.0, 2.0 * intersection / np.where(empty, 1.0, total))


@dataclass
class ClassTotals:
    """Σ M·T̂ (estimated intersection), ΣM and ΣT̂ of one class over the whole volume."""

    intersection: float
    mask_voxels: float
    truth_voxels: float

    @classmethod
    def of(cls, mask: np.ndarray, error_prob: np.ndarray) -> ClassTotals:
        m, s_in, e = class_sums(mask, error_prob).totals()
        return cls(m - s_in, m, m + e - 2.0 * s_in)

    @property
    def dice(self) -> float:
        return float(dice_from_sums(self.intersection, self.mask_voxels, self.truth_voxels))


@dataclass
class EditStatistics:
    """Per edit (index k - 1 for edit id k): sizes, 3D extent and estimated Dice of its class before and after."""

    voxels: np.ndarray
    added_voxels: np.ndarray
    removed_voxels: np.ndarray
    bbox_start_zyx: np.ndarray  # (n, 3)
    bbox_stop_zyx: np.ndarray  # (n, 3), end exclusive
    dice_before: np.ndarray
    dice_after: np.ndarray

    @property
    def gain(self) -> np.ndarray:
        return self.dice_after - self.dice_before


def edit_statistics(query: np.ndarray, suggested: np.ndarray, error_prob: Mapping[int, np.ndarray],
                    regions: EditRegions, totals: Mapping[int, ClassTotals]) -> EditStatistics:
    """Sizes and expected gains of every edit; ``totals`` are the classes' sums for the query."""
    count = regions.count
    sums = {name: np.zeros(count + 1, dtype=np.float64) for name in ("added", "removed", "truth_added",
                                                                      "truth_removed")}
    start = np.zeros((count + 1, 3), dtype=np.int64)
    stop = np.zeros((count + 1, 3), dtype=np.int64)
    for label, edit_map in regions.edit_maps.items():  # one pass per class
        crop = bounding_box(edit_map > 0)
        if crop is None:
            continue
        ids = edit_map[crop].astype(np.int64)
        in_edit = ids > 0
        joins = in_edit & (suggested[crop] == label)
        leaves = in_edit & (query[crop] == label)
        truth = estimated_truth(query[crop] == label, error_prob[label][crop])
        sums["added"] += np.bincount(ids[joins], minlength=count + 1)
        sums["removed"] += np.bincount(ids[leaves], minlength=count + 1)
        sums["truth_added"] += np.bincount(ids[joins], weights=truth[joins], minlength=count + 1)
        sums["truth_removed"] += np.bincount(ids[leaves], weights=truth[leaves], minlength=count + 1)
        offset = np.array([s.start for s in crop])
        for edit_id, found in enumerate(ndimage.find_objects(ids), start=1):  # over edit ids, not voxels
            if found is not None:
                start[edit_id] = [s.start for s in found] + offset
                stop[edit_id] = [s.stop for s in found] + offset
    labels = regions.edit_labels
    intersection = np.array([totals[int(c)].intersection for c in labels], dtype=np.float64)
    mask_voxels = np.array([totals[int(c)].mask_voxels for c in labels], dtype=np.float64)
    truth_voxels = np.array([totals[int(c)].truth_voxels for c in labels], dtype=np.float64)
    added, removed = sums["added"][1:], sums["removed"][1:]
    after = dice_from_sums(intersection + sums["truth_added"][1:] - sums["truth_removed"][1:],
                           mask_voxels + added - removed, truth_voxels)
    return EditStatistics(
        voxels=(added + removed).astype(np.int64), added_voxels=added.astype(np.int64),
        removed_voxels=removed.astype(np.int64), bbox_start_zyx=start[1:], bbox_stop_zyx=stop[1:],
        dice_before=dice_from_sums(intersection, mask_voxels, truth_voxels), dice_after=after)
