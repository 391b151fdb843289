"""What an export says about its data: channel names, label names and cross-validation folds.

* Channel names: given, else the modalities of the QC model (given, else the one named in the records' QC
  reports).  nnU-Net picks each channel's intensity normalisation by its name: "CT" (any case) gets CT
  normalisation (clipping and scaling by the dataset's foreground statistics), every other name a
  per-case z-score.  A modality "ct" is therefore written "CT"; a CT export named anything else would be
  silently z-scored.
* Label names: the QC model's class names, else the segment names recorded with the corrections, else the
  class names of the records' QC reports; ``label_<n>`` only for a label none of them names (said in a
  notice).
* Folds: every version of a case (``--all-versions``) is one patient, so all its versions go to the same
  fold; otherwise nnU-Net's own random 5-fold split could train on one version and validate on another.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from ..errors import InputError, ModelError
from ..network.config import ModelConfig, read_config
from .records import CorrectionRecord

logger = logging.getLogger(__name__)

# nnU-Net v2's name for the channel normalisation of CT (nnunetv2.preprocessing.normalization).
CT_CHANNEL_NAME = "CT"
NNUNET_FOLDS = 5
BACKGROUND = "background"


def channel_names_from_modalities(modalities: Sequence[str]) -> list[str]:
    """Model modalities as channel names; CT in the spelling nnU-Net recognises for CT normalisation."""
    return [CT_CHANNEL_NAME if m.strip().lower() == CT_CHANNEL_NAME.lower() else m.strip() for m in modalities]


def recorded_qc_model(record: CorrectionRecord) -> Optional[ModelConfig]:
    """The config of the QC model named in the record's QC report, when that package is readable here."""
    report = record.metadata.qc_prediction or {}
    path = (report.get("model") or {}).get("path") if isinstance(report, dict) else None
    if not path or not Path(path).is_dir():
        return None
    try:
        return read_config(path)
    except ModelError:
        return None


def channel_count(records: Sequence[CorrectionRecord]) -> int:
    counts = {len(r.metadata.image_files) for r in records}
    if len(counts) != 1:
        raise InputError(f"Records have different numbers of image channels {sorted(counts)}; "
                         "export cases with the same channels together")
    return counts.pop()


def resolve_channel_names(records: Sequence[CorrectionRecord], channel_names: Optional[Sequence[str]],
                          model: Optional[ModelConfig], required: bool) -> list[str]:
    """One name per image channel: given, else from the QC model's modalities; InputError when ``required``
    and neither says them."""
    count = channel_count(records)
    if channel_names is not None:
        if len(channel_names) != count:
            raise InputError(f"{len(channel_names)} channel names given for {count} image channel(s)")
        return list(channel_names)
    models = [model] if model is not None else [m for m in map(recorded_qc_model, records) if m is not None]
    modalities = {tuple(m.modalities) for m in models}
    if len(modalities) == 1:
        names = channel_names_from_modalities(next(iter(modalities)))
        if len(names) != count:
            raise InputError(f"The QC model has {len(names)} modalities {names} but the records have {count} image "
                             "channel(s); give --channel-names")
        return names
    if required:
        found = f" (the records name QC models with different modalities: {sorted(modalities)})" if modalities else ""
        raise InputError(
            f"Name the {count} image channel(s): --channel-names (e.g. CT, or T1 T2) or --model with the QC model "
            f"whose modalities they are{found}. nnU-Net normalises a channel named CT with CT statistics and any "
            "other with a per-case z-score, so the name decides how the images are normalised.")
    return [f"channel_{i}" for i in range(count)]


def label_table(records: Sequence[CorrectionRecord], model: Optional[ModelConfig]) -> tuple[dict[str, int], list[str]]:
    """``{"background": 0, name: label}`` for labels 0..max (consecutive, as nnU-Net requires), and notices."""
    present = sorted({int(label) for r in records for label in r.metadata.labels})
    names: dict[int, str] = {}
    for label in present:
        names[label] = _label_name(label, records, model) or ""
    unnamed = [label for label, name in names.items() if not name]
    notices = []
    if unnamed:
        notices.append(f"Labels {unnamed} have no name in the QC model, the recorded segments or the QC reports: "
                       "exported as label_<n>; pass --model with the model whose classes they are")
    top = max(present, default=0)
    table = {BACKGROUND: 0}
    for label in range(1, top + 1):
        name = names.get(label) or f"label_{label}"
        if name in table or name.lower() == BACKGROUND:
            name = f"{name}_{label}"
        table[name] = label
    missing = [label for label in range(1, top + 1) if label not in names]
    if missing:
        notices.append(f"Labels {missing} occur in no record; they are listed (as label_<n>) because nnU-Net needs "
                       "consecutive labels 0..max")
    return table, notices


def _label_name(label: int, records: Sequence[CorrectionRecord], model: Optional[ModelConfig]) -> Optional[str]:
    if model is not None and label in model.classes:
        return model.classes[label]
    for record in records:
        name = record.metadata.label_names.get(str(label))
        if name:
            return name
    for record in records:
        for entry in _report_classes(record):
            if entry.get("label") == label and entry.get("name") and not str(entry["name"]).startswith("label_"):
                return str(entry["name"])
    return None


def _report_classes(record: CorrectionRecord) -> list[dict[str, Any]]:
    report = record.metadata.qc_prediction
    classes = report.get("classes") if isinstance(report, dict) else None
    return [c for c in classes if isinstance(c, dict)] if isinstance(classes, list) else []


def group_folds(cases: Sequence[tuple[str, str]], folds: int = NNUNET_FOLDS) -> dict[str, int]:
    """Fold of each exported case, given (case name, patient key) pairs: one patient's cases share a fold.

    Patients are placed largest first into the fold holding the fewest cases so far (ties: lower fold,
    then patient key), so folds stay balanced and the split is reproducible.
    """
    groups: dict[str, list[str]] = {}
    for name, key in cases:
        groups.setdefault(key, []).append(name)
    count = max(1, min(folds, len(groups)))
    sizes = [0] * count
    assignment: dict[str, int] = {}
    for _key, names in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        fold = min(range(count), key=lambda index: (sizes[index], index))
        sizes[fold] += len(names)
        assignment.update({name: fold for name in names})
    return assignment


def nnunet_splits(folds: Mapping[str, int]) -> list[dict[str, list[str]]]:
    """``splits_final.json`` content: per fold the training and validation case identifiers.

    With a single patient there is nothing to hold out: its one split trains and validates on the same cases.
    """
    count = max(folds.values(), default=0) + 1
    names = sorted(folds)
    if count == 1:
        return [{"train": names, "val": names}]
    return [{"train": [n for n in names if folds[n] != fold], "val": [n for n in names if folds[n] == fold]}
            for fold in range(count)]
