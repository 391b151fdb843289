"""Train/validation split by case id with a fixed seed, stored as a committed JSON file.

A case is either in training or in validation, never both: every query of a validation case (perturbed
masks, model predictions) is unseen by the segmenters and the QC network.

A split *extends* when its dataset grows, it never reshuffles: the cases it already holds keep their
side (so validation results stay comparable across model versions) and the new cases join training.
The file records each growth step as a *generation* (the case ids added), so the committed split is
reproducible from the seed and its generations alone: the seeded split of generation 0, then every
later generation added to training.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from SegQCLib.errors import InputError

logger = logging.getLogger(__name__)

SPLIT_SEED = 20240611
VALIDATION_FRACTION = 0.3
DEFAULT_SPLIT_FILE = Path(__file__).resolve().parent / "splits" / "hippocampus.json"


@dataclass(frozen=True)
class Split:
    """Train and validation case ids; ``generations`` are the ids each growth step added, oldest first."""

    seed: int
    train: tuple[str, ...]
    validation: tuple[str, ...]
    generations: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        overlap = set(self.train) & set(self.validation)
        if overlap:
            raise InputError(f"Split puts cases in both train and validation: {sorted(overlap)[:5]}")
        if self.generations:
            recorded = [c for generation in self.generations for c in generation]
            if sorted(recorded) != sorted(self.train + self.validation):
                raise InputError("Split generations do not list exactly the split's cases, each once")

    @property
    def cases(self) -> set[str]:
        return set(self.train) | set(self.validation)


def make_split(case_ids: Sequence[str], seed: int = SPLIT_SEED,
               validation_fraction: float = VALIDATION_FRACTION) -> Split:
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
    return Split(seed, train, validation, (tuple(ids),))


def extend_split(split: Split, case_ids: Sequence[str]) -> Split:
    """``split`` with the cases of ``case_ids`` it does not hold added to training, as a new generation.

    Cases already in the split keep their side.  A split naming cases that ``case_ids`` lacks is refused:
    a shrunken dataset would silently change what validation means.
    """
    ids = set(case_ids)
    missing = split.cases - ids
    if missing:
        raise InputError(f"The split names {len(missing)} cases absent from the dataset: {sorted(missing)[:5]}")
    new = tuple(sorted(ids - split.cases))
    generations = split.generations or (tuple(sorted(split.cases)),)
    if not new:
        return Split(split.seed, split.train, split.validation, generations)
    return Split(split.seed, tuple(sorted(split.train + new)), split.validation, generations + (new,))


def split_from_generations(generations: Sequence[Sequence[str]], seed: int = SPLIT_SEED) -> Split:
    """The seeded split of the first generation, extended by each later one in order."""
    if not generations:
        raise InputError("A split needs at least one generation of cases")
    split = make_split(list(generations[0]), seed)
    for generation in generations[1:]:
        split = extend_split(split, sorted(split.cases | set(generation)))
    return split


def save_split(split: Split, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"seed": split.seed, "train": list(split.train), "validation": list(split.validation),
            "generations": [list(g) for g in split.generations]}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def load_split(path: str | os.PathLike) -> Split:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        generations = tuple(tuple(str(c) for c in g) for g in data.get("generations", []))
        return Split(int(data["seed"]), tuple(data["train"]), tuple(data["validation"]), generations)
    except FileNotFoundError as exc:
        raise InputError(f"Split file not found: {path}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"Split file {path} is malformed: {exc}") from exc


def load_or_make_split(case_ids: Sequence[str], path: str | os.PathLike, seed: int = SPLIT_SEED) -> Split:
    """The split stored at ``path``, extended (and saved) when the dataset holds new cases; else a new one."""
    path = Path(path)
    if not path.exists():
        split = make_split(case_ids, seed)
        save_split(split, path)
        return split
    split = load_split(path)
    extended = extend_split(split, case_ids)
    if extended.cases != split.cases:
        logger.info("Dataset grew by %d cases: added to training in %s (validation unchanged)",
                    len(extended.cases) - len(split.cases), path)
        save_split(extended, path)
    return extended
