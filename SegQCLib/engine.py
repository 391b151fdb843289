"""The QC engine every front end calls: case -> QC network -> error probabilities -> report.

``QCEngine`` loads a model package once and runs any number of cases with it (the CLI's manifest
mode, the Slicer module).  ``run_qc_files`` is the one-call version for files.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from .errors import InputError
from .io.case import Case, load_case
from .io.volumes import LabelMap
from .network.config import ModelConfig
from .network.config_schema import MAX_WINDOW_OVERLAP
from .network.inference import CancelCheck, check_cancelled, predict_case, select_device
from .network.package import ModelPackage, default_model_path, load_model_package
from .quality.outputs import QCResult
from .quality.postprocess import PostprocessParams, build_report

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
PathLike = Union[str, os.PathLike]

# Share of the progress bar taken by the network; the rest is the report (estimates, boxes, ranking).
PROGRESS_NETWORK_END = 0.9
# run_qc_files: reading the files, then run_case, then writing the outputs.
PROGRESS_READ_END = 0.05
PROGRESS_WRITE_START = 0.95


def align_labels_to_model(segmentation: LabelMap, classes: dict[int, str]) -> tuple[LabelMap, list[str]]:
    """Renumber a named segmentation (e.g. Slicer's ``.seg.nrrd``) so segment names meet the model's classes.

    Label values in a ``.seg.nrrd`` follow the file, not the model: a segment "posterior" stored as
    label 1 must be checked as the model's class "posterior".  When every foreground label present has
    a segment name equal (case-insensitively) to a model class name, labels are mapped by name; when
    names exist but do not all match, labels are taken by value and a notice says so.
    """
    present = segmentation.labels
    if not segmentation.names or not present:
        return segmentation, []
    by_name = {name.strip().lower(): label for label, name in classes.items()}
    mapping = {value: by_name.get(segmentation.names.get(value, "").strip().lower()) for value in present}
    if any(target is None for target in mapping.values()) or len(set(mapping.values())) != len(mapping):
        unmatched = sorted(segmentation.names.get(v, f"label {v}") for v, t in mapping.items() if t is None)
        return segmentation, [
            f"Segment names {unmatched} do not match the model's classes {sorted(classes.values())}: "
            "labels are taken by their values"] if unmatched else []
    if all(value == target for value, target in mapping.items()):
        return segmentation, []
    lookup = np.arange(max(int(segmentation.array.max()), max(mapping.values())) + 1, dtype=np.int64)
    lookup[list(mapping)] = list(mapping.values())
    remapped = lookup[segmentation.array].astype(np.uint8 if lookup.max() <= np.iinfo(np.uint8).max else np.int16)
    names = {target: segmentation.names[value] for value, target in mapping.items()}
    moved = ", ".join(f"{segmentation.names[v]} {v}->{t}" for v, t in sorted(mapping.items()) if v != t)
    notice = f"Segments mapped to the model's classes by name ({moved})"
    logger.info(notice)
    return LabelMap(remapped, segmentation.geometry, names, segmentation.path), [notice]


class QCEngine:
    """A loaded QC model on a device, ready to check cases."""

    def __init__(self, model_path: Optional[PathLike] = None, device: str = "auto",
                 overlap: Optional[float] = None, window_batch: Optional[int] = None) -> None:
        if overlap is not None and not 0 <= overlap <= MAX_WINDOW_OVERLAP:
            raise InputError(f"Window overlap must be in [0, {MAX_WINDOW_OVERLAP}], got {overlap}")
        if window_batch is not None and window_batch < 1:
            raise InputError(f"Window batch must be at least 1, got {window_batch}")
        path = Path(model_path) if model_path is not None else default_model_path()
        self._package: ModelPackage = load_model_package(path)
        self._device = select_device(device)
        self._package.model.to(self._device)
        self.overlap = overlap
        self.window_batch = window_batch
        if not self._package.config.trained:
            logger.warning("Model %s is untrained (random weights): its error maps and scores are meaningless",
                           self._package.config.name)

    @property
    def config(self) -> ModelConfig:
        return self._package.config

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def model(self) -> torch.nn.Module:
        return self._package.model

    @property
    def model_info(self) -> dict[str, Any]:
        return self._package.info

    def run_case(self, case: Case, progress: Optional[ProgressCallback] = None, cancel: CancelCheck = None,
                 postprocess_params: Optional[PostprocessParams] = None) -> QCResult:
        """Error probabilities and the report of one case (nothing is written)."""
        started = time.perf_counter()
        notify = progress or (lambda _fraction, _message: None)
        segmentation, label_notices = align_labels_to_model(case.segmentation, self.config.classes)
        inference = predict_case(
            self._package.model, self.config, [image.array for image in case.images], segmentation.array,
            segmentation.geometry, self._device, overlap=self.overlap, window_batch=self.window_batch,
            progress=lambda fraction, message: notify(fraction * PROGRESS_NETWORK_END, message), cancel=cancel)
        check_cancelled(cancel)
        notify(PROGRESS_NETWORK_END, "Estimating quality, finding error regions")
        class_names = {**self.config.classes, **segmentation.names}
        report = build_report(segmentation, inference.error_prob, postprocess_params, class_names)
        report.case.dice_pred = inference.dice_pred
        report.case.nsd_pred = inference.nsd_pred
        report.device = self.device
        report.model = self.model_info
        report.notices = list(case.notices) + label_notices + inference.notices + report.notices
        if not self.config.trained:
            report.notices.append(f"Model {self.config.name} is untrained: predictions are not meaningful")
        report.inputs = {**report.inputs, "images": [image.path for image in case.images],
                         "segmentation": segmentation.path}
        report.parameters = {**report.parameters, "inference": {
            "overlap": self.overlap if self.overlap is not None else self.config.window_overlap,
            "windows": inference.windows, "window_batch": inference.window_batch,
            "crop_zyx": [list(inference.crop.start_zyx), list(inference.crop.stop_zyx)],
            "resampled": inference.resampled,
        }}
        report.timing_s = {**inference.timing_s, **report.timing_s,
                           "total": round(time.perf_counter() - started, 4)}
        notify(1.0, "Report ready")
        return QCResult(report, inference.error_prob, segmentation.geometry)


def run_qc_files(image_paths: Sequence[PathLike], seg_path: PathLike, out_dir: PathLike,
                 model_path: Optional[PathLike] = None, device: str = "auto", resample_seg: bool = False,
                 progress: Optional[ProgressCallback] = None, cancel: CancelCheck = None,
                 engine: Optional[QCEngine] = None, postprocess_params: Optional[PostprocessParams] = None
                 ) -> QCResult:
    """Read a case from files, run QC and write ``report.json`` + ``error_prob_<label>.nii.gz`` to ``out_dir``.

    Nothing is written when reading, the network or the report fails or the run is cancelled.  Pass
    ``engine`` to reuse a loaded model (then ``model_path`` and ``device`` are ignored).
    """
    notify = progress or (lambda _fraction, _message: None)
    engine = engine or QCEngine(model_path, device)
    notify(0.0, "Reading image(s) and segmentation")
    case = load_case(image_paths, seg_path, resample_seg=resample_seg)
    span = PROGRESS_WRITE_START - PROGRESS_READ_END
    result = engine.run_case(case, progress=lambda fraction, message: notify(PROGRESS_READ_END + span * fraction,
                                                                             message),
                             cancel=cancel, postprocess_params=postprocess_params)
    check_cancelled(cancel)
    notify(PROGRESS_WRITE_START, "Writing error maps and report")
    result.write(out_dir)
    notify(1.0, "Done")
    return result
