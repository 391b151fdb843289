"""The QC engine every front end calls: case -> QC network -> error probabilities -> report.

``QCEngine`` loads a model package once and runs any number of cases with it (the CLI's manifest
mode, the Slicer module).  ``run_qc_files`` is the one-call version for files.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from .errors import InputError, ModelError, OutOfDomainError
from .io.case import Case, load_case
from .io.volumes import LabelMap
from .network.config import ModelConfig
from .network.config_schema import MAX_WINDOW_OVERLAP
from .network.domain import DomainProfile
from .network.domain_check import (
    DomainReport,
    add_uncertainty,
    check_domain,
    label_checks,
    out_of_domain_notice,
    unchecked_report,
)
from .network.inference import CancelCheck, check_cancelled, predict_case, select_device
from .network.package import ModelPackage, default_model_path, load_model_package
from .network.runtime import Runtime, make_runner
from .quality.outputs import QCResult
from .quality.postprocess import PostprocessParams, build_report
from .quality.suggestion import suggest
from .quality.suggestion_settings import SuggestionParams, resolve_suggestion_params

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
    styles = {mapping[value]: style for value, style in segmentation.styles.items() if value in mapping}
    moved = ", ".join(f"{segmentation.names[v]} {v}->{t}" for v, t in sorted(mapping.items()) if v != t)
    notice = f"Segments mapped to the model's classes by name ({moved})"
    logger.info(notice)
    return LabelMap(remapped, segmentation.geometry, names, segmentation.path, list(segmentation.notices),
                    styles), [notice]


def drop_unknown_labels(segmentation: LabelMap, classes: dict[int, str]) -> tuple[LabelMap, list[int]]:
    """Set label values the model has no class for to background; return the map and those labels.

    The network has no mask channel for them, so they cannot be checked; a notice names them (and the domain
    check counts them against the input, since the other labels may then follow another convention)."""
    unknown = [label for label in segmentation.labels if label not in classes]
    if not unknown:
        return segmentation, []
    array = np.where(np.isin(segmentation.array, unknown), 0, segmentation.array).astype(segmentation.array.dtype)
    names = {label: name for label, name in segmentation.names.items() if label not in unknown}
    return LabelMap(array, segmentation.geometry, names, segmentation.path, list(segmentation.notices)), unknown


def domain_refusal(report: DomainReport, model_name: str) -> OutOfDomainError:
    if not report.checked:
        return OutOfDomainError(f"Refused (strict): model {model_name} has no domain profile, so SegQC cannot tell "
                                "whether this input is like its training data; add one with `segqc model profile` "
                                "or run without strict")
    return OutOfDomainError(f"Refused (strict): the input is outside the domain of model {model_name}, so no "
                            "estimates are reported: " + "; ".join(report.reasons))


@dataclass
class CheckedInput:
    """A case's segmentation as the network will see it, what did not fit the model, and the domain check."""

    segmentation: LabelMap
    notices: list[str]
    domain: DomainReport
    domain_s: float = 0.0


