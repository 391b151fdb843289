"""Training samples from the query bank: joint spatial augmentation, targets after it, Dice-balanced epochs.

Every sample is prepared exactly as :func:`SegQCLib.network.inference.predict_case` prepares a case, so the network
sees in training what it sees in use: the whole image is normalised with the model config's method, the
volume is cropped around the query's bounding box with the config's margin and zero-padded to the patch.

Augmentation: a rotation/scaling applied jointly to image (linear), query and truth (nearest), then the
targets (per-class error maps, case Dice and NSD) are recomputed from the augmented query and truth;
intensity augmentation (gamma, scale, shift, noise) changes the image only.

Epochs: QCResUNet §2.2 draws the same number of queries from each of 10 Dice bins.  Taken literally that
repeats the few queries of sparse bins (a handful of early-snapshot predictions) many times and starves
the dense top bins, where the segmentations reviewers check live.  :func:`sampling_weights` tempers the
balancing (a query's weight is ``1 / n_bin ** alpha``), caps how much more often any query is drawn than
the average, and gives the perfect queries (the truth itself) a fixed share of every epoch.

With ``empty_query_probability`` a sample's query is blanked (the network sees no segmentation; its
targets are then those of an empty query: every truth voxel is an error): trained that way first, the
network learns the anatomy, as a segmenter, before it learns when to trust a query.
"""

from __future__ import annotations

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
# Tempered Dice-bin balancing (1 = fully balanced as QCResUNet, 0 = as the bank holds them), the cap on a
# query's weight relative to the mean, and the share of every epoch given to the truth itself.
BALANCE_ALPHA = 0.5
MAX_WEIGHT_RATIO = 4.0
IDENTITY_SHARE = 0.1
IDENTITY_SOURCE_PREFIX = "identity"


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
    truth: np.ndarray  # (Z, Y, X) int64


@dataclass
class Batch:
    image: torch.Tensor
    query: torch.Tensor
    error_maps: torch.Tensor
    dice: torch.Tensor
    nsd: torch.Tensor
    truth: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in (self.image, self.query, self.error_maps, self.dice, self.nsd,
                                                 self.truth)))


def dice_bins(dice: np.ndarray, bins: int = DICE_BINS) -> np.ndarray:
    """Bin index 0..bins-1 of each Dice value (1.0 falls in the last bin)."""
    return np.clip((np.asarray(dice) * bins).astype(int), 0, bins - 1)


