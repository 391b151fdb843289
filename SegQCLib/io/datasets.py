"""Locating labelled datasets in nnU-Net raw layout (``imagesTr/CASE_0000.nii.gz``, ``labelsTr/CASE.nii.gz``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import InputError

DATA_DIR_ENV = "SEGQC_DATA_DIR"
HIPPOCAMPUS_SUBDIR = "hippocampus"
_IMAGE_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.(nii\.gz|nii|nrrd|mha)$")


@dataclass(frozen=True)
class CaseFiles:
    case_id: str
    images: tuple[Path, ...]
    label: Optional[Path]


def default_shared_data_dir() -> Path:
    """``$SEGQC_DATA_DIR`` if set, else ``../shared/data`` beside the repository."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"  # <repo>/SegQCLib/io/datasets.py


def hippocampus_dir() -> Path:
    return default_shared_data_dir() / HIPPOCAMPUS_SUBDIR


def list_nnunet_cases(root: str | os.PathLike, require_labels: bool = True) -> list[CaseFiles]:
    """Cases of an nnU-Net raw dataset folder, sorted by case id, channels in order."""
    root = Path(root)
    images_dir = root / "imagesTr"
    labels_dir = root / "labelsTr"
    if not images_dir.is_dir():
        raise InputError(f"{root} is not an nnU-Net raw dataset: no imagesTr/ folder")
    channels: dict[str, dict[int, Path]] = {}
    for path in images_dir.iterdir():
        match = _IMAGE_RE.match(path.name)
        if match:
            channels.setdefault(match["case"], {})[int(match["channel"])] = path
    cases = []
    for case_id in sorted(channels):
        indices = sorted(channels[case_id])
        if indices != list(range(len(indices))):
            raise InputError(f"Case {case_id} in {images_dir} has channels {indices}; expected 0..N-1 without gaps")
        label = None
        for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
            candidate = labels_dir / f"{case_id}{suffix}"
            if candidate.exists():
                label = candidate
                break
        if label is None and require_labels:
            continue
        cases.append(CaseFiles(case_id, tuple(channels[case_id][i] for i in indices), label))
    if not cases:
        raise InputError(f"No cases with labels found in {root}")
    return cases
