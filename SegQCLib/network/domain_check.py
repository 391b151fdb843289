"""Is a case like the model's training data?  Compare it with the package's :class:`~.domain.DomainProfile`.

Each check compares one measurement of the case with its spread over the training cases and gives a *ratio*:
0 for the training median, 1 at the edge of the accepted range (the training range widened by the
tolerances below), above 1 outside it.  ``score`` is the largest ratio; the case is *in domain* when no
decisive check fails.  Decisive checks (a failure makes the case out of domain):

* labels the model does not know (categorical: those voxels are ignored, the labels probably mean other
  structures);
* voxel spacing (coarsest and finest axis) against the training spacing;
* the crop the network sees (the segmentation's bounding box plus the model's margin);
* per modality, the normalised intensity quantiles and histogram inside that crop;
* per class, the volume and bounding-box extent (only upwards: a small or missing class is a bad
  segmentation, not another anatomy) and the median normalised intensity inside the class.

Warnings (shown, not decisive): a class every training case has is missing from the segmentation (a bad
segmentation of the right anatomy can lose a class); the image's field of view is far larger or smaller than
the training images' (the network only sees the crop); the network's answer changes much when the image is
mirrored (:func:`add_uncertainty`).

Tolerances (:class:`DomainTolerances`) were set on queries of the *training* split (perturbations of the
training truths); ``training/evaluate_domain.py`` measures how often validation queries and other anatomy
are flagged.  Numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from ..geometry import Geometry
from .config import ModelConfig
from .domain import CaseFeatures, DomainProfile, Spread, case_features, histogram_distance

OUT_OF_DOMAIN_PREFIX = "OUTSIDE THE MODEL'S DOMAIN"


@dataclass(frozen=True)
class DomainTolerances:
    """How far beyond the training range (of the ground truths) a measurement may go before the check fails.

    Factors widen a range multiplicatively (sizes, spacing); margins additively, as the larger of so many
    training standard deviations and a share of the training range (intensities).  The query-dependent ones
    (volume, extent, crop, class intensity) leave room for bad segmentations of the right anatomy: on 712
    perturbation queries of the training split (hippocampus model) the largest values seen were 1.74x the
    largest training volume, 1.78x the largest extent, 1.03x the largest crop, 13.4 standard deviations above
    the brightest class median, 0.7 standard deviations beyond the intensity quantiles; each tolerance
    exceeds that by 19 % or more.
    """

    spacing_coarser_factor: float = 1.5  # coarsest spacing up to 1.5x the training's coarsest
    spacing_finer_factor: float = 3.0  # finest spacing down to 1/3 of the training's finest
    crop_factor: float = 2.0
    fov_factor: float = 3.0  # warning only
    volume_factor: float = 3.0
    extent_factor: float = 2.25
    quantile_margin_std: float = 4.0
    quantile_margin_range: float = 0.25
    histogram_margin_std: float = 3.0
    class_intensity_margin_std: float = 16.0
    class_intensity_margin_range: float = 1.0
    # The median intensity of a class smaller than this share of its smallest training volume is noise.
    class_intensity_min_volume_fraction: float = 0.25
    # Uncertainty (warning only): mirror disagreement above this multiple of the training cases' 95th percentile.
    uncertainty_factor: float = 2.0


DEFAULT_TOLERANCES = DomainTolerances()


@dataclass
class DomainCheck:
    """One comparison of the case with the training data."""

    name: str  # spacing, crop, intensity, histogram, volume, extent, class_intensity, labels, ...
    passed: bool
    decisive: bool
    message: str  # what was measured against what (always filled)
    ratio: Optional[float] = None  # 0 = training median, 1 = edge of the accepted range; None: categorical
    value: Any = None
    accepted: Any = None  # [low, high] of the accepted range (None where one-sided or categorical)


@dataclass
class DomainReport:
    """``report.domain``: whether the case is like the model's training data, and why not."""

    checked: bool  # False: the model has no domain profile (nothing could be compared)
    in_domain: Optional[bool]  # None when not checked
    score: Optional[float]  # largest ratio of the measured checks: < 1 inside the accepted ranges
    reasons: list[str] = field(default_factory=list)  # why it is out of domain (decisive failures)
    warnings: list[str] = field(default_factory=list)  # worth knowing, not decisive
    checks: list[DomainCheck] = field(default_factory=list)
    uncertainty: Optional[dict[str, Any]] = None  # the network's mirror disagreement (see network/uncertainty.py)
    profile_source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DomainReport:
        return cls(bool(data["checked"]), data.get("in_domain"), data.get("score"), list(data.get("reasons", [])),
                   list(data.get("warnings", [])), [DomainCheck(**c) for c in data.get("checks", [])],
                   data.get("uncertainty"), str(data.get("profile_source", "")))

    def add(self, check: DomainCheck) -> None:
        self.checks.append(check)
        self._update()

    def _update(self) -> None:
        failed = [c for c in self.checks if not c.passed]
        self.reasons = [c.message for c in failed if c.decisive]
        self.warnings = [c.message for c in failed if not c.decisive]
        ratios = [c.ratio for c in self.checks if c.decisive and c.ratio is not None and math.isfinite(c.ratio)]
        self.score = round(max(ratios), 3) if ratios else (0.0 if self.checked else None)
        self.in_domain = not self.reasons if self.checked else None


