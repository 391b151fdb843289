"""The inputs of one correction: validated, on one voxel grid, with the metadata that goes into ``record.json``.

Everything here only reads: input files and arrays are never changed, and nothing is written to the
store until every input has passed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .. import __version__
from ..errors import InputError
from ..files import sha256_file
from ..io.case import CORRECTION_GRID_ADVICE, IMAGE_GRID_ADVICE, check_same_geometry
from ..io.image_files import read_image, read_labelmap
from ..io.volumes import LabelMap, Volume, validate_label_array
from ..quality.metrics import case_metrics
from ..quality.report import _clean_floats
from ..review.rating import CaseRating, parse_rating
from .box_review import OUTCOME_KEY, BoxReview, EditOutcome, check_box_provenance
from .names import case_key, clean_reviewer

PathLike = Union[str, os.PathLike]


@dataclass
class PreparedCorrection:
    """A correction ready to write: its case key, arrays, labels and every metadata field known before commit."""

    key: str
    volumes: list[Volume]
    original: LabelMap
    corrected: LabelMap
    labels: list[int]
    draft: dict[str, Any]


def prepare_correction(
    case_id: str,
    images: Sequence[Union[Volume, PathLike]],
    original: Union[LabelMap, PathLike],
    corrected: Union[LabelMap, PathLike],
    reviewer: Optional[str] = None,
    qc_report: Optional[dict[str, Any]] = None,
    model_info: Optional[dict[str, Any]] = None,
    reviewed_boxes: Optional[list] = None,
    review_duration_s: Optional[float] = None,
    rating: Union[str, CaseRating, None] = None,
) -> PreparedCorrection:
    """Read and check the inputs of :meth:`CorrectionStore.add`; InputError or GeometryMismatchError say what is
    wrong."""
    key = case_key(case_id)
    reviewer = clean_reviewer(reviewer)
    if isinstance(images, (str, os.PathLike, Volume)):
        images = [images]
    if not images:
        raise InputError("A correction needs at least one image")
    volumes = [_as_volume(image, i) for i, image in enumerate(images)]
    original_map = _as_labelmap(original, "Original segmentation")
    corrected_map = _as_labelmap(corrected, "Corrected segmentation")
    reference = volumes[0].geometry
    for index, volume in enumerate(volumes[1:], start=2):
        check_same_geometry(reference, volume.geometry, f"Image {index}", IMAGE_GRID_ADVICE)
    check_same_geometry(reference, original_map.geometry, "Original segmentation", CORRECTION_GRID_ADVICE)
    check_same_geometry(reference, corrected_map.geometry, "Corrected segmentation", CORRECTION_GRID_ADVICE)
    if review_duration_s is not None and not (np.isfinite(review_duration_s) and review_duration_s >= 0):
        raise InputError(f"Review duration must be a non-negative number of seconds, got {review_duration_s}")
    labels = sorted(set(original_map.labels) | set(corrected_map.labels))
    names = {**original_map.names, **corrected_map.names}
    styles = {**original_map.styles, **corrected_map.styles}
    metrics = _true_metrics(original_map, corrected_map, labels)
    draft = {
        "case_id": case_id, "case_key": key, "reviewer": reviewer, "segqc_version": __version__,
        "labels": labels, "label_names": {str(k): str(v) for k, v in names.items() if k in labels},
        "geometry": reference.to_dict(), "true_metrics": metrics,
        "model": _model_info(model_info), "qc_prediction": _json_dict(qc_report, "qc_report"),
        "reviewed_boxes": _reviewed_boxes(reviewed_boxes),
        "review_duration_s": None if review_duration_s is None else float(review_duration_s),
        "rating": None if parse_rating(rating) is None else parse_rating(rating).value,
        "segment_styles": {str(label): _style_dict(style) for label, style in sorted(styles.items())
                           if label in labels},
        "sources": {"images": [v.path for v in volumes], "original": original_map.path,
                    "corrected": corrected_map.path},
        "notices": [n for item in (*volumes, original_map, corrected_map) for n in item.notices],
    }
    return PreparedCorrection(key, volumes, original_map, corrected_map, labels, draft)


def _style_dict(style) -> dict[str, Any]:
    return {"color_rgb": None if style.color_rgb is None else [float(c) for c in style.color_rgb],
            "terminology": style.terminology}


def _as_volume(image: Union[Volume, PathLike], index: int) -> Volume:
    if isinstance(image, Volume):
        return image
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    raise InputError(f"Image {index + 1} must be a Volume or a file path, got {type(image).__name__}")


def _as_labelmap(seg: Union[LabelMap, PathLike], what: str) -> LabelMap:
    if isinstance(seg, LabelMap):
        return LabelMap(validate_label_array(np.asarray(seg.array), what), seg.geometry, dict(seg.names), seg.path,
                        list(seg.notices), dict(seg.styles))
    if isinstance(seg, (str, os.PathLike)):
        return read_labelmap(seg)
    raise InputError(f"{what} must be a LabelMap or a file path, got {type(seg).__name__}")


def _json_dict(value: Any, what: str) -> Any:
    if value is None:
        return None
    if hasattr(value, "to_dict") and callable(value.to_dict):
        value = value.to_dict()
    try:
        cleaned = _clean_floats(value)
        json.dumps(cleaned, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} cannot be stored as JSON ({exc})") from exc
    return cleaned


def _model_info(model_info: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    if model_info is None:
        return None
    if not isinstance(model_info, dict):
        raise InputError(f"model_info must be a dict (name, version, sha256, path), got {type(model_info).__name__}")
    info = dict(model_info)
    model_path = info.get("path")
    if model_path and not info.get("sha256") and Path(model_path).is_file():
        info["sha256"] = sha256_file(model_path)
    if "path" in info:
        info["path"] = str(info["path"])
    return _json_dict(info, "model_info")


def _reviewed_boxes(boxes: Optional[list]) -> list[dict[str, Any]]:
    if boxes is None:
        return []
    result = []
    for index, box in enumerate(boxes):
        if isinstance(box, BoxReview):
            box = box.to_dict()
        elif hasattr(box, "__dataclass_fields__"):
            box = asdict(box)
        if not isinstance(box, dict):
            raise InputError(f"Reviewed box {index} must be a dict (box fields, 'status'), got {type(box).__name__}")
        if isinstance(box.get(OUTCOME_KEY), EditOutcome):
            box = {**box, OUTCOME_KEY: asdict(box[OUTCOME_KEY])}
        result.append(_json_dict(check_box_provenance(box, index), f"Reviewed box {index}"))
    return result


def _true_metrics(original: LabelMap, corrected: LabelMap, labels: list[int]) -> dict[str, Any]:
    """True metrics of the original (query) against the corrected (truth) mask, plus changed volumes."""
    metrics = case_metrics(original.array, corrected.array, labels, original.geometry.spacing_zyx_mm)
    voxel_mm3 = original.geometry.voxel_volume_mm3
    changed = int(np.count_nonzero(original.array != corrected.array))
    data = _clean_floats(asdict(metrics))
    data["changed_voxels"] = changed
    data["changed_volume_mm3"] = changed * voxel_mm3
    return data
