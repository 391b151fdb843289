"""The QC report: typed dataclasses, written as ``report.json`` (the contract front ends rely on).

Contract (documented in README.md): ``segqc_version``; ``slice_axis`` (numpy axis of the (z,y,x)
array); ``case`` {``dice_est``, ``qi``, optional ``dice_pred``/``nsd_pred``}; ``classes`` [{``label``,
``name``, ``dice_est``, ``iou_est``, ``arvd_est``, ...}]; ``slices`` [{``index``, ``error_score``,
``dice_est``: {"<label>": value or null}}] sorted by error_score descending; ``boxes`` [{``label``,
``slice``, ``bbox_zyx`` [[z0,y0,x0],[z1,y1,x1]] (end exclusive), ``center_ras``, ``size_mm``,
``area_mm2``, ``score``}] sorted by score descending; ``timing_s``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .. import __version__, files
from ..errors import InputError

REPORT_FILE_NAME = "report.json"
ERROR_PROB_PATTERN = "error_prob_{label}.nii.gz"


@dataclass
class CaseEstimate:
    dice_est: Optional[float]
    qi: float
    iou_est: Optional[float] = None
    dice_pred: Optional[float] = None
    nsd_pred: Optional[float] = None


@dataclass
class ClassEstimate:
    label: int
    name: str
    dice_est: Optional[float]
    iou_est: Optional[float]
    arvd_est: Optional[float]
    rvd_est: Optional[float] = None
    volume_mm3: float = 0.0
    volume_est_mm3: float = 0.0
    error_volume_mm3: float = 0.0


@dataclass
class SliceEntry:
    index: int
    error_score: float
    dice_est: dict[str, Optional[float]] = field(default_factory=dict)


@dataclass
class ErrorBox:
    label: int
    slice: int
    bbox_zyx: list[list[int]]
    center_ras: list[float]
    center_lps: list[float]
    size_mm: list[float]
    area_mm2: float
    score: float
    max_prob: float = 0.0


@dataclass
class Report:
    slice_axis: int
    case: CaseEstimate
    classes: list[ClassEstimate]
    slices: list[SliceEntry]
    boxes: list[ErrorBox]
    timing_s: dict[str, float] = field(default_factory=dict)
    geometry: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    device: Optional[str] = None
    model: Optional[dict[str, Any]] = None
    segqc_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return _clean_floats(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        try:
            return cls(
                slice_axis=int(data["slice_axis"]),
                case=CaseEstimate(**data["case"]),
                classes=[ClassEstimate(**c) for c in data["classes"]],
                slices=[SliceEntry(**s) for s in data["slices"]],
                boxes=[ErrorBox(**b) for b in data["boxes"]],
                timing_s=dict(data.get("timing_s", {})),
                geometry=dict(data.get("geometry", {})),
                inputs=dict(data.get("inputs", {})),
                parameters=dict(data.get("parameters", {})),
                notices=list(data.get("notices", [])),
                device=data.get("device"),
                model=data.get("model"),
                segqc_version=str(data.get("segqc_version", "unknown")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"Not a SegQC report (missing or malformed field: {exc})") from exc

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON atomically (a reader never sees a half-written report)."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Report:
        path = Path(path)
        if path.is_dir():
            path = path / REPORT_FILE_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputError(f"Report not found: {path}") from exc
        except json.JSONDecodeError as exc:
            raise InputError(f"Report {path} is not valid JSON ({exc})") from exc
        return cls.from_dict(data)


def _clean_floats(value: Any) -> Any:
    """JSON has no NaN/inf: undefined metrics (e.g. Dice of an empty class) are written as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_floats(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _clean_floats(value.item())
    return value


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON atomically, undefined numbers (NaN, inf) as null."""
    return files.write_json_atomic(path, _clean_floats(data))
