"""Suggested corrections: the suggested segmentation of a case and one suggested edit per error box.

:func:`suggest` runs after :func:`SegQCLib.quality.postprocess.build_report` on the same segmentation and Ê:

1. the suggested segmentation (:mod:`.suggested_labels`): per voxel the label with the highest estimated-truth
   probability;
2. the edits (:mod:`.edit_regions`): per error box, the connected region of its class's suggested changes that
   the box frames, followed in 3D;
3. their sizes and expected gains (:mod:`.edit_gains`), and which are *offered*: those whose expected gain is
   at least the threshold (:mod:`.suggestion_settings`; calibrated per model so that an offered edit does not
   make the segmentation worse on average).

It fills the report's box fields (``edit_id``, ``edit_voxels``, ``edit_volume_mm3``, ``edit_gain_dice_est``,
``edit_offered``) and ``report.suggestion``, and returns a :class:`Suggestion`: the arrays, with the methods a
front end needs to preview, accept and undo an edit (:mod:`.edit_actions`).  Files: :mod:`.suggestion_files`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import InputError
from ..geometry import Geometry
from ..io.volumes import LabelMap
from .edit_actions import AppliedEdit, EditPreview, apply_edit_mask, apply_edits, edit_mask, preview_edit, undo_edit
from .edit_gains import ClassTotals, EditStatistics, dice_from_sums, edit_statistics
from .edit_regions import EditRegions, find_edit_regions
from .estimates import EMPTY_SUM_VOXELS, estimated_truth
from .postprocess import validate_error_prob
from .regions import RegionParams
from .report import Report, SuggestedEdit, SuggestionSummary
from .suggested_labels import suggested_labels
from .suggestion_settings import SuggestionParams

logger = logging.getLogger(__name__)

SUGGESTED_SEGMENTATION_FILE = "suggested_segmentation.nii.gz"
SUGGESTED_EDITS_PATTERN = "suggested_edits_{label}.nii.gz"


@dataclass
class Suggestion:
    """The suggested segmentation of a case (same grid and dtype as the query) and its edits.

    ``edit_maps[label]`` holds the ids of the edits of class ``label`` (0 elsewhere); ``summary.edits`` describes
    them (``summary.edits[k - 1].id == k``).  The methods work on any label map of the case's grid, e.g. the one
    the reviewer is editing.
    """

    segmentation: np.ndarray
    edit_maps: dict[int, np.ndarray]
    summary: SuggestionSummary
    geometry: Geometry

    @property
    def edits(self) -> list[SuggestedEdit]:
        return self.summary.edits

    @property
    def offered(self) -> list[SuggestedEdit]:
        return [edit for edit in self.summary.edits if edit.offered]

    def edit(self, edit_id: int) -> SuggestedEdit:
        if not 1 <= int(edit_id) <= len(self.summary.edits):
            raise InputError(f"No suggested edit {edit_id} (this case has {len(self.summary.edits)})")
        return self.summary.edits[int(edit_id) - 1]

    def mask(self, edit_id: int) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """The edit's voxels: (its 3D box as slices, boolean mask of the box's size)."""
        edit = self.edit(edit_id)
        return edit_mask(self.edit_maps[edit.label], edit)

    def full_mask(self, edit_id: int) -> np.ndarray:
        """The edit's voxels as a boolean array of the whole grid."""
        crop, mask = self.mask(edit_id)
        full = np.zeros(self.segmentation.shape, dtype=bool)
        full[crop] = mask
        return full

    def preview(self, labels: np.ndarray, edit_id: int) -> EditPreview:
        """Voxels that accepting the edit would add to / remove from its class in ``labels`` now."""
        crop, mask = self.mask(edit_id)
        return preview_edit(self._checked(labels), self.segmentation, crop, mask, self.edit(edit_id))

    def accept(self, labels: np.ndarray, edit_id: int) -> AppliedEdit:
        """Write the suggested labels into the edit's voxels of ``labels`` (in place); keep the result to undo."""
        crop, mask = self.mask(edit_id)
        return apply_edit_mask(self._checked(labels), self.segmentation, crop, mask, int(edit_id))

    @staticmethod
    def undo(labels: np.ndarray, applied: AppliedEdit) -> int:
        """Undo an accept where the voxels still hold what it wrote; returns the number of voxels restored."""
        return undo_edit(labels, applied)

    def accept_all(self, query: np.ndarray, edit_ids: Optional[Iterable[int]] = None) -> np.ndarray:
        """A copy of ``query`` with the given edits (default: every offered one) accepted."""
        chosen = self.offered if edit_ids is None else [self.edit(i) for i in edit_ids]
        return apply_edits(self._checked(query), self.segmentation, self.edit_maps, chosen)

    def _checked(self, labels: np.ndarray) -> np.ndarray:
        if tuple(labels.shape) != tuple(self.segmentation.shape):
            raise InputError(f"Label map of shape {labels.shape} is not on the suggestion's grid "
                             f"{self.segmentation.shape}")
        return labels