class QCEngine:
    """A loaded QC model on a device, ready to check cases.

    ``flip_check``: predict the most segmented window once more, mirrored, for the network's own uncertainty
    (one extra window per case; ``report.domain.uncertainty``)."""

    def __init__(self, model_path: Optional[PathLike] = None, device: str = "auto",
                 overlap: Optional[float] = None, window_batch: Optional[int] = None, flip_check: bool = True,
                 runtime: Runtime = Runtime.TORCH) -> None:
        if overlap is not None and not 0 <= overlap <= MAX_WINDOW_OVERLAP:
            raise InputError(f"Window overlap must be in [0, {MAX_WINDOW_OVERLAP}], got {overlap}")
        if window_batch is not None and window_batch < 1:
            raise InputError(f"Window batch must be at least 1, got {window_batch}")
        path = Path(model_path) if model_path is not None else default_model_path()
        self._package: ModelPackage = load_model_package(path)
        self._device = select_device(device)
        self._package.model.to(self._device)
        self._runner = make_runner(self._package.model, Runtime(runtime), self._device, self._package.sha256)
        self.runtime = Runtime.TORCH if self._runner is self._package.model else Runtime(runtime)
        self.overlap = overlap
        self.window_batch = window_batch
        self.flip_check = flip_check
        if not self._package.config.trained:
            logger.warning("Model %s is untrained (random weights): its error maps and scores are meaningless",
                           self._package.config.name)

    def suggestion_params(self, min_gain_dice: Optional[float] = None) -> tuple[SuggestionParams, list[str]]:
        """The expected-gain threshold of offered edits: ``min_gain_dice`` if given, else the package's calibrated
        one (``suggestions.json``), else the default; with notices saying when the default had to be used."""
        return resolve_suggestion_params(min_gain_dice, self._package.path, self._package.sha256)

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

    @property
    def domain_profile(self) -> Optional[DomainProfile]:
        return self._package.domain

    def check_input(self, case: Case) -> CheckedInput:
        """What a run does before the network: segment names and label values matched to the model's classes
        (unknown labels set to background), notices naming what does not fit, and ``report.domain``."""
        if len(case.images) != len(self.config.modalities):
            raise ModelError(f"Model {self.config.name} expects {len(self.config.modalities)} image modalities "
                             f"({', '.join(self.config.modalities)}), got {len(case.images)} image(s); pass one "
                             "--image per modality in that order")
        segmentation, notices = align_labels_to_model(case.segmentation, self.config.classes)
        segmentation, ignored = drop_unknown_labels(segmentation, self.config.classes)
        required = self.domain_profile.required_classes if self.domain_profile else self.config.labels
        for check in label_checks(segmentation.labels, self.config.classes, required, ignored):
            logger.warning(check.message)
            notices.append(check.message)
        started = time.perf_counter()
        if self._package.domain is None:
            domain = unchecked_report(self.config.name)
        else:
            domain = check_domain(self._package.domain, [image.array for image in case.images], segmentation.array,
                                  segmentation.geometry, self.config, ignored)
        return CheckedInput(segmentation, notices, domain, time.perf_counter() - started)

    def run_case(self, case: Case, progress: Optional[ProgressCallback] = None, cancel: CancelCheck = None,
                 postprocess_params: Optional[PostprocessParams] = None, strict: bool = False,
                 suggest_edits: bool = False, min_gain_dice: Optional[float] = None) -> QCResult:
        """Error probabilities and the report of one case (nothing is written).

        ``strict``: raise :class:`OutOfDomainError` instead of reporting estimates for a case outside the model's
        domain (or when the model has no domain profile).  With ``suggest_edits`` also the suggested segmentation
        and one suggested edit per error box (:func:`SegQCLib.quality.suggestion.suggest`), offered from the expected
        Dice gain ``min_gain_dice`` (default: :meth:`suggestion_params`)."""
        started = time.perf_counter()
        notify = progress or (lambda _fraction, _message: None)
        checked = self.check_input(case)
        segmentation, label_notices, domain = checked.segmentation, checked.notices, checked.domain
        if strict and not domain.in_domain:
            raise domain_refusal(domain, self.config.name)
        inference = predict_case(
            self._package.model, self.config, [image.array for image in case.images], segmentation.array,
            segmentation.geometry, self._device, overlap=self.overlap, window_batch=self.window_batch,
            progress=lambda fraction, message: notify(fraction * PROGRESS_NETWORK_END, message), cancel=cancel,
            flip_check=self.flip_check, runner=self._runner)
        check_cancelled(cancel)
        if inference.uncertainty is not None:
            add_uncertainty(domain, inference.uncertainty.disagreement, inference.uncertainty.dice_change,
                            inference.uncertainty.axis_zyx, self._package.domain)
        if strict and not domain.in_domain:
            raise domain_refusal(domain, self.config.name)
        notify(PROGRESS_NETWORK_END, "Estimating quality, finding error regions")
        class_names = {**self.config.classes, **segmentation.names}
        report = build_report(segmentation, inference.error_prob, postprocess_params, class_names)
        if self.config.report_case_head:
            report.case.dice_pred = inference.dice_pred
            report.case.nsd_pred = inference.nsd_pred
        suggestion = None
        suggestion_notices: list[str] = []
        if suggest_edits:
            notify(PROGRESS_NETWORK_END, "Suggesting corrections")
            params, suggestion_notices = self.suggestion_params(min_gain_dice)
            suggestion = suggest(segmentation, inference.error_prob, report, params)
        report.device = self.device
        report.model = self.model_info
        report.notices = (list(case.notices) + self._package.notices + label_notices + inference.notices
                          + report.notices + suggestion_notices)
        if not self.config.trained:
            report.notices.append(f"Model {self.config.name} is untrained: predictions are not meaningful")
        report.domain = domain
        if domain.in_domain is False:
            report.notices.insert(0, out_of_domain_notice(domain, self.config.name))
        elif not domain.checked:
            report.notices.extend(domain.warnings)
        report.inputs = {**report.inputs, "images": [image.path for image in case.images],
                         "segmentation": segmentation.path}
        report.parameters = {**report.parameters, "inference": {
            "overlap": self.overlap if self.overlap is not None else self.config.window_overlap,
            "windows": inference.windows, "window_batch": inference.window_batch,
            "crop_zyx": [list(inference.crop.start_zyx), list(inference.crop.stop_zyx)],
            "resampled": inference.resampled, "runtime": self.runtime.value,
        }}
        report.timing_s = {**inference.timing_s, **report.timing_s, "domain": round(checked.domain_s, 4),
                           "total": round(time.perf_counter() - started, 4)}
        notify(1.0, "Report ready")
        return QCResult(report, inference.error_prob, segmentation.geometry, suggestion)