def unchecked_report(model_name: str) -> DomainReport:
    return DomainReport(False, None, None, warnings=[
        f"Model {model_name} has no domain profile: no domain check was possible (add one with `segqc model "
        "profile`)"])


# --- ratios ---------------------------------------------------------------------------------------------
def _ratio(value: float, centre: float, low: float, high: float) -> float:
    """0 at ``centre``, 1 at ``low`` or ``high`` (linear on each side)."""
    if value >= centre:
        return (value - centre) / (high - centre) if high > centre else (math.inf if value > centre else 0.0)
    return (centre - value) / (centre - low) if centre > low else math.inf


def _log_ratio(value: float, spread: Spread, low_factor: Optional[float], high_factor: Optional[float]
               ) -> tuple[float, Optional[float], Optional[float]]:
    """Ratio on a log scale for sizes: accepted [min / low_factor, max * high_factor]; a missing factor leaves
    that side open.  Returns (ratio, low, high)."""
    low = spread.min / low_factor if low_factor else None
    high = spread.max * high_factor if high_factor else None
    logged = math.log(max(value, 1e-12))
    centre = math.log(max(spread.median, 1e-12))
    if value >= spread.median or low is None:
        ratio = max(0.0, _ratio(logged, centre, -math.inf, math.log(high))) if high is not None else 0.0
    else:
        ratio = _ratio(logged, centre, math.log(low), math.inf)
    return ratio, low, high


def _margin(spread: Spread, std_units: float, range_share: float) -> float:
    return max(std_units * spread.std, range_share * (spread.max - spread.min))


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) >= 1 else f"{value:.2f}"


def _mm(values: Sequence[float]) -> str:
    return "×".join(f"{v:.3g}" for v in values) + " mm"


# --- the checks ---------------------------------------------------------------------------------------
def _spacing_checks(features: CaseFeatures, profile: DomainProfile, tol: DomainTolerances) -> list[DomainCheck]:
    spacing = sorted(features.spacing_zyx_mm)
    coarsest = max(s.max for s in profile.spacing_zyx_mm)
    finest = min(s.min for s in profile.spacing_zyx_mm)
    trained = Spread.of([finest, coarsest])
    ratio_coarse, _, high = _log_ratio(spacing[-1], trained, None, tol.spacing_coarser_factor)
    ratio_fine, low, _ = _log_ratio(spacing[0], trained, tol.spacing_finer_factor, None)
    ratio = max(ratio_coarse, ratio_fine)
    trained_text = f"{_fmt(finest)} mm" if finest == coarsest else f"{_fmt(finest)}–{_fmt(coarsest)} mm"
    message = (f"Voxel spacing {_mm(features.spacing_zyx_mm[::-1])} (x×y×z) is far from the training images' "
               f"{trained_text}" if ratio > 1 else f"Voxel spacing {_mm(features.spacing_zyx_mm[::-1])} (x×y×z)")
    return [DomainCheck("spacing", ratio <= 1, True, message, ratio, features.spacing_zyx_mm, [low, high])]


def _size_checks(name: str, values: Sequence[float], spreads: Sequence[Spread], factor: float, decisive: bool,
                 what: str, note: str = "") -> list[DomainCheck]:
    results = [_log_ratio(v, s, factor, factor) for v, s in zip(values, spreads)]
    ratio = max(r[0] for r in results)
    trained = " × ".join(f"{_fmt(s.min)}–{_fmt(s.max)}" for s in spreads)
    if ratio > 1:
        worst = int(np.argmax([r[0] for r in results]))
        size = "larger" if values[worst] > spreads[worst].median else "smaller"
        message = f"{what}, {_mm(values)}, is far {size} than in the training data ({trained} mm){note}"
    else:
        message = f"{what}: {_mm(values)} (training data {trained} mm){note}"
    return [DomainCheck(name, ratio <= 1, decisive, message, ratio, list(values), [[r[1], r[2]] for r in results])]


