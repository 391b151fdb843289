"""Training samples from the query bank: joint spatial augmentation, targets after it, Dice-balanced epochs.

Every sample is prepared exactly as :func:`SegQCLib.network.inference.predict_case` prepares a case, so the network
sees in training what it sees in use: the whole image is normalised with the model config's method, the
volume is cropped around the query's bounding box with the config's margin and zero-padded to the patch.

Augmentation: a rotation/scaling applied jointly to image (linear), query and truth (nearest), then the
targets (per-class error maps, case Dice and NSD) are recomputed from the augmented query and truth;
intensity augmentation (gamma, scale, shift, noise) changes the image only.  Epochs draw the same number
of queries from each of the 10 Dice bins (QCResUNet §2.2) so good queries do not dominate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from SegQCLib.network.config import ModelConfig
from SegQCLib.network.inference import normalize_intensity
from SegQCLib.quality.metrics import error_maps, multiclass_dice

from .bank import BankCase
from .queries import QueryTargets, _rotation_matrix, compute_targets, warp

DICE_BINS = 10


@dataclass(frozen=True)
class AugmentParams:
    spatial_probability: float = 0.5
    rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    # Jitter of the crop margin around the query (voxels) and of the placement in the patch: inference
    # always centres the crop, training also sees it off-centre.
    margin_jitter_voxels: int = 3
    offcentre_probability: float = 0.5
    intensity_probability: float = 0.8
    gamma_range: tuple[float, float] = (0.7, 1.5)
    intensity_scale_range: tuple[float, float] = (0.9, 1.1)
    intensity_shift: float = 0.1
    noise_std_max: float = 0.1


NO_AUGMENTATION = AugmentParams(spatial_probability=0.0, margin_jitter_voxels=0, offcentre_probability=0.0,
                                intensity_probability=0.0)


@dataclass
class Sample:
    image: np.ndarray  # (m, Z, Y, X) float32, patch-sized
    query: np.ndarray  # (Z, Y, X) int64
    error_maps: np.ndarray  # (C, Z, Y, X) float32
    dice: float
    nsd: float


@dataclass
class Batch:
    image: torch.Tensor
    query: torch.Tensor
    error_maps: torch.Tensor
    dice: torch.Tensor
    nsd: torch.Tensor


def dice_bins(dice: np.ndarray, bins: int = DICE_BINS) -> np.ndarray:
    """Bin index 0..bins-1 of each Dice value (1.0 falls in the last bin)."""
    return np.clip((np.asarray(dice) * bins).astype(int), 0, bins - 1)


def crop_box(query: np.ndarray, margin_voxels: Sequence[int]) -> tuple[slice, ...]:
    """Bounding box of the query's foreground grown by the margin (the whole volume when it is empty)."""
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(np.any(query > 0, axis=other))
        if present.size == 0:
            return tuple(slice(0, s) for s in query.shape)
        box.append(slice(max(0, int(present[0]) - margin_voxels[axis]),
                         min(query.shape[axis], int(present[-1]) + 1 + margin_voxels[axis])))
    return tuple(box)