def run_qc_files(image_paths: Sequence[PathLike], seg_path: PathLike, out_dir: PathLike,
                 model_path: Optional[PathLike] = None, device: str = "auto", resample_seg: bool = False,
                 progress: Optional[ProgressCallback] = None, cancel: CancelCheck = None,
                 engine: Optional[QCEngine] = None, postprocess_params: Optional[PostprocessParams] = None,
                 strict: bool = False, suggest_edits: bool = False, min_gain_dice: Optional[float] = None) -> QCResult:
    """Read a case from files, run QC and write ``report.json`` + ``error_prob_<label>.nii.gz`` to ``out_dir``
    (with ``suggest_edits`` also ``suggested_segmentation.nii.gz`` and ``suggested_edits_<label>.nii.gz``).

    Nothing is written when reading, the network or the report fails, the run is cancelled or (``strict``)
    the case is outside the model's domain.  Pass ``engine`` to reuse a loaded model (then ``model_path`` and
    ``device`` are ignored).
    """
    notify = progress or (lambda _fraction, _message: None)
    engine = engine or QCEngine(model_path, device)
    notify(0.0, "Reading image(s) and segmentation")
    case = load_case(image_paths, seg_path, resample_seg=resample_seg)
    span = PROGRESS_WRITE_START - PROGRESS_READ_END
    result = engine.run_case(case, progress=lambda fraction, message: notify(PROGRESS_READ_END + span * fraction,
                                                                             message),
                             cancel=cancel, postprocess_params=postprocess_params, strict=strict,
                             suggest_edits=suggest_edits, min_gain_dice=min_gain_dice)
    check_cancelled(cancel)
    notify(PROGRESS_WRITE_START, "Writing error maps and report")
    result.write(out_dir, inputs=[*image_paths, seg_path])
    notify(1.0, "Done")
    return result
