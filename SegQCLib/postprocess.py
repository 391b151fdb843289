"""From a segmentation and its per-class error probabilities Ê to one :class:`Report`.

This is the network-independent half of the engine: ``segqc estimate`` feeds it error maps from any
source, ``segqc run`` feeds it the QC network's output.  Steps: estimates (3D, per slice, case), error
boxes, slice ranking; each is timed into ``report.timing_s``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .errors import GeometryMismatchError, InputError
from .estimates import case_dice_from_sums, class_sums, estimate_from_sums, per_slice_from_sums, quality_index
from .geometry import Geometry
from .io import LabelMap, read_image, write_array
from .ranking import rank_slices, slice_error_scores
from .regions import RegionParams, find_error_boxes
from .report import ERROR_PROB_PATTERN, REPORT_FILE_NAME, CaseEstimate, ClassEstimate, Report, SliceEntry

logger = logging.getLogger(__name__)

# Probabilities written by other tools may overshoot [0, 1] by interpolation round-off.
PROBABILITY_TOLERANCE = 1e-3
ERROR_PROB_FILE_RE = re.compile(r"error_prob_(?P<label>\d+)\.(nii\.gz|nii|nrrd|nhdr|mha|mhd)$", re.IGNORECASE)


@dataclass(frozen=True)
class PostprocessParams:
    regions: RegionParams = field(default_factory=RegionParams)
    slice_axis: Optional[int] = None


@dataclass
class QCResult:
    """Everything a QC run produced: the report and the per-class error probabilities on the image grid."""

    report: Report
    error_prob: dict[int, np.ndarray]
    geometry: Geometry

    def write(self, out_dir: Union[str, Path]) -> Path:
        """Write ``error_prob_<label>.nii.gz`` then ``report.json`` (last, so its presence means complete)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        # A report from an earlier run must not vouch for maps that this run is half-way through replacing.
        (out_dir / REPORT_FILE_NAME).unlink(missing_ok=True)
        started = time.perf_counter()
        for label, prob in self.error_prob.items():
            write_array(out_dir / ERROR_PROB_PATTERN.format(label=label), prob.astype(np.float32, copy=False),
                        self.geometry)
        self.report.timing_s["write"] = round(time.perf_counter() - started, 4)
        return self.report.save(out_dir / REPORT_FILE_NAME)


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


def read_error_probs(sources: Union[str, Path, Sequence[Union[str, Path]]],
                     geometry: Optional[Geometry] = None) -> dict[int, np.ndarray]:
    """Read ``error_prob_<label>.<ext>`` files from a folder or a list of files (and check their grid)."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted(p for p in source.iterdir() if ERROR_PROB_FILE_RE.search(p.name))
            if not found:
                raise InputError(f"No error_prob_<label>.nii.gz files in {source}")
            files.extend(found)
        else:
            files.append(source)
    error_prob: dict[int, np.ndarray] = {}
    for path in files:
        match = ERROR_PROB_FILE_RE.search(path.name)
        if not match:
            raise InputError(f"Cannot tell the class of {path}: name it error_prob_<label>.nii.gz")
        label = int(match["label"])
        if label in error_prob:
            raise InputError(f"Two error probability maps for label {label} (second: {path})")
        volume = read_image(path)
        differences = geometry.differences(volume.geometry) if geometry is not None else []
        if differences:
            # Not check_same_geometry: its advice (--resample-seg) moves the segmentation, not this map.
            raise GeometryMismatchError(
                f"Error probability map {path} is not on the segmentation's voxel grid: " + "; ".join(differences)
                + ". Give the maps on the segmentation's grid, or, when they are on the image's grid, pass that "
                "image (CLI: --image) with --resample-seg."
            )
        error_prob[label] = volume.array
    return error_prob
