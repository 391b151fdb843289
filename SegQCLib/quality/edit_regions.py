"""The suggested edit of each error box: which voxels one accept changes.

Definitions, for a box of class c on slice s (query M, suggested segmentation S, see :mod:`.suggested_labels`):

* the *changes* of class c are the voxels whose membership of c differs between M and S,
  C_c = {v : [S(v) = c] ≠ [M(v) = c]}: voxels to add to c and voxels to remove from it (for the background or,
  on a label swap, another class);
* the *error the box frames* is F_b = X_c ∩ B: the voxels of the box B (its rectangle on slice s) in X_c, the
  class's thresholded error after SegQC's error extraction, i.e. exactly the voxels the box was drawn around
  (:mod:`.regions`, with the report's region parameters);
* the box's *region* is the union of the 3D connected components of C_c (face-connected, so a region joined to
  another only along an edge or at a corner is a separate region) that hold a voxel of F_b.  It follows the
  error across neighbouring slices as far as the suggested changes continue, so one accept fixes one error,
  not one slice of it;
* *edits*: components framed by the same box, or by boxes linked through components they frame in common,
  form one edit.  Every box thus has at most one edit (none when the suggestion does not change class c under
  the error it frames), the boxes on the slices of one 3D error share it, and the edits of one class are
  disjoint.  An edit of class c and one of class c' overlap only on voxels swapped between c and c'; both
  write the same (suggested) label there.

Edits are numbered 1, 2, ... in the order of their best box (the report's boxes are sorted by score), and
stored per class as a label map of edit ids.  All components come from one labelling call over the classes
stacked along a fourth axis that the structuring element does not connect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..arrays import bounding_box
from ..geometry import Geometry
from .regions import RegionParams, extract_errors
from .report import ErrorBox

# Face connectivity (6 neighbours) in 3D, see the module docstring.
EDIT_CONNECTIVITY_3D = 1
NO_EDIT = 0
UINT16_MAX_EDITS = int(np.iinfo(np.uint16).max)


@dataclass
class EditRegions:
    """The edits of one case.

    ``edit_maps[label]``: full-size map of edit ids of that class (0 = no edit).  ``box_edit_ids[i]``: the edit of
    ``boxes[i]`` (0 = none).  ``edit_labels[k - 1]`` and ``edit_first_box[k - 1]``: class and best box of edit k.
    """

    edit_maps: dict[int, np.ndarray]
    box_edit_ids: np.ndarray
    edit_labels: np.ndarray
    edit_first_box: np.ndarray

    @property
    def count(self) -> int:
        return int(self.edit_labels.size)


def edit_map_dtype(edit_count: int) -> type:
    return np.uint16 if edit_count <= UINT16_MAX_EDITS else np.uint32


def framed_errors(error_prob: np.ndarray, geometry: Geometry, slice_axis: int, params: RegionParams) -> np.ndarray:
    """X_c: the thresholded error of one class after error extraction, as the boxes were made from it."""
    binary = np.asarray(error_prob) > params.threshold
    if not params.extract_errors:
        return binary
    spacing = geometry.spacing_zyx_mm
    return extract_errors(binary, slice_axis, spacing, params.band_px(spacing, slice_axis),
                          float(params.min_component_area_mm2))


def _structure_4d() -> np.ndarray:
    """Connects voxels within one class (the middle index of axis 0) only."""
    structure = np.zeros((3, 3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(3, EDIT_CONNECTIVITY_3D)
    return structure


def _box_component_pairs(boxes: Sequence[ErrorBox], class_index: Mapping[int, int], components: np.ndarray,
                         framed: np.ndarray, crop: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(box index, component label) for every component holding a framed error voxel of the box (loop over boxes)."""
    offset = np.array([s.start for s in crop])
    stop = np.array([s.stop for s in crop])
    box_indices, labels = [], []
    for index, box in enumerate(boxes):
        ci = class_index.get(box.label)
        if ci is None:
            continue
        low = np.maximum(np.asarray(box.bbox_zyx[0]), offset) - offset
        high = np.minimum(np.asarray(box.bbox_zyx[1]), stop) - offset
        if np.any(high <= low):
            continue
        window = (ci, *(slice(int(a), int(b)) for a, b in zip(low, high)))
        found = np.unique(components[window][framed[window]])
        found = found[found > 0]
        box_indices.append(np.full(found.size, index, dtype=np.int64))
        labels.append(found.astype(np.int64))
    if not labels:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(box_indices), np.concatenate(labels)