def sampling_weights(dice: np.ndarray, identity: np.ndarray, alpha: float = BALANCE_ALPHA,
                     max_ratio: float = MAX_WEIGHT_RATIO, identity_share: float = IDENTITY_SHARE) -> np.ndarray:
    """Probability of drawing each query: tempered Dice-bin balance, capped, the truth's fixed share.

    A query in a bin of ``n`` queries weighs ``n ** -alpha``; no weight exceeds ``max_ratio`` times the
    mean; the identity queries share ``identity_share`` of the total (when there are any).
    """
    dice = np.asarray(dice, dtype=float)
    identity = np.asarray(identity, dtype=bool)
    bins = dice_bins(dice)
    counts = np.bincount(bins[~identity], minlength=DICE_BINS)
    weights = np.zeros(dice.size)
    others = ~identity
    if others.any():
        capped = counts[bins[others]].astype(float) ** -alpha
        for _ in range(50):  # clipping lowers the mean: repeat until no weight is above the cap
            limit = max_ratio * capped.mean()
            if capped.max() <= limit * (1 + 1e-9):
                break
            capped = np.minimum(capped, limit)
        weights[others] = capped / capped.sum()
    if identity.any():
        share = identity_share if others.any() else 1.0
        weights[others] *= 1.0 - share
        weights[identity] = share / identity.sum()
    return weights / weights.sum()


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
                 mask_only: bool = False, empty_query_probability: float = 0.0) -> None:
        if not cases:
            raise ValueError("QueryDataset needs at least one bank case")
        self.cases = list(cases)
        self.config = config
        self.augment = augment
        self.mask_only = mask_only
        self.empty_query_probability = empty_query_probability
        self.labels = list(config.labels)
        self.images = [normalize_intensity(c.image, config.normalization, config.clip_percentiles)
                       for c in self.cases]
        self.items = [(ci, qi) for ci, c in enumerate(self.cases) for qi in range(c.queries.shape[0])]
        # Dice of each query before augmentation, for the balanced sampling.
        self.dice = np.array([multiclass_dice(self.cases[ci].queries[qi], self.cases[ci].truth, self.labels)
                              for ci, qi in self.items])
        self.bins = dice_bins(self.dice)
        self.identity = np.array([self.source(i).startswith(IDENTITY_SOURCE_PREFIX) for i in range(len(self.items))])
        self._plain_scores: dict[int, tuple[float, float]] = {}

    def source(self, index: int) -> str:
        case_index, query_index = self.items[index]
        return self.cases[case_index].sources[query_index]

    def keep(self, count: int) -> None:
        """Keep ``count`` items spread evenly over the dataset (a cheaper, still mixed tuning set)."""
        if count >= len(self.items):
            return
        chosen = np.linspace(0, len(self.items) - 1, count).round().astype(int)
        self.items = [self.items[i] for i in chosen]
        self.dice = self.dice[chosen]
        self.bins = self.bins[chosen]
        self.identity = self.identity[chosen]
        self._plain_scores = {}

    def __len__(self) -> int:
        return len(self.items)

    def weights(self) -> np.ndarray:
        return sampling_weights(self.dice, self.identity)

    def epoch_indices(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` item indices drawn by :func:`sampling_weights`."""
        return rng.choice(len(self.items), size=count, replace=True, p=self.weights())

    def error_voxel_shares(self) -> dict[str, float]:
        """Of the true error voxels an epoch shows (weighted as drawn), the shares inside and outside the query
        mask, and the epoch's mean Dice and identity share: what the network is taught to look for."""
        weights = self.weights()
        inside = outside = 0.0
        for w, (ci, qi) in zip(weights, self.items):
            query, truth = self.cases[ci].queries[qi], self.cases[ci].truth
            wrong = query != truth
            inside += w * np.count_nonzero(wrong & (query > 0))
            outside += w * np.count_nonzero(wrong & (query == 0))
        total = max(inside + outside, 1e-12)
        return {"error_inside_query": inside / total, "error_outside_query": outside / total,
                "mean_dice": float(np.sum(weights * self.dice)), "identity_share": float(weights[self.identity].sum()),
                "near_perfect_share": float(weights[(self.dice >= 0.9) & ~self.identity].sum())}

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
        out_truth = np.zeros(patch, dtype=np.int64)
        out_truth[dst] = truth[box][src]
        dice, nsd = targets.dice, targets.nsd
        if rng is not None and self.empty_query_probability and rng.random() < self.empty_query_probability:
            out_query[:] = 0
            out_errors = np.stack([(out_truth == c) for c in self.labels]).astype(np.float32)
            dice = nsd = 0.0 if out_errors.any() else 1.0
        return Sample(out_image, out_query, out_errors, dice, nsd, out_truth)

    def batch(self, indices: Sequence[int], rng: np.random.Generator | None) -> Batch:
        samples = [self.sample(int(i), rng) for i in indices]
        return Batch(
            image=torch.from_numpy(np.stack([s.image for s in samples])),
            query=torch.from_numpy(np.stack([s.query for s in samples])),
            error_maps=torch.from_numpy(np.stack([s.error_maps for s in samples])),
            dice=torch.tensor([s.dice for s in samples], dtype=torch.float32),
            nsd=torch.tensor([s.nsd for s in samples], dtype=torch.float32),
            truth=torch.from_numpy(np.stack([s.truth for s in samples])),
        )
