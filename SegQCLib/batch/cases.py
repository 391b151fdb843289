"""The cases of a batch: :class:`BatchCase` (id, image files, segmentation file) and pairing them from folders."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..errors import InputError

PathLike = Union[str, os.PathLike]

# A case id names the case's output folders.
CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
# Slicer's segmentation files: "<case>.seg.nrrd" names case "<case>", not "<case>.seg".
SEG_SUFFIXES = (".seg.nrrd",) + IMAGE_SUFFIXES
_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class BatchCase:
    case_id: str
    images: tuple[Path, ...]
    seg: Path


def _strip_suffix(name: str, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> Optional[str]:
    lower = name.lower()
    for suffix in sorted(suffixes, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def cases_from_folders(images_dir: PathLike, segs_dir: PathLike) -> tuple[list[BatchCase], list[str]]:
    """Pair ``SEGS/<case>.nii.gz`` (or ``<case>.seg.nrrd``) with ``IMAGES/<case>.nii.gz`` or
    ``IMAGES/<case>_0000.nii.gz`` (+ ``_0001``...).

    Returns the cases (sorted by id) and one message per segmentation without an image.
    """
    images_dir, segs_dir = Path(images_dir), Path(segs_dir)
    for folder in (images_dir, segs_dir):
        if not folder.is_dir():
            raise InputError(f"Folder not found: {folder}")
    # A name ending in _NNNN is either channel NNNN of a case (nnU-Net) or a whole case id ("amos_0001"):
    # keep both readings and let the segmentation's name decide.
    channels: dict[str, dict[int, Path]] = {}
    whole: dict[str, Path] = {}
    for path in images_dir.iterdir():
        stem = _strip_suffix(path.name)
        if stem is None:
            continue
        whole[stem] = path
        match = _CHANNEL_RE.match(stem)
        if match:
            channels.setdefault(match["case"], {})[int(match["channel"])] = path
    cases, unmatched = [], []
    for seg in sorted(segs_dir.iterdir()):
        case_id = _strip_suffix(seg.name, SEG_SUFFIXES)
        if case_id is None or seg.name.startswith("."):
            continue
        found = channels.get(case_id) or ({0: whole[case_id]} if case_id in whole else None)
        if not found:
            unmatched.append(f"{seg.name}: no image named {case_id}[_0000] in {images_dir}")
            continue
        cases.append(BatchCase(case_id, tuple(found[i] for i in sorted(found)), seg))
    if not cases:
        raise InputError(f"No segmentation in {segs_dir} has an image of the same name in {images_dir}")
    return cases, unmatched
