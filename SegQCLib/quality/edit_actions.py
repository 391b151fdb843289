"""Applying, undoing and previewing suggested edits on a label map (what a reviewer's accept does).

Applying an edit copies the suggested labels into the edit's voxels; :class:`AppliedEdit` remembers what was
there, so the edit can be undone.  Undo restores only voxels that still hold what the edit wrote: a voxel the
reviewer changed by hand after the accept keeps the hand edit.  Applying is idempotent, and edits commute (two
edits that share voxels, on a label swap between their classes, write the same label there).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .report import SuggestedEdit

Crop = tuple[slice, slice, slice]


@dataclass
class AppliedEdit:
    """What one accept changed: flat voxel indices, the labels before and the labels written."""

    edit_id: int
    indices: np.ndarray
    previous: np.ndarray
    written: np.ndarray

    @property
    def voxels(self) -> int:
        return int(self.indices.size)


@dataclass
class EditPreview:
    """Where an edit would change the box's class in ``labels``, inside the edit's 3D box ``bbox_zyx``.

    ``added`` / ``removed``: boolean arrays of the box's size (voxels joining / leaving class ``label``);
    ``other``: voxels the edit changes between other labels (rare: none in a single-class edit).
    """

    edit_id: int
    label: int
    bbox_zyx: list[list[int]]
    added: np.ndarray
    removed: np.ndarray
    other: np.ndarray

    @property
    def crop(self) -> Crop:
        return _crop_of(self.bbox_zyx)


def _crop_of(bbox_zyx: list[list[int]]) -> Crop:
    start, stop = bbox_zyx
    return slice(start[0], stop[0]), slice(start[1], stop[1]), slice(start[2], stop[2])


def edit_mask(edit_map: np.ndarray, edit: SuggestedEdit) -> tuple[Crop, np.ndarray]:
    """The edit's voxels as (its 3D box, boolean mask of the box's size)."""
    crop = _crop_of(edit.bbox_zyx)
    return crop, edit_map[crop] == edit.id


def apply_edit_mask(labels: np.ndarray, suggested: np.ndarray, crop: Crop, mask: np.ndarray,
                    edit_id: int) -> AppliedEdit:
    """Write the suggested labels into ``labels`` (in place) where ``mask`` is set and they differ."""
    box_labels = labels[crop]
    box_suggested = suggested[crop]
    changing = mask & (box_labels != box_suggested)
    local = np.flatnonzero(changing)
    indices = np.ravel_multi_index(tuple(np.add(np.unravel_index(local, changing.shape),
                                                np.array([s.start for s in crop])[:, None])), labels.shape)
    applied = AppliedEdit(edit_id, indices, box_labels[changing].copy(), box_suggested[changing].copy())
    box_labels[changing] = box_suggested[changing]
    return applied


def undo_edit(labels: np.ndarray, applied: AppliedEdit) -> int:
    """Restore the labels an accept replaced where they still hold what it wrote; returns the voxels restored."""
    flat = labels.reshape(-1)
    unchanged = flat[applied.indices] == applied.written
    flat[applied.indices[unchanged]] = applied.previous[unchanged]
    return int(np.count_nonzero(unchanged))


def preview_edit(labels: np.ndarray, suggested: np.ndarray, crop: Crop, mask: np.ndarray,
                 edit: SuggestedEdit) -> EditPreview:
    """What accepting ``edit`` would change in ``labels`` now (voxels already as suggested are not shown)."""
    box_labels, box_suggested = labels[crop], suggested[crop]
    changing = mask & (box_labels != box_suggested)
    added = changing & (box_suggested == edit.label)
    removed = changing & (box_labels == edit.label)
    return EditPreview(edit.id, edit.label, [list(edit.bbox_zyx[0]), list(edit.bbox_zyx[1])], added, removed,
                       changing & ~added & ~removed)


def apply_edits(query: np.ndarray, suggested: np.ndarray, edit_maps: Mapping[int, np.ndarray],
                edits: Iterable[SuggestedEdit]) -> np.ndarray:
    """A copy of ``query`` with ``edits`` accepted (in any order: the result is the same)."""
    result = np.array(query, copy=True)
    by_label: dict[int, list[int]] = {}
    for edit in edits:
        by_label.setdefault(int(edit.label), []).append(int(edit.id))
    for label, ids in by_label.items():  # one pass per class
        chosen = np.isin(edit_maps[label], ids)
        result[chosen] = suggested[chosen]
    return result