def find_edit_regions(query: np.ndarray, suggested: np.ndarray, error_prob: Mapping[int, np.ndarray],
                      boxes: Sequence[ErrorBox], geometry: Geometry, slice_axis: int,
                      params: RegionParams) -> EditRegions:
    """The edits of a case and the edit of every box (``boxes`` in report order), as defined above."""
    labels = sorted(error_prob)
    shape = tuple(query.shape)
    empty = EditRegions({label: np.zeros(shape, dtype=np.uint16) for label in labels},
                        np.zeros(len(boxes), dtype=np.int64), np.zeros(0, dtype=np.int64),
                        np.zeros(0, dtype=np.int64))
    crop = bounding_box(query != suggested)
    if crop is None or not boxes:
        return empty
    query_crop, suggested_crop = query[crop], suggested[crop]
    stacked_shape = (len(labels), *query_crop.shape)
    changes = np.empty(stacked_shape, dtype=bool)
    framed = np.empty(stacked_shape, dtype=bool)
    for i, label in enumerate(labels):  # filled in place: no per-class copies to stack
        np.not_equal(suggested_crop == label, query_crop == label, out=changes[i])
        framed[i] = framed_errors(error_prob[label], geometry, slice_axis, params)[crop]
    components, component_count = ndimage.label(changes, structure=_structure_4d())
    del changes
    class_index = {label: i for i, label in enumerate(labels)}
    box_of_pair, component_of_pair = _box_component_pairs(boxes, class_index, components, framed, crop)
    if box_of_pair.size == 0:
        return empty

    # Boxes (nodes 0..n_boxes-1) and components (nodes n_boxes + label - 1) linked by framing: one edit per group.
    n_boxes = len(boxes)
    nodes = n_boxes + component_count
    graph = coo_matrix((np.ones(box_of_pair.size, dtype=np.int8), (box_of_pair, n_boxes + component_of_pair - 1)),
                       shape=(nodes, nodes))
    _, group = connected_components(graph, directed=False)
    framing_boxes = np.unique(box_of_pair)
    first_box = np.full(nodes, n_boxes, dtype=np.int64)
    np.minimum.at(first_box, group[framing_boxes], framing_boxes)
    edit_groups = np.unique(group[framing_boxes])
    edit_groups = edit_groups[np.argsort(first_box[edit_groups], kind="stable")]
    edit_of_group = np.zeros(nodes, dtype=np.int64)
    edit_of_group[edit_groups] = np.arange(1, edit_groups.size + 1)

    box_edit_ids = np.zeros(n_boxes, dtype=np.int64)
    box_edit_ids[framing_boxes] = edit_of_group[group[framing_boxes]]
    component_edit = np.zeros(component_count + 1, dtype=np.int64)
    component_edit[1:] = edit_of_group[group[n_boxes:]]
    first = first_box[edit_groups]
    edit_labels = np.array([boxes[i].label for i in first.tolist()], dtype=np.int64)

    dtype = edit_map_dtype(edit_groups.size)
    component_edit = component_edit.astype(dtype)  # the lookup's result has the edit maps' (small) dtype
    edit_maps = {}
    for i, label in enumerate(labels):  # one lookup per class, not per voxel
        full = np.zeros(shape, dtype=dtype)
        full[crop] = component_edit[components[i]]
        edit_maps[label] = full
    return EditRegions(edit_maps, box_edit_ids, edit_labels, first)
