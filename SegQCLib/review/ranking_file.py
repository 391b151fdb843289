"""Reading a ``segqc rank`` output folder for review: its ``ranking.csv`` (worst case first) and, per case, the
report, the error maps and the image and segmentation files the report was made from.

The reader is tolerant of what ``segqc rank`` may add: columns it does not know are kept in
:attr:`RankedCase.extra`, columns it knows may be missing except ``case_id`` and ``report``, and a number it
cannot read is left undefined with a warning rather than refusing the whole ranking.  Where the ranking names
the inputs itself (``image`` / ``seg`` columns, modalities separated by ``;``) they are used; otherwise they come
from each report's ``inputs``.  Relative paths are taken relative to the output folder, then to the current
folder.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import InputError

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

RANKING_FILE = "ranking.csv"  # as SegQCLib.batch.results writes it
FAILURES_FILE = "failures.json"
REQUIRED_COLUMNS = ("case_id", "report")
KNOWN_COLUMNS = ("rank", "case_id", "dice_est", "dice_pred", "qi", "n_boxes", "worst_slice", "report", "status",
                 "image", "seg")
MODALITY_SEPARATOR = ";"


@dataclass(frozen=True)
class CaseFiles:
    """What a reviewer opens for a case: its image(s), its segmentation, its QC report and error maps' folder."""

    images: tuple[Path, ...]
    segmentation: Path
    report: Path

    @property
    def result_dir(self) -> Path:
        return self.report.parent


@dataclass(frozen=True)
class RankedCase:
    """One row of ``ranking.csv``."""

    case_id: str
    report: Path  # absolute
    rank: Optional[int] = None
    dice_est: Optional[float] = None
    dice_pred: Optional[float] = None
    qi: Optional[float] = None
    n_boxes: Optional[int] = None
    worst_slice: Optional[int] = None
    batch_status: str = ""
    image_column: str = ""
    seg_column: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ranking:
    """A ranking as read: its folder, its cases in file order (worst first) and the cases QC failed on."""

    folder: Path
    cases: tuple[RankedCase, ...]
    failed: tuple[dict[str, Any], ...] = ()

    def index_of(self, case_id: str) -> int:
        for index, case in enumerate(self.cases):
            if case.case_id == case_id:
                return index
        raise InputError(f"Case {case_id!r} is not in the ranking of {self.folder}")


def ranking_path(path: PathLike) -> Path:
    """The ``ranking.csv`` of a ``segqc rank`` output folder, or the given ranking file itself."""
    path = Path(path).expanduser()
    candidate = path / RANKING_FILE if path.is_dir() else path
    if not candidate.is_file():
        raise InputError(f"No {RANKING_FILE} at {path}: open the output folder of `segqc rank` or its {RANKING_FILE}")
    return candidate


def read_ranking(path: PathLike) -> Ranking:
    """Read a ranking (folder or file); InputError when it cannot be used at all."""
    csv_path = ranking_path(path)
    folder = csv_path.parent
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read {csv_path}: {exc}") from exc
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"{csv_path} has no column(s) {', '.join(missing)}: is it a `segqc rank` ranking?")
    cases, seen = [], set()
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        case_id = row.get("case_id", "")
        if not case_id:
            continue
        if case_id in seen:
            logger.warning("%s line %d: case %s appears again; the first row is used", csv_path, line, case_id)
            continue
        seen.add(case_id)
        if not row.get("report"):
            logger.warning("%s line %d: case %s has no report; left out of the queue", csv_path, line, case_id)
            continue
        cases.append(RankedCase(
            case_id=case_id, report=_resolve(row["report"], folder), rank=_number(row, "rank", int, csv_path, line),
            dice_est=_number(row, "dice_est", float, csv_path, line),
            dice_pred=_number(row, "dice_pred", float, csv_path, line), qi=_number(row, "qi", float, csv_path, line),
            n_boxes=_number(row, "n_boxes", int, csv_path, line),
            worst_slice=_number(row, "worst_slice", int, csv_path, line), batch_status=row.get("status", ""),
            image_column=row.get("image", ""), seg_column=row.get("seg", ""),
            extra={k: v for k, v in row.items() if k not in KNOWN_COLUMNS}))
    return Ranking(folder, tuple(cases), tuple(_failures(folder)))


def case_files(case: RankedCase, folder: PathLike) -> CaseFiles:
    """The files of a ranked case; InputError says which one is missing and where it was looked for."""
    folder = Path(folder)
    if not case.report.is_file():
        raise InputError(f"The report of case {case.case_id} is missing: {case.report}")
    if case.image_column and case.seg_column:
        images = [p for p in case.image_column.split(MODALITY_SEPARATOR) if p.strip()]
        segmentation = case.seg_column
    else:
        inputs = _report_inputs(case.report)
        images, segmentation = inputs.get("images") or [], inputs.get("segmentation")
    if not images or not segmentation:
        raise InputError(f"The report of case {case.case_id} ({case.report}) does not say which image and "
                         "segmentation it was made from")
    image_paths = tuple(_existing(p, folder, f"image of case {case.case_id}") for p in images)
    return CaseFiles(image_paths, _existing(segmentation, folder, f"segmentation of case {case.case_id}"),
                     case.report)


def _report_inputs(report: Path) -> dict[str, Any]:
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"Cannot read the report {report}: {exc}") from exc
    inputs = data.get("inputs") if isinstance(data, dict) else None
    return inputs if isinstance(inputs, dict) else {}


def _resolve(value: str, folder: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (folder / path).resolve()


def _existing(value: str, folder: Path, what: str) -> Path:
    path = Path(str(value).strip()).expanduser()
    candidates: Sequence[Path] = [path] if path.is_absolute() else [folder / path, Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise InputError(f"The {what} is not found: {value} (looked at {', '.join(str(c) for c in candidates)})")


def _number(row: dict[str, str], column: str, kind: type, source: Path, line: int) -> Optional[Any]:
    text = row.get(column, "")
    if text == "":
        return None
    try:
        value = kind(float(text)) if kind is int else float(text)
    except ValueError:
        logger.warning("%s line %d: %s %r is not a number; left undefined", source, line, column, text)
        return None
    return value if not (isinstance(value, float) and not math.isfinite(value)) else None


def _failures(folder: Path) -> list[dict[str, Any]]:
    path = folder / FAILURES_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("Cannot read %s: %s", path, exc)
        return []
    return [entry for entry in data if isinstance(entry, dict)] if isinstance(data, list) else []
