"""The suggested segmentation: per voxel the label with the highest estimated-truth probability.

For class c with query mask M_c and error probability Ê_c the estimated truth is T̂_c = M_c(1−Ê_c) + (1−M_c)Ê_c
(SegQC eq. 4); the background gets 1 − Σ_c T̂_c.  The suggested label of a voxel is the one with the highest of
these; on a tie the query's label stays (a suggestion changes a voxel only when another label is strictly more
probable).  With Ê equal to the true error (M_c xor T_c) every T̂_c is the truth T_c and the suggestion is the
truth itself.  For a QC model whose head predicts the truth P (softmax), T̂_c = P_c exactly, so this is P's
arg-max; it is computed from Ê alone so that it works with any model and with ``segqc estimate``'s maps.

A voxel can change only where some Ê_c exceeds 1/(C+1) (C classes): with every Ê_c at or below it no label
beats the query's strictly.  The work is therefore done inside the bounding box of those voxels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import numpy as np

from .estimates import estimated_truth
from .regions import extent_above

# The crop bound is lowered by this much so that float32 rounding of Ê never leaves a changing voxel outside.
CROP_BOUND_MARGIN = 1e-4


def change_bound(class_count: int) -> float:
    """Error probability that some class must exceed for a voxel's suggested label to differ from the query's."""
    return 1.0 / (class_count + 1)


def change_extent(error_prob: Mapping[int, np.ndarray]) -> Optional[tuple[slice, slice, slice]]:
    """Bounding box of every voxel whose suggested label may differ from the query's, or None."""
    bound = change_bound(len(error_prob)) - CROP_BOUND_MARGIN
    boxes = [box for box in (extent_above(np.asarray(p), bound, (0, 0, 0)) for p in error_prob.values()) if box]
    if not boxes:
        return None
    return tuple(slice(min(b[axis].start for b in boxes), max(b[axis].stop for b in boxes))  # type: ignore[return-value]
                 for axis in range(3))


def suggested_labels(segmentation: np.ndarray, error_prob: Mapping[int, np.ndarray]) -> np.ndarray:
    """The suggested label map (same shape and dtype as ``segmentation``).

    ``error_prob`` maps every class label of the model to its Ê (same shape); labels of ``segmentation`` must
    be among them or 0.  Memory: a few float32 arrays the size of :func:`change_extent`'s box, whatever the number
    of classes.
    """
    segmentation = np.asarray(segmentation)
    result = segmentation.copy()
    crop = change_extent(error_prob)
    if crop is None:
        return result
    query = segmentation[crop]
    labels = sorted(error_prob)

    def truth_of(label: int) -> np.ndarray:
        return estimated_truth(query == label, np.asarray(error_prob[label][crop], dtype=np.float32)).astype(
            np.float32, copy=False)

    # Two passes over the classes (the background needs all of them first), so memory does not grow with them.
    background = np.ones(query.shape, dtype=np.float32)
    for label in labels:
        background -= truth_of(label)
    best_score = background.copy()
    best_label = np.zeros(query.shape, dtype=segmentation.dtype)
    query_score = background  # the score of the query's own label: the background's, replaced where it is a class
    for label in labels:  # one pass per class, not per voxel
        truth = truth_of(label)
        better = truth > best_score
        best_score[better] = truth[better]
        best_label[better] = label
        own = query == label
        query_score[own] = truth[own]
    keep = query_score >= best_score
    result[crop] = np.where(keep, query, best_label)
    return result