def place_in_patch(shape: Sequence[int], patch: Sequence[int], rng: np.random.Generator | None
                   ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(source slices, destination slices) putting a ``shape`` crop into a ``patch``.

    Centred as :func:`SegQCLib.network.inference.pad_to_shape` does (``before = (patch - size) // 2``) when
    ``rng`` is None, else at a random position; a crop larger than the patch is windowed at random.
    """
    src, dst = [], []
    for size, window in zip(shape, patch):
        if size <= window:
            before = (window - size) // 2 if rng is None else int(rng.integers(0, window - size + 1))
            src.append(slice(0, size))
            dst.append(slice(before, before + size))
        else:
            start = (size - window) // 2 if rng is None else int(rng.integers(0, size - window + 1))
            src.append(slice(start, start + window))
            dst.append(slice(0, window))
    return tuple(src), tuple(dst)


def intensity_augment(image: np.ndarray, params: AugmentParams, rng: np.random.Generator) -> np.ndarray:
    """Gamma on the min-max range, then scale, shift and Gaussian noise (the image only, never the masks)."""
    low, high = float(image.min()), float(image.max())
    span = max(high - low, 1e-6)
    image = ((image - low) / span) ** rng.uniform(*params.gamma_range) * span + low
    image = image * rng.uniform(*params.intensity_scale_range) + rng.uniform(-params.intensity_shift,
                                                                             params.intensity_shift)
    noise = rng.normal(0.0, rng.uniform(0.0, params.noise_std_max), image.shape)
    return (image + noise).astype(np.float32)


class QueryDataset:
    """All (case, query) pairs of a list of bank cases, prepared for one model configuration."""

    def __init__(self, cases: Sequence[BankCase], config: ModelConfig, augment: AugmentParams = AugmentParams(),
                 mask_only: bool = False) -> None:
        if not cases:
            raise ValueError("QueryDataset needs at least one bank case")
        self.cases = list(cases)
        self.config = config
        self.augment = augment
        self.mask_only = mask_only
        self.labels = list(config.labels)
        self.images = [normalize_intensity(c.image, config.normalization, config.clip_percentiles)
                       for c in self.cases]
        self.items = [(ci, qi) for ci, c in enumerate(self.cases) for qi in range(c.queries.shape[0])]
        # Dice of each query before augmentation, for the balanced sampling.
        self.dice = np.array([multiclass_dice(self.cases[ci].queries[qi], self.cases[ci].truth, self.labels)
                              for ci, qi in self.items])
        self.bins = dice_bins(self.dice)
        self._plain_scores: dict[int, tuple[float, float]] = {}

    def keep(self, count: int) -> None:
        """Keep ``count`` items spread evenly over the dataset (a cheaper, still mixed tuning set)."""
        if count >= len(self.items):
            return
        chosen = np.linspace(0, len(self.items) - 1, count).round().astype(int)
        self.items = [self.items[i] for i in chosen]
        self.dice = self.dice[chosen]
        self.bins = self.bins[chosen]
        self._plain_scores = {}

    def __len__(self) -> int:
        return len(self.items)

    def balanced_indices(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` item indices with every non-empty Dice bin equally represented (QCResUNet §2.2).

        Within a bin, items are drawn without replacement while they last, so a big bin is not sampled
        from the same few items; small bins are repeated (augmentation makes repeats differ).
        """
        occupied = [np.flatnonzero(self.bins == b) for b in range(DICE_BINS)]
        occupied = [members for members in occupied if members.size]
        per_bin = int(math.ceil(count / len(occupied)))
        chosen = []
        for members in occupied:
            repeats = int(math.ceil(per_bin / members.size))
            pool = np.concatenate([rng.permutation(members) for _ in range(repeats)])
            chosen.append(pool[:per_bin])
        return rng.permutation(np.concatenate(chosen))[:count]

    def sample(self, index: int, rng: np.random.Generator | None) -> Sample:
        """One prepared sample; ``rng`` None = no augmentation (deterministic, as at inference)."""
        case_index, query_index = self.items[index]
        case = self.cases[case_index]
        image = self.images[case_index]
        query = case.queries[query_index]
        truth = case.truth
        augment = self.augment if rng is not None else NO_AUGMENTATION
        augmented = rng is not None and rng.random() < augment.spatial_probability
        if augmented:
            angles = np.deg2rad(rng.uniform(-augment.rotation_deg, augment.rotation_deg, 3))
            scale = rng.uniform(*augment.scale_range)
            matrix = _rotation_matrix(angles) / scale
            centre = (np.array(image.shape, dtype=float) - 1) / 2
            image = warp(image, matrix, centre, np.zeros(3), None, order=1)
            query = warp(query, matrix, centre, np.zeros(3), None, order=0)
            truth = warp(truth, matrix, centre, np.zeros(3), None, order=0)
        if augmented or index not in self._plain_scores:
            targets = compute_targets(query, truth, self.labels, case.spacing_zyx_mm, self.config.nsd_tolerance_mm)
            if not augmented:
                self._plain_scores[index] = (targets.dice, targets.nsd)
        else:  # unchanged geometry: the case scores are cached, only the (cheap) error maps are rebuilt
            maps = error_maps(query, truth, self.labels)
            dice, nsd = self._plain_scores[index]
            targets = QueryTargets(np.stack([maps[c] for c in self.labels]), dice, nsd)
        spacing = np.asarray(case.spacing_zyx_mm)
        margin = np.ceil(self.config.crop_margin_mm / spacing).astype(int)
        if rng is not None and augment.margin_jitter_voxels:
            margin = np.maximum(0, margin + rng.integers(-augment.margin_jitter_voxels,
                                                         augment.margin_jitter_voxels + 1, 3))
        box = crop_box(query, margin)
        image, query, errors = image[box], query[box], targets.error_maps[(slice(None),) + box]
        if rng is not None and rng.random() < augment.intensity_probability:
            image = intensity_augment(image, augment, rng)
        patch = list(self.config.patch_size_zyx)
        offcentre = rng if (rng is not None and rng.random() < augment.offcentre_probability) else None
        src, dst = place_in_patch(image.shape, patch, offcentre)
        out_image = np.zeros([len(self.config.modalities)] + patch, dtype=np.float32)
        out_query = np.zeros(patch, dtype=np.int64)
        out_errors = np.zeros([len(self.labels)] + patch, dtype=np.float32)
        if not self.mask_only:
            out_image[(slice(None),) + dst] = image[src]
        out_query[dst] = query[src]
        out_errors[(slice(None),) + dst] = errors[(slice(None),) + src]
        return Sample(out_image, out_query, out_errors, targets.dice, targets.nsd)

    def batch(self, indices: Sequence[int], rng: np.random.Generator | None) -> Batch:
        samples = [self.sample(int(i), rng) for i in indices]
        return Batch(
            image=torch.from_numpy(np.stack([s.image for s in samples])),
            query=torch.from_numpy(np.stack([s.query for s in samples])),
            error_maps=torch.from_numpy(np.stack([s.error_maps for s in samples])),
            dice=torch.tensor([s.dice for s in samples], dtype=torch.float32),
            nsd=torch.tensor([s.nsd for s in samples], dtype=torch.float32),
        )