def _intensity_checks(features: CaseFeatures, profile: DomainProfile, tol: DomainTolerances) -> list[DomainCheck]:
    checks = []
    for channel, modality in enumerate(profile.modalities):
        measured = features.intensity[channel]
        ratios, accepted = [], []
        for value, spread in zip(measured.quantiles, modality.quantiles):
            margin = _margin(spread, tol.quantile_margin_std, tol.quantile_margin_range)
            low, high = spread.min - margin, spread.max + margin
            ratios.append(_ratio(value, spread.median, low, high))
            accepted.append([low, high])
        worst = int(np.argmax(ratios))
        level = modality.quantile_levels[worst]
        passed = ratios[worst] <= 1
        message = (f"The image does not look like the model's {modality.name} training images: its intensities are "
                   f"distributed differently (after the model's normalisation, {level:.0%} quantile "
                   f"{measured.quantiles[worst]:.2f}; training images {modality.quantiles[worst].min:.2f} to "
                   f"{modality.quantiles[worst].max:.2f})"
                   if not passed else f"Image intensities ({modality.name}) within the training range")
        checks.append(DomainCheck("intensity", passed, True, message, ratios[worst], measured.quantiles, accepted))
        distance = histogram_distance(measured.histogram, modality.histogram)
        spread = modality.histogram_distance
        high = spread.max + tol.histogram_margin_std * spread.std
        ratio = distance / high if high > 0 else math.inf
        message = (f"The image does not look like the model's {modality.name} training images: {distance:.0%} of its "
                   f"intensity histogram does not overlap theirs (training images at most {spread.max:.0%})"
                   if ratio > 1 else
                   f"Intensity histogram ({modality.name}) like the training images' ({distance:.0%} apart)")
        checks.append(DomainCheck("histogram", ratio <= 1, True, message, ratio, distance, [0.0, high]))
    return checks


def _class_checks(features: CaseFeatures, profile: DomainProfile, tol: DomainTolerances,
                  class_names: Mapping[int, str]) -> list[DomainCheck]:
    checks = []
    for label, measured in sorted(features.classes.items()):
        known = profile.classes.get(label)
        if known is None:
            continue
        name = f"class {label} ({class_names.get(label, known.name)})"
        ratio, _, high = _log_ratio(measured.volume_mm3, known.volume_mm3, None, tol.volume_factor)
        message = (f"{name[0].upper()}{name[1:]} has a volume of {_fmt(measured.volume_mm3)} mm³; training cases "
                   f"{_fmt(known.volume_mm3.min)}–{_fmt(known.volume_mm3.max)} mm³")
        checks.append(DomainCheck("volume", ratio <= 1, True, message, ratio, measured.volume_mm3, [None, high]))
        results = [_log_ratio(v, s, None, tol.extent_factor) for v, s in zip(measured.extent_mm, known.extent_mm)]
        ratio = max(r[0] for r in results)
        message = (f"{name[0].upper()}{name[1:]} measures {_mm(measured.extent_mm)}; training cases at most "
                   f"{_mm([s.max for s in known.extent_mm])}")
        checks.append(DomainCheck("extent", ratio <= 1, True, message, ratio, measured.extent_mm,
                                  [[None, r[2]] for r in results]))
        if measured.volume_mm3 < tol.class_intensity_min_volume_fraction * known.volume_mm3.min:
            continue
        for channel, spread in enumerate(known.intensity_median):
            value = measured.intensity_median[channel]
            margin = _margin(spread, tol.class_intensity_margin_std, tol.class_intensity_margin_range)
            low, high = spread.min - margin, spread.max + margin
            ratio = _ratio(value, spread.median, low, high)
            modality = profile.modalities[channel].name
            brightness = "brighter" if value > spread.median else "darker"
            message = (f"{name[0].upper()}{name[1:]} is much {brightness} in the image ({modality}) than in the "
                       f"training images, probably another structure (median intensity {value:.2f} after the model's "
                       f"normalisation; training cases {spread.min:.2f} to {spread.max:.2f})" if ratio > 1 else
                       f"Intensity inside {name} ({modality}) within the training range")
            checks.append(DomainCheck("class_intensity", ratio <= 1, True, message, ratio, value, [low, high]))
    return checks


