"""The QC network's configuration (``config.json`` of a model package): architecture, classes, input preparation.

Plain data and validation, no torch: reading a package's classes and modalities (the Slicer module's
segment table, exports) does not need the network.  :mod:`SegQCLib.network.qcresunet` builds the
network from it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import ModelError
from ..files import NotARegularFileError, open_regular_file
from .config_schema import coerce_config_values

CONFIG_FILE = "config.json"
HIPPOCAMPUS_CLASSES = {1: "anterior", 2: "posterior"}


class OutputKind(str, Enum):
    """What the voxel head predicts (see :mod:`SegQCLib.network.qcresunet`)."""

    ERROR = "error"
    TRUTH = "truth"


class Normalization(str, Enum):
    """Per-case intensity normalisation applied to every modality before the network."""

    ZSCORE_NONZERO = "zscore_nonzero"  # mean/std over nonzero voxels (MRI with zero background)
    ZSCORE = "zscore"  # mean/std over all voxels
    PERCENTILE_ZSCORE = "percentile_zscore"  # clip to percentiles of the nonzero voxels, then z-score
    NONE = "none"


class UnknownKeys(str, Enum):
    """What reading a configuration does with a key that is not a :class:`ModelConfig` field."""

    # A package's config.json (possibly written by a newer SegQC): the keys are kept under ``extra`` and
    # reported (ModelConfig.unknown_keys, a warning in the log and a notice in every report) but have no effect.
    KEEP = "keep"
    # A configuration a user writes (segqc model init --config): a misspelt key must not be silently ignored.
    REFUSE = "refuse"


# Keys a package's config.json must define: without them the architecture is not determined.
REQUIRED_CONFIG_KEYS = ("classes", "modalities", "widths", "blocks_per_stage", "strides", "patch_size_zyx")
# Keys of config.json that describe the package, not the network (read by network/package.py, not kept here).
PACKAGE_KEYS = ("weights_sha256",)


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network and to prepare its input; stored as config.json."""

    name: str = "segqc-qcresunet-small"
    version: str = "0.1.0"
    classes: dict[int, str] = field(default_factory=lambda: dict(HIPPOCAMPUS_CLASSES))
    modalities: list[str] = field(default_factory=lambda: ["MRI"])
    include_background_channel: bool = False
    # architecture
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    blocks_per_stage: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    strides: list[list[int]] = field(default_factory=lambda: [[2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
    decoder_from_stage: int = 2
    decoder_convs: int = 1
    full_res_width: int = 4
    full_res_kernel: int = 3  # 1 makes the full-resolution step pointwise (cheapest; context from 1/2 scale)
    eca_kernel_size: int = 3
    dropout: float = 0.1
    case_head_hidden: int = 64
    output: str = OutputKind.ERROR.value
    truth_temperature: float = 1.0
    predict_nsd: bool = True
    # False when the case head's Dice/NSD did not hold up in validation: reports then leave dice_pred and
    # nsd_pred out (null) rather than show a number that only looks like an estimate.
    report_case_head: bool = True
    nsd_tolerance_mm: float = 1.0
    # input preparation and inference
    patch_size_zyx: list[int] = field(default_factory=lambda: [48, 64, 48])
    target_spacing_zyx_mm: Optional[list[float]] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    normalization: str = Normalization.ZSCORE_NONZERO.value
    clip_percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])
    crop_margin_mm: float = 10.0
    window_overlap: float = 0.25
    # Test-time augmentation: the (z, y, x) axes of each extra flipped pass averaged with the plain one
    # (e.g. [[2]] adds a left-right flip); empty = a single pass.
    tta_flips: list[list[int]] = field(default_factory=list)
    # provenance
    trained: bool = False
    training_data: str = ""
    license: str = ""
    validation_metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # --- derived ------------------------------------------------------------------------------
    @property
    def labels(self) -> list[int]:
        """Foreground labels in channel order."""
        return sorted(self.classes)

    @property
    def mask_labels(self) -> list[int]:
        """Labels of the one-hot mask channels fed to the network."""
        return ([0] if self.include_background_channel else []) + self.labels

    @property
    def in_channels(self) -> int:
        return len(self.modalities) + len(self.mask_labels)

    @property
    def total_stride_zyx(self) -> list[int]:
        return [math.prod(s[axis] for s in self.strides) for axis in range(3)]

    # --- validation and (de)serialisation ------------------------------------------------------
    def validate(self) -> None:
        """Types and ranges of every field (:mod:`.config_schema`), then how the fields fit together."""
        coerce_config_values({f.name: getattr(self, f.name) for f in fields(self)})
        problems = []
        if not self.classes:
            problems.append("classes is empty (need at least one foreground class)")
        if any(int(label) <= 0 for label in self.classes):
            problems.append(f"class labels must be > 0 (background is implicit), got {sorted(self.classes)}")
        if not self.modalities:
            problems.append("modalities is empty (need at least one image channel)")
        stages = len(self.widths)
        if stages < 2:
            problems.append("widths needs at least two stages")
        if len(self.blocks_per_stage) != stages or len(self.strides) != stages:
            problems.append(f"widths ({stages}), blocks_per_stage ({len(self.blocks_per_stage)}) and strides "
                            f"({len(self.strides)}) need one entry per stage")
        if any(len(s) != 3 or min(s) < 1 for s in self.strides):
            problems.append(f"each stride is three positive integers (z, y, x), got {self.strides}")
        if not 0 <= self.decoder_from_stage < stages:
            problems.append(f"decoder_from_stage {self.decoder_from_stage} is not a stage index 0..{stages - 1}")
        if len(self.patch_size_zyx) != 3:
            problems.append(f"patch_size_zyx needs three values, got {self.patch_size_zyx}")
        elif not problems:
            total = self.total_stride_zyx
            if any(p % t for p, t in zip(self.patch_size_zyx, total)):
                problems.append(f"patch_size_zyx {self.patch_size_zyx} is not divisible by the total stride {total}")
            if any(p // t < 2 for p, t in zip(self.patch_size_zyx, total)):
                problems.append(f"patch_size_zyx {self.patch_size_zyx} leaves less than 2 voxels per axis at the "
                                f"bottleneck (total stride {total}); instance norm needs more")
        if self.normalization not in {n.value for n in Normalization}:
            problems.append(f"normalization {self.normalization!r} is not one of {[n.value for n in Normalization]}")
        if self.tta_flips and any(len(set(f)) != len(f) for f in self.tta_flips):
            problems.append(f"tta_flips must be lists of distinct axes 0, 1, 2, got {self.tta_flips!r}")
        if self.output not in {k.value for k in OutputKind}:
            problems.append(f"output {self.output!r} is not one of {[k.value for k in OutputKind]}")
        if problems:
            raise ModelError("Invalid model configuration: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = {str(k): v for k, v in sorted(self.classes.items())}
        return data

    @property
    def unknown_keys(self) -> list[str]:
        """Top-level keys of the file that are not configuration fields (kept in ``extra``, without effect)."""
        return sorted(getattr(self, "_unknown_keys", []))

    @classmethod
    def from_dict(cls, data: Any, base: Optional[ModelConfig] = None, require_complete: bool = True,
                  unknown_keys: UnknownKeys = UnknownKeys.KEEP) -> ModelConfig:
        """Build a config from JSON data; with ``base`` the data overrides a copy of ``base``.

        Unknown keys are kept in ``extra`` (newer packages stay loadable).  ``require_complete``
        demands the architecture keys, so an empty or partial config.json is refused rather than
        silently turned into the default network.
        """
        if not isinstance(data, dict):
            raise ModelError(f"Model configuration must be a JSON object, got {type(data).__name__}")
        if require_complete:
            missing = [key for key in REQUIRED_CONFIG_KEYS if key not in data]
            if missing:
                raise ModelError(f"Model configuration is missing required keys: {', '.join(missing)}"
                                 + (" (the config is empty)" if not data else ""))
        known = {f.name for f in fields(cls)}
        unknown = sorted(key for key in data if key not in known and key not in PACKAGE_KEYS)
        if unknown and unknown_keys is UnknownKeys.REFUSE:
            raise ModelError(f"Model configuration has unknown key(s) {', '.join(unknown)}; the fields are: "
                             f"{', '.join(sorted(known))}")
        values = base.to_dict() if base is not None else {}
        extra = dict(values.get("extra", {}))
        for key, value in data.items():
            if key in known:
                values[key] = value
            elif key not in PACKAGE_KEYS:
                extra[key] = value
        values["extra"] = extra
        # Types and ranges first, in our words ("48" is refused, not read as [4, 8]); then the cross-field checks.
        config = cls(**coerce_config_values(values))
        config._unknown_keys = unknown  # type: ignore[attr-defined]  # not a field: not written back
        return config


def reference_qcresunet_config(in_modalities: int = 1, classes: Optional[dict[int, str]] = None) -> ModelConfig:
    """The published QCResUNet size: ResNet-34 3D encoder (3/4/6/3 blocks), widths 32/64/128/256,
    stride 2 everywhere, decoder from stage 3 with two conv blocks per scale."""
    return ModelConfig(
        name="qcresunet-reference", classes=dict(classes or HIPPOCAMPUS_CLASSES),
        modalities=[f"modality{i}" for i in range(in_modalities)],
        widths=[32, 64, 128, 256], blocks_per_stage=[3, 4, 6, 3], strides=[[2, 2, 2]] * 4,
        decoder_from_stage=2, decoder_convs=2, full_res_width=16, dropout=0.3, case_head_hidden=128,
        patch_size_zyx=[160, 192, 160],
    )


def read_config(path: Union[str, os.PathLike], base: Optional[ModelConfig] = None,
                require_complete: bool = True, unknown_keys: UnknownKeys = UnknownKeys.KEEP) -> ModelConfig:
    """Read and validate a package's config.json (or a standalone config file).

    ``base``, ``require_complete`` and ``unknown_keys`` are passed to :meth:`ModelConfig.from_dict` (a partial
    file overriding ``base``; keys that are not fields kept or refused)."""
    data, path = read_config_json(path)
    try:
        return ModelConfig.from_dict(data, base=base, require_complete=require_complete, unknown_keys=unknown_keys)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc


# A configuration is a few kilobytes; a much larger "config.json" is not one (and is not read into memory).
MAX_CONFIG_BYTES = 16 << 20


def read_config_json(path: Union[str, os.PathLike]) -> tuple[Any, Path]:
    """The parsed JSON of a config.json (or of the config.json in a folder) and its path; ModelError otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    if not path.exists():
        raise ModelError(f"Model configuration not found: {path}")
    try:
        with open_regular_file(path) as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except NotARegularFileError as exc:
        raise ModelError(f"Model configuration {path} is {exc.kind}, not a file; refused") from exc
    except OSError as exc:
        raise ModelError(f"Model configuration {path} cannot be read ({exc.strerror or exc})") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ModelError(f"Model configuration {path} is larger than {MAX_CONFIG_BYTES >> 20} MB: not a config.json")
    try:
        return json.loads(raw.decode("utf-8")), path
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"Model configuration {path} is not valid JSON ({exc})") from exc