def _dice_after(query: np.ndarray, edited: np.ndarray, error_prob: Mapping[int, np.ndarray],
                totals: Mapping[int, ClassTotals]) -> tuple[dict[str, float], Optional[float]]:
    """Estimated Dice per class and pooled over classes of ``edited`` (T̂ unchanged; sums updated where it differs)."""
    per_class: dict[str, float] = {}
    numerator = denominator = 0.0
    changed = query != edited
    for label, total in totals.items():
        intersection, mask_voxels = total.intersection, total.mask_voxels
        if changed.any():
            before, after = (query[changed] == label), (edited[changed] == label)
            truth = estimated_truth(before, error_prob[label][changed]).astype(np.float64)
            delta = after.astype(np.float64) - before
            intersection += float(np.dot(delta, truth))
            mask_voxels += float(delta.sum())
        per_class[str(label)] = float(dice_from_sums(intersection, mask_voxels, total.truth_voxels))
        numerator += 2.0 * intersection
        denominator += mask_voxels + total.truth_voxels
    case = 1.0 if denominator <= EMPTY_SUM_VOXELS else numerator / denominator
    return per_class, case


def _edits(regions: EditRegions, stats: EditStatistics, report: Report, voxel_mm3: float,
           params: SuggestionParams) -> list[SuggestedEdit]:
    gains = stats.gain
    offered = (stats.voxels > 0) & (gains >= params.min_gain_dice)
    return [SuggestedEdit(
        id=k + 1, label=int(regions.edit_labels[k]), voxels=int(stats.voxels[k]),
        volume_mm3=float(stats.voxels[k] * voxel_mm3), added_voxels=int(stats.added_voxels[k]),
        removed_voxels=int(stats.removed_voxels[k]),
        bbox_zyx=[stats.bbox_start_zyx[k].tolist(), stats.bbox_stop_zyx[k].tolist()],
        dice_est_before=float(stats.dice_before[k]), dice_est_after=float(stats.dice_after[k]),
        gain_dice_est=float(gains[k]), score=float(report.boxes[int(regions.edit_first_box[k])].score),
        offered=bool(offered[k]),
    ) for k in range(regions.count)]


def suggest(segmentation: LabelMap, error_prob: Mapping[int, np.ndarray], report: Report,
            params: SuggestionParams = SuggestionParams()) -> Suggestion:  # noqa: B008 (frozen, immutable)
    """The suggested segmentation and edits of a case whose ``report`` was built from the same inputs.

    Fills the report's box edit fields and ``report.suggestion`` (file names as :mod:`.suggestion_files` writes
    them).  The boxes' region parameters are read from ``report.parameters["regions"]``.
    """
    started = time.perf_counter()
    error_prob = validate_error_prob(error_prob, segmentation)
    geometry = segmentation.geometry
    region_params = RegionParams(**report.parameters.get("regions", {}))
    query = np.asarray(segmentation.array)
    suggested = suggested_labels(query, error_prob)
    regions = find_edit_regions(query, suggested, error_prob, report.boxes, geometry, report.slice_axis,
                                region_params)
    totals = {label: ClassTotals.of(query == label, prob) for label, prob in error_prob.items()}
    stats = edit_statistics(query, suggested, error_prob, regions, totals)
    voxel_mm3 = geometry.voxel_volume_mm3
    edits = _edits(regions, stats, report, voxel_mm3, params)
    for box, edit_id in zip(report.boxes, regions.box_edit_ids.tolist()):
        edit = edits[edit_id - 1] if edit_id else None
        box.edit_id = edit.id if edit else None
        box.edit_voxels = edit.voxels if edit else 0
        box.edit_volume_mm3 = edit.volume_mm3 if edit else 0.0
        box.edit_gain_dice_est = edit.gain_dice_est if edit else 0.0
        box.edit_offered = edit.offered if edit else False
    offered = [edit for edit in edits if edit.offered]
    after_offered = apply_edits(query, suggested, regions.edit_maps, offered)
    dice_after, case_dice_after = _dice_after(query, after_offered, error_prob, totals)
    report.suggestion = SuggestionSummary(
        segmentation_file=SUGGESTED_SEGMENTATION_FILE,
        edit_files={str(label): SUGGESTED_EDITS_PATTERN.format(label=label) for label in sorted(error_prob)},
        min_gain_dice=float(params.min_gain_dice), min_gain_source=params.min_gain_source,
        changed_voxels=int(np.count_nonzero(query != suggested)), edits=edits,
        dice_est_after_offered=dice_after, case_dice_est_after_offered=case_dice_after,
    )
    report.timing_s["suggestion"] = round(time.perf_counter() - started, 4)
    logger.debug("Suggestion: %d voxels changed, %d edits, %d offered (expected Dice gain >= %.4f, %s)",
                report.suggestion.changed_voxels, len(edits), len(offered), params.min_gain_dice,
                params.min_gain_source)
    return Suggestion(suggested, regions.edit_maps, report.suggestion, geometry)
