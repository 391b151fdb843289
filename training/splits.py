"""Train/validation split by case id with a fixed seed, stored as a committed JSON file.

A case is either in training or in validation, never both: every query of a validation case (perturbed
masks, model predictions) is unseen by the segmenters and the QC network.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from SegQCLib.errors import InputError

SPLIT_SEED = 20240611
VALIDATION_FRACTION = 0.3
DEFAULT_SPLIT_FILE = Path(__file__).resolve().parent / "splits" / "hippocampus.json"


@dataclass(frozen=True)
class Split:
    seed: int
    train: tuple[str, ...]
    validation: tuple[str, ...]

    def __post_init__(self) -> None:
        overlap = set(self.train) & set(self.validation)
        if overlap:
            raise InputError(f"Split puts cases in both train and validation: {sorted(overlap)[:5]}")


def make_split(case_ids: list[str], seed: int = SPLIT_SEED, validation_fraction: float = VALIDATION_FRACTION) -> Split:
    """Shuffle the sorted case ids with ``seed`` and cut off ``validation_fraction`` for validation."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    ids = sorted(set(case_ids))
    if len(ids) < 2:
        raise InputError(f"Need at least two cases to split, got {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = min(len(ids) - 1, max(1, int(round(validation_fraction * len(ids)))))
    validation = tuple(sorted(ids[i] for i in order[:n_val]))
    train = tuple(sorted(ids[i] for i in order[n_val:]))
    return Split(seed, train, validation)


def save_split(split: Split, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(split)
    data["train"] = list(split.train)
    data["validation"] = list(split.validation)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def load_split(path: str | os.PathLike) -> Split:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return Split(int(data["seed"]), tuple(data["train"]), tuple(data["validation"]))
    except FileNotFoundError as exc:
        raise InputError(f"Split file not found: {path}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"Split file {path} is malformed: {exc}") from exc


def load_or_make_split(case_ids: list[str], path: str | os.PathLike, seed: int = SPLIT_SEED) -> Split:
    """The split stored at ``path`` if present (checked against ``case_ids``), else a new one written there."""
    path = Path(path)
    if path.exists():
        split = load_split(path)
        missing = (set(split.train) | set(split.validation)) - set(case_ids)
        if missing:
            raise InputError(f"Split {path} names cases absent from the dataset: {sorted(missing)[:5]}")
        return split
    split = make_split(case_ids, seed)
    save_split(split, path)
    return split
