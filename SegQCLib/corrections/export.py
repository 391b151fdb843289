"""Exports of a corrections store: training data for the segmenter (nnU-Net v2, MONAI) and for the QC network.

By default the newest version of each case is exported (``all_versions=True`` exports every version,
named ``<case_key>_v0002``).  Every record is checksum-verified before anything is written, and the
export is built in a temporary sibling folder that is renamed into place at the end: the output folder
holds a complete export or does not exist.  Files are copied byte for byte from the records (they are
already NIfTI), so the images and masks keep their exact geometry and voxel types; every copy and manifest
is read back and checked (copies against the record's sha256) before the folder is renamed into place, so
a full disk ends the export with an error, never with a short file in a complete-looking export.

Layouts (``<case>`` is the record's case key, safe as a file name):

``nnunet`` (nnU-Net v2 raw dataset; name the folder ``DatasetXXX_Name`` under ``$nnUNet_raw``)::

    imagesTr/<case>_0000.nii.gz ...   one file per channel
    labelsTr/<case>.nii.gz            the corrected segmentation
    dataset.json                      channel_names, labels {"background": 0, name: label, ...} (labels
                                      0..max, consecutive as nnU-Net requires), numTraining, file_ending
    splits_final.json                 5 folds (fewer with fewer cases), every version of a case in one fold;
                                      nnU-Net reads it from $nnUNet_preprocessed/DatasetXXX_Name/
    segqc_export.json                 provenance: record id, reviewer and sha256 of every exported case

``monai``: the same ``imagesTr``/``labelsTr`` files plus ``datalist.json``
``{"training": [{"image": "imagesTr/<case>_0000.nii.gz", "label": "labelsTr/<case>.nii.gz", "fold": 0}],
"labels": ...}`` (paths relative to the datalist's folder, as ``monai.data.load_decathlon_datalist``
expects; ``image`` is a list when there are several channels; ``fold`` as in ``splits_final.json``).

Channel names, label names and folds: :mod:`.export_metadata`.

``qc`` (training data for the QC network; read it with :func:`load_qc_dataset`)::

    imagesTr/<case>_0000.nii.gz ...   image channels
    labelsTr/<case>.nii.gz            truth T = the corrected segmentation
    queriesTr/<case>.nii.gz           query M = the segmentation before review
    errorsTr/<case>_label<c>.nii.gz   true error map E_c = (M == c) xor (T == c), uint8, one per class
    qc_dataset.json                   {"format": "segqc-qc-training", "format_version": 1, "labels",
                                      "channel_names", "cases": [{"case", "case_id", "record_id",
                                      "images", "query", "truth", "errors": {"<c>": path},
                                      "true_metrics", "qc_prediction", "reviewer", "model"}]}

``imagesTr``/``labelsTr`` follow the nnU-Net naming, so ``SegQCLib.io.datasets.list_nnunet_cases`` lists a
``qc`` export too (image + truth), and the queries sit beside them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

from .. import __version__
from ..errors import InputError, SegQCError, WriteError
from ..files import NotARegularFileError, json_bytes, open_regular_file, sha256_file, write_bytes_synced
from ..network.config import ModelConfig, read_config
from .export_metadata import group_folds, label_table, nnunet_splits, resolve_channel_names
from .records import CorrectionRecord
from .store import CorrectionStore

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

FILE_ENDING = ".nii.gz"
NNUNET_DATASET_FILE = "dataset.json"
MONAI_DATALIST_FILE = "datalist.json"
QC_DATASET_FILE = "qc_dataset.json"
PROVENANCE_FILE = "segqc_export.json"
NNUNET_SPLITS_FILE = "splits_final.json"
NNUNET_FOLDER_RE = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_.-]+$")
QC_FORMAT = "segqc-qc-training"
QC_FORMAT_VERSION = 1
IMAGES_DIR = "imagesTr"
LABELS_DIR = "labelsTr"
QUERIES_DIR = "queriesTr"
ERRORS_DIR = "errorsTr"


class ExportFormat(str, Enum):
    NNUNET = "nnunet"
    MONAI = "monai"
    QC = "qc"


@dataclass
class ExportedCase:
    case: str
    record_id: str
    images: list[str]
    label: str
    query: Optional[str] = None
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class ExportResult:
    out_dir: Path
    format: ExportFormat
    cases: list[ExportedCase]
    labels: dict[str, int]
    channel_names: list[str]
    folds: dict[str, int] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)


@dataclass
class QCTrainingCase:
    """One QC training example read back from a ``qc`` export (absolute paths)."""

    case: str
    case_id: str
    record_id: str
    images: list[Path]
    query: Path
    truth: Path
    errors: dict[int, Path]
    true_metrics: dict[str, Any]
    qc_prediction: Optional[dict[str, Any]] = None


def select_records(store: CorrectionStore, all_versions: bool = False,
                   record_ids: Optional[Sequence[str]] = None) -> list[CorrectionRecord]:
    """The newest record of each case (every version with ``all_versions``), or exactly ``record_ids``."""
    if record_ids is not None:
        listed = {r.record_id: r for r in store.list()}
        missing = [r for r in record_ids if r not in listed]
        if missing:
            raise InputError(f"Correction record(s) not in the store {store.root}: {', '.join(missing[:5])}"
                             + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        records = [listed[r] for r in dict.fromkeys(record_ids)]
    else:
        records = store.list() if all_versions else store.latest()
    if not records:
        raise InputError(f"Corrections store {store.root} has no records to export")
    return records


def export_store(
    store: CorrectionStore,
    export_format: Union[ExportFormat, str],
    out_dir: PathLike,
    all_versions: bool = False,
    channel_names: Optional[list[str]] = None,
    dataset_name: str = "SegQCCorrections",
    model: Optional[Union[PathLike, ModelConfig]] = None,
    record_ids: Optional[Sequence[str]] = None,
) -> ExportResult:
    """Write the store's records as ``export_format`` into the new (or empty) folder ``out_dir``.

    ``record_ids`` exports exactly these records (e.g. the fixed cases of a review queue) instead of the newest
    version of every case; an id not in the store is an InputError before anything is written.

    ``model`` (a QC model package or its config) names the channels (its modalities) and the labels (its
    classes); without it the QC model named in the records' QC reports does, when it is readable here.
    nnU-Net and MONAI exports need channel names: given, or from a model (InputError otherwise).
    """
    export_format = ExportFormat(export_format)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(f"Export folder {out_dir} exists and is not empty; choose a new folder")
    config = read_config(model) if model is not None and not isinstance(model, ModelConfig) else model
    summaries = select_records(store, all_versions, record_ids)
    # Checksums first: a damaged record must stop the export before anything is written.
    records = [store.load(r.record_id, check=True) for r in summaries]
    labels, notices = label_table(records, config)
    lost = store.lost_records()
    if lost:
        notices.append(f"{len(lost)} committed record(s) of this store are lost and cannot be exported "
                       f"({', '.join(lost[:3])}); `segqc corrections verify` says more")
    channels = resolve_channel_names(records, channel_names, config, required=export_format is not ExportFormat.QC)
    folds = group_folds([(_case_name(r, all_versions), r.case_key) for r in records])
    if export_format is ExportFormat.NNUNET and not NNUNET_FOLDER_RE.match(out_dir.name):
        notices.append(f"nnU-Net finds a raw dataset only as $nnUNet_raw/DatasetXXX_Name (XXX: three digits); rename "
                       f"{out_dir.name} accordingly before nnUNetv2_plan_and_preprocess")
    for notice in notices:
        logger.warning(notice)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex}.partial"
    try:
        cases = [_copy_case(record, work, export_format, all_versions) for record in records]
        _write_manifests(work, export_format, records, cases, labels, channels, dataset_name, folds, notices)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(work, out_dir)
    except WriteError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise WriteError(f"Cannot write the export to {out_dir}: {exc}. Nothing was exported; the corrections store "
                         "is unchanged.") from exc
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise SegQCError(f"Cannot write the export to {out_dir}: {os.strerror(exc.errno) if exc.errno else exc}. "
                         "Nothing was exported; the corrections store is unchanged.") from exc
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.info("Exported %d case(s) as %s to %s", len(cases), export_format.value, out_dir)
    return ExportResult(out_dir, export_format, cases, labels, channels, folds, notices)


def _case_name(record: CorrectionRecord, all_versions: bool) -> str:
    return f"{record.case_key}_v{record.version:04d}" if all_versions else record.case_key


def _copy(record: CorrectionRecord, source: Path, target: Path) -> str:
    """Copy a record's file (never through a link) and check the copy against the record's checksum."""
    expected = record.metadata.files.get(source.name, {})
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open_regular_file(source, follow_links=False) as reader, open(target, "xb") as writer:
            shutil.copyfileobj(reader, writer)
            writer.flush()
            os.fsync(writer.fileno())
    except NotARegularFileError as exc:
        raise InputError(f"Correction record {record.record_id}: {exc}; SegQC never follows links inside a store. "
                         "Run `segqc corrections verify`.") from exc
    size = target.stat().st_size
    if size != expected.get("bytes") or sha256_file(target) != expected.get("sha256"):
        raise WriteError(f"{target} was not written completely ({size} of {expected.get('bytes')} bytes, or "
                         "different bytes; is the disk full or failing?)")
    return target.as_posix()


def _copy_case(record: CorrectionRecord, work: Path, export_format: ExportFormat, all_versions: bool) -> ExportedCase:
    name = _case_name(record, all_versions)
    images = []
    for channel, source in enumerate(record.image_paths):
        relative = f"{IMAGES_DIR}/{name}_{channel:04d}{FILE_ENDING}"
        _copy(record, source, work / relative)
        images.append(relative)
    label = f"{LABELS_DIR}/{name}{FILE_ENDING}"
    _copy(record, record.corrected_path, work / label)
    exported = ExportedCase(name, record.record_id, images, label)
    if export_format is ExportFormat.QC:
        exported.query = f"{QUERIES_DIR}/{name}{FILE_ENDING}"
        _copy(record, record.original_path, work / exported.query)
        for class_label, source in sorted(record.error_map_paths.items()):
            relative = f"{ERRORS_DIR}/{name}_label{class_label}{FILE_ENDING}"
            _copy(record, source, work / relative)
            exported.errors[str(class_label)] = relative
    return exported


def _write_json(path: Path, data: Any) -> None:
    write_bytes_synced(path, json_bytes(data))  # read back; inside the private work folder, renamed in as a whole


def _write_manifests(work: Path, export_format: ExportFormat, records: list[CorrectionRecord],
                     cases: list[ExportedCase], labels: dict[str, int], channels: list[str], dataset_name: str,
                     folds: dict[str, int], notices: list[str]) -> None:
    provenance = {
        "segqc_version": __version__, "format": export_format.value, "notices": notices,
        "cases": [{"case": c.case, "record_id": r.record_id, "case_id": r.case_id, "reviewer": r.reviewer,
                   "created_utc": r.created_utc, "files": r.metadata.files} for c, r in zip(cases, records)],
    }
    _write_json(work / PROVENANCE_FILE, provenance)
    if export_format is ExportFormat.NNUNET:
        _write_json(work / NNUNET_DATASET_FILE, {
            "name": dataset_name,
            "description": "Expert-corrected segmentations recorded by SegQC",
            "channel_names": {str(i): name for i, name in enumerate(channels)},
            "labels": labels,
            "numTraining": len(cases),
            "file_ending": FILE_ENDING,
        })
        _write_json(work / NNUNET_SPLITS_FILE, nnunet_splits(folds))
    elif export_format is ExportFormat.MONAI:
        _write_json(work / MONAI_DATALIST_FILE, {
            "name": dataset_name,
            "labels": {str(v): k for k, v in labels.items()},
            "modality": {str(i): name for i, name in enumerate(channels)},
            "training": [{"image": c.images[0] if len(c.images) == 1 else c.images, "label": c.label,
                          "fold": folds[c.case]} for c in cases],
        })
    else:
        _write_json(work / QC_DATASET_FILE, {
            "format": QC_FORMAT, "format_version": QC_FORMAT_VERSION, "name": dataset_name,
            "labels": labels, "channel_names": channels,
            "cases": [{"case": c.case, "case_id": r.case_id, "record_id": r.record_id, "images": c.images,
                       "query": c.query, "truth": c.label, "errors": c.errors,
                       "true_metrics": r.metadata.true_metrics, "qc_prediction": r.metadata.qc_prediction,
                       "reviewer": r.reviewer, "model": r.metadata.model}
                      for c, r in zip(cases, records)],
        })


def load_qc_dataset(root: PathLike) -> list[QCTrainingCase]:
    """Read a ``qc`` export back: one :class:`QCTrainingCase` per case, paths checked to exist."""
    root = Path(root)
    manifest = root / QC_DATASET_FILE
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{root} is not a SegQC QC training export (no {QC_DATASET_FILE})") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{manifest} is not valid JSON ({exc})") from exc
    if data.get("format") != QC_FORMAT or data.get("format_version") != QC_FORMAT_VERSION:
        raise InputError(f"{manifest} is not a {QC_FORMAT} v{QC_FORMAT_VERSION} manifest")
    cases = []
    for entry in data["cases"]:
        case = QCTrainingCase(
            case=entry["case"], case_id=entry["case_id"], record_id=entry["record_id"],
            images=[root / p for p in entry["images"]], query=root / entry["query"], truth=root / entry["truth"],
            errors={int(k): root / v for k, v in entry["errors"].items()},
            true_metrics=entry.get("true_metrics", {}), qc_prediction=entry.get("qc_prediction"))
        missing = [p for p in [*case.images, case.query, case.truth, *case.errors.values()] if not p.is_file()]
        if missing:
            raise InputError(f"QC export {root} is incomplete: {missing[0]} is missing")
        cases.append(case)
    return cases
