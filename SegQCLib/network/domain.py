"""What a model was trained on: its *domain profile*, built from the training cases and stored as ``domain.json``.

A QC network only knows the images and structures it was trained on.  :func:`build_domain_profile` measures,
on every training case (image(s), ground-truth label map, geometry), what :mod:`.domain_check` later compares
a new case with:

* voxel spacing and field of view (image extent in mm) and the size of the crop the network sees;
* per modality, the intensities *after the model's own normalisation* inside that crop: robust quantiles,
  a histogram (and how far each training case's histogram is from the pooled one), and the median intensity
  inside each class;
* per class: how many cases have it, its volume (mm³) and bounding-box extent (mm, largest first, so the
  orientation does not matter), and which classes every case has.

Each per-case quantity is summarised over the training cases as a :class:`Spread` (min, 5th percentile,
median, 95th percentile, max, mean, standard deviation).  Numpy only: no torch, no files read here.

Use (the lead's bundling and ``segqc model profile`` both do this)::

    profile = build_domain_profile(((images, labels, geometry) for ...), config, source="MSD Task04, train split")
    write_domain_profile(package_dir, profile)        # or save_model_package(..., domain=profile)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import numpy as np

from .. import __version__
from ..arrays import bounding_box
from ..errors import ModelError
from ..files import write_json_atomic
from ..geometry import Geometry
from .config import ModelConfig
from .crop import crop_box_around
from .normalization import normalize_intensity

PathLike = Union[str, os.PathLike]

DOMAIN_FILE = "domain.json"
PROFILE_FORMAT = "segqc-domain-profile"
PROFILE_VERSION = 1
# Quantiles of the normalised intensity inside the network's crop (not the 1 % tails: a few background
# voxels move them).
INTENSITY_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# Histogram of the normalised intensity (z-scores for the z-score normalisations); values outside fall in the
# first or last bin.
HISTOGRAM_RANGE = (-4.0, 6.0)
HISTOGRAM_BINS = 40
# Statistics over at most this many voxels (an evenly strided subsample of larger crops): enough for quantiles
# to the 1 % level, fast on big volumes.
MAX_SAMPLED_VOXELS = 1 << 20
SPREAD_PERCENTILES = (5.0, 50.0, 95.0)


class DomainCase(NamedTuple):
    """One training case: images (one (z, y, x) array per modality, in the model's order), its ground-truth
    label map on the same grid, and the grid."""

    images: Sequence[np.ndarray]
    labels: np.ndarray
    geometry: Geometry


# --- per-case features ----------------------------------------------------------------------------
@dataclass
class ClassFeatures:
    volume_mm3: float
    extent_mm: list[float]  # bounding box, largest first
    intensity_median: list[float]  # normalised median intensity inside the class, per modality


@dataclass
class IntensityFeatures:
    quantiles: list[float]  # at INTENSITY_QUANTILES, normalised, inside the crop
    histogram: list[float]  # fraction of the crop's voxels per bin (sums to 1)


@dataclass
class CaseFeatures:
    """What the domain check measures on one case (training or new)."""

    spacing_zyx_mm: list[float]
    fov_mm: list[float]  # image extent, largest first
    crop_mm: list[float]  # extent of the crop the network sees, largest first
    intensity: list[IntensityFeatures]  # per modality
    classes: dict[int, ClassFeatures]  # every foreground label present


def histogram_edges() -> np.ndarray:
    return np.linspace(HISTOGRAM_RANGE[0], HISTOGRAM_RANGE[1], HISTOGRAM_BINS + 1)


def _sample(values: np.ndarray) -> np.ndarray:
    values = values.ravel()
    step = max(1, int(math.ceil(values.size / MAX_SAMPLED_VOXELS)))
    return values[::step]


def intensity_features(normalized: np.ndarray) -> IntensityFeatures:
    values = _sample(normalized)
    quantiles = np.quantile(values, INTENSITY_QUANTILES)
    clipped = np.clip(values, HISTOGRAM_RANGE[0], HISTOGRAM_RANGE[1])
    counts, _ = np.histogram(clipped, bins=histogram_edges())
    return IntensityFeatures([float(q) for q in quantiles], (counts / max(counts.sum(), 1)).tolist())


def _sorted_desc(values: Sequence[float]) -> list[float]:
    return sorted((float(v) for v in values), reverse=True)


def extent_mm(mask: np.ndarray, spacing_zyx_mm: Sequence[float]) -> list[float]:
    """Bounding-box extent of a non-empty mask in mm, largest first."""
    box = bounding_box(mask)
    return _sorted_desc([(b.stop - b.start) * s for b, s in zip(box, spacing_zyx_mm)])


def case_features(images: Sequence[np.ndarray], labels: np.ndarray, geometry: Geometry, config: ModelConfig
                  ) -> CaseFeatures:
    """Measure one case the way the network would see it (normalisation and crop from ``config``)."""
    labels = np.asarray(labels)
    spacing = list(geometry.spacing_zyx_mm)
    fov = [size * s for size, s in zip(labels.shape, spacing)]
    crop = crop_box_around(labels, geometry, config.crop_margin_mm)
    window = crop.slices if crop is not None else tuple(slice(None) for _ in range(3))
    crop_mm = [size * s for size, s in zip((crop.shape if crop is not None else labels.shape), spacing)]
    normalized = [normalize_intensity(image, config.normalization, config.clip_percentiles)[window]
                  for image in images]
    labels_crop = labels[window]
    voxel_mm3 = float(np.prod(spacing))
    counts = np.bincount(labels_crop.ravel().astype(np.int64)) if labels_crop.size else np.zeros(1, np.int64)
    classes: dict[int, ClassFeatures] = {}
    for label in np.flatnonzero(counts[1:]) + 1:  # labels present, not voxels
        mask = labels_crop == label
        medians = [float(np.median(_sample(image[mask]))) for image in normalized]
        classes[int(label)] = ClassFeatures(float(counts[label]) * voxel_mm3, extent_mm(mask, spacing), medians)
    return CaseFeatures(spacing, _sorted_desc(fov), _sorted_desc(crop_mm),
                        [intensity_features(image) for image in normalized], classes)


def histogram_distance(histogram: Sequence[float], reference: Sequence[float]) -> float:
    """Total variation distance of two histograms (0: identical, 1: no overlap)."""
    return 0.5 * float(np.abs(np.asarray(histogram, float) - np.asarray(reference, float)).sum())


# --- the profile ------------------------------------------------------------------------------------
@dataclass
class Spread:
    """A per-case quantity over the training cases."""

    min: float
    p05: float
    median: float
    p95: float
    max: float
    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        data = np.asarray(values, dtype=np.float64)
        if data.size == 0:
            raise ValueError("a spread needs at least one value")
        p05, median, p95 = np.percentile(data, SPREAD_PERCENTILES)
        return cls(float(data.min()), float(p05), float(median), float(p95), float(data.max()), float(data.mean()),
                   float(data.std()))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Spread:
        return cls(**{key: float(data[key]) for key in ("min", "p05", "median", "p95", "max", "mean", "std")})


@dataclass
class ClassProfile:
    name: str
    cases: int  # training cases that have the class
    volume_mm3: Spread
    extent_mm: list[Spread]  # largest first
    intensity_median: list[Spread]  # per modality

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassProfile:
        return cls(str(data["name"]), int(data["cases"]), Spread.from_dict(data["volume_mm3"]),
                   [Spread.from_dict(s) for s in data["extent_mm"]],
                   [Spread.from_dict(s) for s in data["intensity_median"]])


@dataclass
class ModalityProfile:
    name: str
    quantile_levels: list[float]
    quantiles: list[Spread]  # one per level
    histogram_edges: list[float]
    histogram: list[float]  # the training cases' histograms averaged
    histogram_distance: Spread  # of each training case's histogram to the averaged one

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModalityProfile:
        return cls(str(data["name"]), [float(v) for v in data["quantile_levels"]],
                   [Spread.from_dict(s) for s in data["quantiles"]], [float(v) for v in data["histogram_edges"]],
                   [float(v) for v in data["histogram"]], Spread.from_dict(data["histogram_distance"]))


@dataclass
class UncertaintyProfile:
    """How much the network's error maps change when the input is mirrored, on cases it knows (calibration)."""

    flip_axis_zyx: int
    cases: int
    disagreement: Spread  # see SegQCLib.network.uncertainty
    source: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UncertaintyProfile:
        return cls(int(data["flip_axis_zyx"]), int(data["cases"]), Spread.from_dict(data["disagreement"]),
                   str(data.get("source", "")))


@dataclass
class DomainProfile:
    """The training data of a model, as the domain check needs it (``domain.json`` of a model package)."""

    cases: int
    source: str
    normalization: str
    modalities: list[ModalityProfile]
    spacing_zyx_mm: list[Spread]
    fov_mm: list[Spread]  # largest first
    crop_mm: list[Spread]  # largest first
    classes: dict[int, ClassProfile]
    required_classes: list[int]  # labels every training case has
    uncertainty: Optional[UncertaintyProfile] = None
    segqc_version: str = __version__
    format: str = PROFILE_FORMAT
    version: int = PROFILE_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = {str(label): value for label, value in sorted(data["classes"].items())}
        return data

    @classmethod
    def from_dict(cls, data: Any) -> DomainProfile:
        if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
            raise ValueError(f"not a domain profile (no \"format\": \"{PROFILE_FORMAT}\")")
        if int(data.get("version", 0)) > PROFILE_VERSION:
            raise ValueError(f"profile version {data.get('version')} is newer than this SegQC reads "
                             f"({PROFILE_VERSION}); update SegQC")
        uncertainty = data.get("uncertainty")
        return cls(
            cases=int(data["cases"]), source=str(data.get("source", "")), normalization=str(data["normalization"]),
            modalities=[ModalityProfile.from_dict(m) for m in data["modalities"]],
            spacing_zyx_mm=[Spread.from_dict(s) for s in data["spacing_zyx_mm"]],
            fov_mm=[Spread.from_dict(s) for s in data["fov_mm"]],
            crop_mm=[Spread.from_dict(s) for s in data["crop_mm"]],
            classes={int(k): ClassProfile.from_dict(v) for k, v in data["classes"].items()},
            required_classes=[int(v) for v in data["required_classes"]],
            uncertainty=UncertaintyProfile.from_dict(uncertainty) if uncertainty else None,
            segqc_version=str(data.get("segqc_version", "unknown")), version=int(data["version"]),
        )


@dataclass
class _Collected:
    """Per-case features gathered while streaming the training cases."""

    spacing: list[list[float]] = field(default_factory=list)
    fov: list[list[float]] = field(default_factory=list)
    crop: list[list[float]] = field(default_factory=list)
    intensity: list[list[IntensityFeatures]] = field(default_factory=list)
    classes: dict[int, list[ClassFeatures]] = field(default_factory=dict)
    present: list[set[int]] = field(default_factory=list)


def _spreads(rows: Sequence[Sequence[float]]) -> list[Spread]:
    return [Spread.of(column) for column in zip(*rows)]


def build_domain_profile(cases: Iterable[Union[DomainCase, tuple]], config: ModelConfig, source: str = ""
                         ) -> DomainProfile:
    """The domain profile of a model trained on ``cases``.

    ``cases``: (images, labels, geometry) per training case -- images a list of (z, y, x) arrays, one per
    modality in ``config.modalities`` order (a single array is taken as one modality), ``labels`` the
    ground-truth label map on the same grid, ``geometry`` its :class:`~SegQCLib.geometry.Geometry`.  Any
    iterable works (a generator reading one case at a time keeps memory flat).  Give the training cases only:
    validation cases must stay unseen to measure how often the check flags cases the model does know.
    ``config`` supplies the normalisation, crop margin, class names and modalities; ``source`` is free text
    recorded in the profile (dataset, split).
    """
    collected = _Collected()
    for index, case in enumerate(cases):
        images, labels, geometry = case
        images = [images] if isinstance(images, np.ndarray) else list(images)
        if len(images) != len(config.modalities):
            raise ModelError(f"Training case {index + 1} has {len(images)} image(s); the model has "
                             f"{len(config.modalities)} modalities ({', '.join(config.modalities)})")
        features = case_features(images, labels, geometry, config)
        collected.spacing.append(features.spacing_zyx_mm)
        collected.fov.append(features.fov_mm)
        collected.crop.append(features.crop_mm)
        collected.intensity.append(features.intensity)
        collected.present.append(set(features.classes))
        for label, values in features.classes.items():
            collected.classes.setdefault(label, []).append(values)
    if not collected.spacing:
        raise ModelError("A domain profile needs at least one training case")
    modalities = []
    for channel, name in enumerate(config.modalities):
        per_case = [case[channel] for case in collected.intensity]
        pooled = np.mean([f.histogram for f in per_case], axis=0)
        modalities.append(ModalityProfile(
            name, list(INTENSITY_QUANTILES), _spreads([f.quantiles for f in per_case]), histogram_edges().tolist(),
            pooled.tolist(), Spread.of([histogram_distance(f.histogram, pooled) for f in per_case])))
    classes = {}
    for label in config.labels:
        rows = collected.classes.get(label, [])
        if not rows:
            continue
        classes[label] = ClassProfile(
            config.classes[label], len(rows), Spread.of([r.volume_mm3 for r in rows]),
            _spreads([r.extent_mm for r in rows]), _spreads([r.intensity_median for r in rows]))
    required = sorted(set.intersection(*collected.present) & set(config.labels))
    return DomainProfile(len(collected.spacing), source, config.normalization, modalities,
                         _spreads(collected.spacing), _spreads(collected.fov), _spreads(collected.crop), classes,
                         required)


# --- domain.json ------------------------------------------------------------------------------------
def domain_path(package_dir: PathLike) -> Path:
    return Path(package_dir) / DOMAIN_FILE


def read_domain_profile(package_dir: PathLike) -> Optional[DomainProfile]:
    """The package's profile, None when it has none (older packages); ModelError when it is unreadable."""
    path = domain_path(package_dir)
    if not path.is_file():
        return None
    try:
        return DomainProfile.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"Domain profile {path} is unreadable ({exc}); rebuild it with `segqc model profile "
                         f"{Path(package_dir)} --data DIR` or delete it (then no domain check is possible)") from exc


def write_domain_profile(package_dir: PathLike, profile: DomainProfile) -> Path:
    """Write (atomically) or replace the package's ``domain.json``."""
    return write_json_atomic(domain_path(package_dir), profile.to_dict())
