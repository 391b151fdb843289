"""One correction record: its metadata (``record.json``), its files, and checking both against the checksums."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import InputError
from ..files import NotARegularFileError, describe_path, read_bytes, sha256_file
from ..io.image_files import read_image, read_labelmap
from ..io.volumes import LabelMap, SegmentStyle, Volume
from .box_review import BoxReview
from .names import RECORD_FILE, RECORD_FORMAT_VERSION


@dataclass
class RecordMetadata:
    """Everything ``record.json`` holds about one correction."""

    record_id: str
    case_id: str
    case_key: str
    version: int
    created_utc: str
    reviewer: Optional[str]
    segqc_version: str
    labels: list[int]
    label_names: dict[str, str]
    image_files: list[str]
    original_file: str
    corrected_file: str
    error_files: dict[str, str]
    geometry: dict[str, Any]
    true_metrics: dict[str, Any]
    files: dict[str, dict[str, Any]]
    model: Optional[dict[str, Any]] = None
    qc_prediction: Optional[dict[str, Any]] = None
    # Per reviewed box: the report's box fields, its status and, optionally, what happened to its suggested
    # edit ("decision": accepted / rejected / edited, "edit_outcome"); see SegQCLib.corrections.box_review.
    reviewed_boxes: list[dict[str, Any]] = field(default_factory=list)
    review_duration_s: Optional[float] = None
    rating: Optional[str] = None  # SegQCLib.review.rating.CaseRating value
    segment_styles: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> colour and terminology
    sources: dict[str, Any] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)  # e.g. an input whose NIfTI sform and qform disagree
    format_version: int = RECORD_FORMAT_VERSION

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordMetadata:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def box_reviews(self) -> list[BoxReview]:
        """The reviewed boxes, typed (records from before suggestions existed have no decisions: None)."""
        return [BoxReview.from_dict(box) for box in self.reviewed_boxes]


def metadata_digest(data: dict[str, Any]) -> str:
    """sha256 of the metadata without its own checksum field (what ``metadata_sha256`` holds)."""
    body = {k: v for k, v in data.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode("utf-8")).hexdigest()


@dataclass
class CorrectionRecord:
    """One committed correction; ``metadata`` and the arrays are read from disk on demand."""

    record_id: str
    case_id: str
    case_key: str
    version: int
    created_utc: str
    reviewer: Optional[str]
    path: Path
    dice_original_vs_corrected: Optional[float] = None
    _metadata: Optional[RecordMetadata] = field(default=None, repr=False, compare=False)

    @property
    def metadata(self) -> RecordMetadata:
        if self._metadata is None:
            self._metadata = read_record_metadata(self.path)
        return self._metadata

    @property
    def image_paths(self) -> list[Path]:
        return [self.path / name for name in self.metadata.image_files]

    @property
    def original_path(self) -> Path:
        return self.path / self.metadata.original_file

    @property
    def corrected_path(self) -> Path:
        return self.path / self.metadata.corrected_file

    @property
    def error_map_paths(self) -> dict[int, Path]:
        return {int(label): self.path / name for label, name in self.metadata.error_files.items()}

    def read_images(self) -> list[Volume]:
        return [read_image(p) for p in self.image_paths]

    def read_original(self) -> LabelMap:
        return _with_names(read_labelmap(self.original_path), self.metadata)

    def read_corrected(self) -> LabelMap:
        return _with_names(read_labelmap(self.corrected_path), self.metadata)

    def read_error_maps(self) -> dict[int, np.ndarray]:
        return {label: read_labelmap(p).array.astype(bool) for label, p in self.error_map_paths.items()}

    def index_entry(self) -> dict[str, Any]:
        return {"record_id": self.record_id, "case_id": self.case_id, "case_key": self.case_key,
                "version": self.version, "created_utc": self.created_utc, "reviewer": self.reviewer,
                "dice_original_vs_corrected": self.dice_original_vs_corrected}


def _with_names(labelmap: LabelMap, metadata: RecordMetadata) -> LabelMap:
    """The record's segment names, colours and terminology on a label map read from its NIfTI file."""
    labelmap.names = {int(k): v for k, v in metadata.label_names.items()}
    labelmap.styles = {int(k): SegmentStyle(tuple(v["color_rgb"]) if v.get("color_rgb") else None,
                                            v.get("terminology"))
                       for k, v in metadata.segment_styles.items()}
    return labelmap


def read_record_metadata(record_dir: Path) -> RecordMetadata:
    """Parse and self-check ``record.json``; InputError says what is wrong."""
    path = Path(record_dir) / RECORD_FILE
    try:
        data = json.loads(read_bytes(path, follow_links=False).decode("utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{path} is missing") from exc
    except NotARegularFileError as exc:
        raise InputError(f"{path} is {describe_path(path)}; SegQC never follows links inside a store") from exc
    except OSError as exc:
        raise InputError(f"{path} cannot be read ({exc})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path} does not hold a JSON object")
    if data.get("metadata_sha256") != metadata_digest(data):
        raise InputError(f"{path} was modified or damaged after it was written (metadata checksum mismatch)")
    try:
        return RecordMetadata.from_dict(data)
    except TypeError as exc:
        raise InputError(f"{path} lacks required fields ({exc})") from exc


def record_from_metadata(metadata: RecordMetadata, path: Path) -> CorrectionRecord:
    return CorrectionRecord(metadata.record_id, metadata.case_id, metadata.case_key, metadata.version,
                            metadata.created_utc, metadata.reviewer, path,
                            metadata.true_metrics.get("dice"), metadata)


def record_from_index_entry(entry: dict[str, Any], path: Path) -> CorrectionRecord:
    return CorrectionRecord(entry["record_id"], entry["case_id"], entry["case_key"], int(entry["version"]),
                            entry["created_utc"], entry.get("reviewer"), path, entry.get("dice_original_vs_corrected"))


def sorted_records(records: list[CorrectionRecord]) -> list[CorrectionRecord]:
    return sorted(records, key=lambda r: (r.case_key, r.version))


def check_record(record_id: str, path: Path) -> tuple[Optional[RecordMetadata], Optional[str]]:
    """(metadata, None) for a whole record, (metadata or None, what is wrong) otherwise."""
    try:
        metadata = read_record_metadata(path)
    except InputError as exc:
        return None, str(exc)
    if metadata.record_id != record_id:
        return metadata, f"record.json names {metadata.record_id!r}"
    try:
        return metadata, check_record_files(path, metadata)
    except OSError as exc:
        return metadata, f"cannot read its files ({exc})"


def check_record_files(path: Path, metadata: RecordMetadata) -> Optional[str]:
    """None when every listed file is present with its size and sha256 and nothing else is there."""
    expected = set(metadata.image_files) | {metadata.original_file, metadata.corrected_file}
    expected |= set(metadata.error_files.values())
    if set(metadata.files) != expected:
        return "record.json lists inconsistent files"
    for name, info in sorted(metadata.files.items()):
        file_path = path / name
        if os.path.islink(file_path):
            return f"{name} is {describe_path(file_path)} (SegQC never follows links inside a store)"
        if not file_path.is_file():
            return f"{name} is missing"
        if file_path.stat().st_size != info.get("bytes"):
            return f"{name} has {file_path.stat().st_size} bytes, expected {info.get('bytes')}"
        if sha256_file(file_path, follow_links=False) != info.get("sha256"):
            return f"{name} does not match its sha256 checksum"
    extra = sorted(p.name for p in path.iterdir() if p.name not in expected and p.name != RECORD_FILE)
    if extra:
        return f"unexpected files in the record: {extra[:3]}"
    return None