def label_checks(present: Sequence[int], model_classes: Mapping[int, str], required: Sequence[int],
                 ignored: Sequence[int] = ()) -> list[DomainCheck]:
    """Checks of the label values alone (no profile needed): labels the model does not know (``ignored``: already
    set to background) and classes missing that every training case has (without a profile: every class)."""
    checks = []
    expected = ", ".join(f"{label} ({name})" for label, name in sorted(model_classes.items()))
    if ignored:
        checks.append(DomainCheck(
            "labels", False, True, f"The segmentation has label value(s) {', '.join(map(str, ignored))} that the "
            f"model does not know (its classes: {expected}): they were ignored, and the other labels may not mean "
            "what the model thinks", value=list(ignored)))
    missing = [label for label in required if label not in present]
    if missing:
        def named(labels: Sequence[int]) -> str:
            return ", ".join(f"{label} ({model_classes.get(label, '?')})" for label in labels)

        hint = " (a segmentation with other labels, e.g. one label for the whole structure?)" if present else ""
        have = f"has class {named(present)} only" if present else "is empty"
        checks.append(DomainCheck(
            "classes", False, False, f"The segmentation {have}; the model expects {expected}: class "
            f"{named(missing)} is missing{hint}", value=list(missing)))
    return checks


def check_domain(profile: DomainProfile, images: Sequence[np.ndarray], labels: np.ndarray, geometry: Geometry,
                 config: ModelConfig, ignored_labels: Sequence[int] = (),
                 tolerances: DomainTolerances = DEFAULT_TOLERANCES) -> DomainReport:
    """Compare one case (``labels`` without the ignored ones) with ``profile``; see the module docstring."""
    return check_features(profile, case_features(images, labels, geometry, config), config, ignored_labels,
                          tolerances)


def check_features(profile: DomainProfile, features: CaseFeatures, config: ModelConfig,
                   ignored_labels: Sequence[int] = (), tolerances: DomainTolerances = DEFAULT_TOLERANCES
                   ) -> DomainReport:
    """:func:`check_domain` on measurements already made (:func:`~.domain.case_features`)."""
    report = DomainReport(True, True, 0.0, profile_source=profile.source)
    checks = label_checks(sorted(features.classes), config.classes, profile.required_classes, ignored_labels)
    checks += _spacing_checks(features, profile, tolerances)
    if features.classes:  # the crop of an empty segmentation is the whole image
        checks += _size_checks("crop", features.crop_mm, profile.crop_mm, tolerances.crop_factor, True,
                               "The region the network checks (the segmentation and its margin)")
    checks += _size_checks("field_of_view", features.fov_mm, profile.fov_mm, tolerances.fov_factor, False,
                           "The image's field of view", note="; the network only sees the region around the "
                           "segmentation")
    checks += _intensity_checks(features, profile, tolerances)
    checks += _class_checks(features, profile, tolerances, config.classes)
    for check in checks:
        report.add(check)
    return report


def add_uncertainty(report: DomainReport, disagreement: float, dice_change: float, axis_zyx: int,
                    profile: Optional[DomainProfile], tolerances: DomainTolerances = DEFAULT_TOLERANCES) -> None:
    """Record the network's mirror disagreement (:mod:`.uncertainty`) in ``report``; with a calibrated profile it
    is also a (non-decisive) check against the training cases' spread."""
    calibration = profile.uncertainty if profile is not None else None
    report.uncertainty = {"flip_disagreement": round(disagreement, 4), "flip_dice_change": round(dice_change, 4),
                          "flip_axis_zyx": axis_zyx, "training_p95": None, "limit": None}
    if calibration is None or not report.checked:
        return
    limit = tolerances.uncertainty_factor * calibration.disagreement.p95
    report.uncertainty.update(training_p95=round(calibration.disagreement.p95, 4), limit=round(limit, 4))
    ratio = disagreement / limit if limit > 0 else math.inf
    message = (f"The network's predicted errors change by {disagreement:.0%} of the segmented volume when the image is "
               f"mirrored (training cases: up to {calibration.disagreement.p95:.0%} in 95 of 100): its answer here is "
               "unstable" if ratio > 1 else f"Mirror disagreement {disagreement:.0%} of the segmented volume")
    report.add(DomainCheck("uncertainty", ratio <= 1, False, message, ratio, disagreement, [0.0, limit]))


def out_of_domain_notice(report: DomainReport, model_name: str) -> str:
    """The one line every front end shows first for a case outside the model's domain."""
    return (f"{OUT_OF_DOMAIN_PREFIX}: this input is unlike the training data of model {model_name}, so its "
            f"estimates are unreliable ({len(report.reasons)} reason(s); first: {report.reasons[0]})")
