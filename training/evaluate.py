"""Honest evaluation of a QC model on the validation split: ``python -m training.evaluate``.

Every validation query (perturbations from the held-out mix and seed, predictions of a segmenter run the
QC network never saw) goes through the production path, :func:`SegQCLib.network.inference.predict_case`, and is
scored against its ground truth.  Methods compared on the same queries:

* ``network (head)``: the QC network's Dice regression head;
* ``network (SegQC Ê)``: SegQC's estimate from the predicted error maps (eqs. 4-8); its localisation
  metrics are the network's;
* ``constant``: the training-mean Dice, for every query (no localisation);
* ``boundary band``: Ê = the 1-voxel band around each class's query boundary, estimates by SegQC's formula;
* ``mask-only network``: the same network trained without the image (zero image channel);
* ``TTA agreement``: Ê_c = |mean flip-TTA probability of class c − M_c| of the held-out segmenter (SegQC's
  TTA baseline), estimates by SegQC's formula;
* any further QC model packages given by name (``--compare NAME=PATH``), e.g. the previously shipped model.

Localisation is counted as a reviewer meets it (:func:`SegQCLib.quality.evaluation.localisation_counts`): a true
error region is a substantive 2D component of the true error on a slice, found when a box of its class
frames it; a box is right when it frames a true error.  The one-to-one box matching at IoU 0.1 and 0.3 is
kept as a stricter second figure.

Besides the overall table, every method is scored per *group* of queries, with the same bootstrap: quality
bands (true Dice < 0.7, 0.7-0.9, >= 0.9 but imperfect, = 1), defect families never used in training,
the predictions of the slice-wise 2D segmenter (a second architecture), the held-out 3D segmenter, and
the local defects; perfect queries get their own figures (estimated Dice, boxes per query).

Intervals are 95% percentile bootstraps over *cases* (all queries of a resampled case travel together),
so correlated queries of one case do not shrink them.  Writes ``results.json``, ``table.md`` and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from SegQCLib.geometry import Geometry
from SegQCLib.network.inference import predict_case
from SegQCLib.network.package import load_model_package
from SegQCLib.quality.estimates import estimate_case_dice, estimate_class, estimate_class_per_slice
from SegQCLib.quality.evaluation import (
    LocalisationCounts,
    aurc,
    average_precision,
    box_precision_recall,
    correction_curve,
    correction_curve_area,
    e_aurc,
    error_map_dice,
    fraction_fixed_at,
    localisation_counts,
    mae,
    pearson_r,
    spearman_rho,
)
from SegQCLib.quality.metrics import case_metrics, per_slice_dice
from SegQCLib.quality.ranking import slice_error_scores
from SegQCLib.quality.regions import RegionParams, find_error_boxes, in_plane_axes

from .bank import BankCase, defect_family, load_bank, source_segmenter
from .segmenter import TTA_FLIPS, load_segmenter, predict_probabilities

logger = logging.getLogger("training.evaluate")

BOX_IOUS = (0.1, 0.3)
SLICE_FRACTIONS = (0.1, 0.2)
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
BAND_WIDTH_VOXELS = 1
# The report's box parameters: the evaluation scores the boxes a user would see.
DEFAULT_REGION_PARAMS = RegionParams()

NETWORK_HEAD = "network (head)"
NETWORK_ESTIMATE = "network (SegQC Ê)"
CONSTANT = "constant (train mean)"
BAND = "boundary band prior"
MASK_ONLY = "mask-only network"
TTA = "TTA agreement"


QUALITY_BANDS = (("Dice < 0.7", 0.0, 0.7), ("0.7 ≤ Dice < 0.9", 0.7, 0.9), ("0.9 ≤ Dice < 1", 0.9, 1.0),
                 ("perfect (Dice = 1)", 1.0, math.inf))


def quality_band(true_dice: float) -> str:
    for name, low, high in QUALITY_BANDS:
        if low <= true_dice < high or (high == math.inf and true_dice >= low):
            return name
    return QUALITY_BANDS[0][0]


@dataclass
class QueryScores:
    """Every per-query number one method gets on one validation query (nan where not applicable)."""

    case_id: str
    source: str
    family: str
    true_dice: float
    pred_dice: float
    segmenter: str = ""
    n_boxes: int = 0
    localisation: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # found, regions, right, boxes
    true_class_dice: list[float] = field(default_factory=list)
    pred_class_dice: list[float] = field(default_factory=list)
    slice_abs_errors: list[float] = field(default_factory=list)
    error_map_dice: list[float] = field(default_factory=list)
    error_map_dice_outside_band: list[float] = field(default_factory=list)
    auprc: list[float] = field(default_factory=list)
    auprc_outside_band: list[float] = field(default_factory=list)
    boxes: dict[str, list[int]] = field(default_factory=dict)  # iou -> [matched, predicted, true]
    correction_area: float = math.nan
    fixed_at: dict[str, float] = field(default_factory=dict)
    curve: list[float] = field(default_factory=list)


def boundary_band(mask: np.ndarray, width: int = BAND_WIDTH_VOXELS) -> np.ndarray:
    """Voxels within ``width`` voxels of the mask's boundary, inside or outside (empty for an empty mask)."""
    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    return ndimage.binary_dilation(mask, iterations=width) & ~ndimage.binary_erosion(mask, iterations=width)


def band_prior(query: np.ndarray, labels: Sequence[int]) -> dict[int, np.ndarray]:
    """The boundary-band prior: Ê_c = 1 on the 1-voxel band around the query's class-c boundary."""
    return {c: boundary_band(query == c).astype(np.float32) for c in labels}


def tta_error_prob(probabilities: np.ndarray, query: np.ndarray, labels: Sequence[int]) -> dict[int, np.ndarray]:
    """SegQC's TTA baseline: Ê_c = |mean TTA probability of class c − M_c|."""
    return {c: np.abs(probabilities[i + 1] - (query == c)).astype(np.float32) for i, c in enumerate(labels)}


def _boxes_array(boxes, slice_axis: int, label: int) -> np.ndarray:
    a, b = in_plane_axes(slice_axis)
    rows = [[box.slice, box.bbox_zyx[0][a], box.bbox_zyx[0][b], box.bbox_zyx[1][a], box.bbox_zyx[1][b]]
            for box in boxes if box.label == label]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def localisation_scores(scores: QueryScores, error_prob: Mapping[int, np.ndarray], query: np.ndarray,
                        truth: np.ndarray, labels: Sequence[int], geometry: Geometry, slice_axis: int,
                        region_params: RegionParams, true_boxes: Mapping[int, np.ndarray]) -> None:
    """Fill error-map Dice/AUPRC (all voxels and outside the truth's boundary band), boxes, correction curve."""
    predicted = find_error_boxes(error_prob, geometry, slice_axis, region_params)
    for label in labels:
        prob = error_prob[label]
        true_error = (query == label) ^ (truth == label)
        outside = ~boundary_band(truth == label)
        scores.error_map_dice.append(error_map_dice(prob, true_error))
        scores.error_map_dice_outside_band.append(error_map_dice(prob[outside], true_error[outside]))
        scores.auprc.append(average_precision(prob.ravel(), true_error.ravel()) if true_error.any() else math.nan)
        inside = true_error[outside]
        scores.auprc_outside_band.append(average_precision(prob[outside], inside) if inside.any() else math.nan)
    scores.n_boxes = len(predicted)
    counts = LocalisationCounts(0, 0, 0, 0)
    for label in labels:
        counts = counts + localisation_counts(_boxes_array(predicted, slice_axis, label), (query == label) ^ (
            truth == label), slice_axis, geometry.spacing_zyx_mm)
    scores.localisation = [counts.found, counts.regions, counts.right, counts.boxes]
    for iou in BOX_IOUS:
        matched = n_pred = n_true = 0
        for label in labels:
            pred = _boxes_array(predicted, slice_axis, label)
            true = true_boxes[label]
            precision, recall = box_precision_recall(pred, true, iou)
            n_pred += pred.shape[0]
            n_true += true.shape[0]
            matched += int(round(recall * true.shape[0])) if true.shape[0] else 0
        scores.boxes[str(iou)] = [matched, n_pred, n_true]
    slice_scores = slice_error_scores(error_prob, slice_axis)
    other = tuple(a for a in range(3) if a != slice_axis)
    true_per_slice = np.count_nonzero(query != truth, axis=other).astype(np.float64)
    if true_per_slice.sum() > 0:
        scores.correction_area = correction_curve_area(slice_scores, true_per_slice)
        scores.fixed_at = {str(f): fraction_fixed_at(slice_scores, true_per_slice, f) for f in SLICE_FRACTIONS}
        x, y = correction_curve(slice_scores, true_per_slice)
        scores.curve = list(np.interp(np.linspace(0, 1, 21), x, y))


def estimate_scores(scores: QueryScores, error_prob: Mapping[int, np.ndarray], query: np.ndarray,
                    truth: np.ndarray, labels: Sequence[int], slice_axis: int) -> None:
    """Per-class and per-slice Dice from Ê by SegQC's formula, against the true values."""
    scores.pred_class_dice = [estimate_class(query == c, error_prob[c]).dice for c in labels]
    errors = []
    for label in labels:
        estimated = estimate_class_per_slice(query == label, error_prob[label], slice_axis).dice
        true = per_slice_dice(query == label, truth == label, slice_axis)
        valid = np.isfinite(estimated) & np.isfinite(true)
        errors.extend(np.abs(estimated[valid] - true[valid]).tolist())
    scores.slice_abs_errors = errors


def evaluate_bank(cases: Sequence[BankCase], package_dir: str | os.PathLike, mask_only_dir: str | os.PathLike | None,
                  segmenter_dir: str | os.PathLike | None, train_mean_dice: float,
                  max_queries_per_case: int | None = None, region_params: RegionParams = DEFAULT_REGION_PARAMS,
                  compare: Mapping[str, str | os.PathLike] | None = None) -> dict[str, list[QueryScores]]:
    """Score every method on every query of ``cases``; returns method name -> per-query scores."""
    device = torch.device("cpu")
    package = load_model_package(package_dir)
    compared = {name: load_model_package(path) for name, path in (compare or {}).items()}
    config = package.config
    labels = list(config.labels)
    mask_only = load_model_package(mask_only_dir) if mask_only_dir else None
    segmenter = load_segmenter(segmenter_dir) if segmenter_dir else None
    results: dict[str, list[QueryScores]] = {}
    started = time.perf_counter()
    for case_index, case in enumerate(cases):
        spacing_xyz = tuple(reversed(case.spacing_zyx_mm))
        geometry = Geometry(tuple(int(s) for s in case.truth.shape), spacing_xyz)
        slice_axis = geometry.default_slice_axis()
        tta_probs = predict_probabilities(segmenter, case.image, TTA_FLIPS) if segmenter is not None else None
        n_queries = case.queries.shape[0]
        chosen = range(n_queries)
        if max_queries_per_case is not None and n_queries > max_queries_per_case:
            chosen = np.linspace(0, n_queries - 1, max_queries_per_case).round().astype(int)
        for qi in chosen:
            query, truth, source = case.queries[qi], case.truth, case.sources[qi]
            truth_metrics = case_metrics(query, truth, labels, case.spacing_zyx_mm, config.nsd_tolerance_mm)
            true_class = [c.dice for c in truth_metrics.classes]
            true_errors = {c: ((query == c) ^ (truth == c)).astype(np.float32) for c in labels}
            true_boxes = {c: _boxes_array(find_error_boxes({c: true_errors[c]}, geometry, slice_axis, region_params),
                                          slice_axis, c) for c in labels}

            def new(pred_dice: float, *, _case=case.case_id, _source=source, _dice=truth_metrics.dice,
                    _class=true_class) -> QueryScores:
                return QueryScores(_case, _source, defect_family(_source), _dice, float(pred_dice),
                                   segmenter=source_segmenter(_source) or "", true_class_dice=list(_class))

            outputs: list[tuple[str, dict[int, np.ndarray] | None, float | None]] = []
            result = predict_case(package.model, config, [case.image], query, geometry, device)
            outputs.append((NETWORK_ESTIMATE, result.error_prob, None))
            head = new(result.dice_pred)
            results.setdefault(NETWORK_HEAD, []).append(head)
            outputs.append((BAND, band_prior(query, labels), None))
            if mask_only is not None:
                zero = np.zeros_like(case.image)
                masked = predict_case(mask_only.model, mask_only.config, [zero], query, geometry, device)
                outputs.append((MASK_ONLY, masked.error_prob, None))
            if tta_probs is not None:
                outputs.append((TTA, tta_error_prob(tta_probs, query, labels), None))
            for name, other in compared.items():
                outputs.append((name, predict_case(other.model, other.config, [case.image], query, geometry,
                                                   device).error_prob, None))
            results.setdefault(CONSTANT, []).append(new(train_mean_dice))
            for name, error_prob, _ in outputs:
                scores = new(estimate_case_dice(query, error_prob))
                estimate_scores(scores, error_prob, query, truth, labels, slice_axis)
                localisation_scores(scores, error_prob, query, truth, labels, geometry, slice_axis, region_params,
                                    true_boxes)
                results.setdefault(name, []).append(scores)
                if name == NETWORK_ESTIMATE:  # the head shares the network's maps
                    head.error_map_dice, head.error_map_dice_outside_band = (scores.error_map_dice,
                                                                             scores.error_map_dice_outside_band)
                    head.auprc, head.auprc_outside_band = scores.auprc, scores.auprc_outside_band
                    head.boxes, head.correction_area, head.fixed_at = scores.boxes, scores.correction_area, \
                        scores.fixed_at
                    head.curve, head.n_boxes, head.localisation = scores.curve, scores.n_boxes, scores.localisation
        logger.info("evaluated case %d/%d (%s), %.0f s", case_index + 1, len(cases), case.case_id,
                    time.perf_counter() - started)
    return results


# ----------------------------------------------------------------------------------------------------
# Aggregation with a case-level (cluster) bootstrap


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def _ratio_of_sums(numerator: np.ndarray, denominator: np.ndarray) -> float:
    """Micro-averaged rate (e.g. matched boxes / predicted boxes over all queries); nan with no denominator."""
    total = float(np.sum(denominator))
    return float(np.sum(numerator)) / total if total else math.nan


def cluster_bootstrap(groups: np.ndarray, columns: Sequence[np.ndarray], statistic: Callable[..., float],
                      n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(estimate, 2.5 %, 97.5 %) resampling whole groups (cases) with replacement."""
    estimate = float(statistic(*columns))
    unique, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(unique.size)]
    rng = np.random.default_rng(seed)
    replicates = []
    for _ in range(n_resamples):  # one statistic per resample: the statistic is an arbitrary callable
        rows = np.concatenate([members[g] for g in rng.integers(0, unique.size, unique.size)])
        replicates.append(float(statistic(*(c[rows] for c in columns))))
    replicates = np.asarray(replicates)
    if not np.isfinite(replicates).any():
        return estimate, math.nan, math.nan
    low, high = np.nanpercentile(replicates, [2.5, 97.5])
    return estimate, float(low), float(high)


def _expand(scores: Sequence[QueryScores], getter: Callable[[QueryScores], list[float]]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Flatten a per-query list field into (values, case ids) for the bootstrap."""
    values, groups = [], []
    for s in scores:
        items = getter(s)
        values.extend(items)
        groups.extend([s.case_id] * len(items))
    return np.asarray(values, dtype=np.float64), np.asarray(groups)


def summarize(scores: Sequence[QueryScores], with_maps: bool, n_resamples: int = BOOTSTRAP_RESAMPLES
              ) -> dict[str, tuple[float, float, float]]:
    """Every table metric of one method with its bootstrap interval."""
    groups = np.asarray([s.case_id for s in scores])
    pred = np.asarray([s.pred_dice for s in scores])
    true = np.asarray([s.true_dice for s in scores])
    out: dict[str, tuple[float, float, float]] = {}

    def boot(columns, statistic, rows_groups=groups):
        return cluster_bootstrap(rows_groups, columns, statistic, n_resamples)

    out["case Dice MAE"] = boot((pred, true), mae)
    out["Pearson r"] = boot((pred, true), pearson_r)
    out["Spearman ρ"] = boot((pred, true), spearman_rho)
    out["mean (estimate − truth)"] = boot((pred - true,), _nanmean)
    out["AURC"] = boot((pred, 1 - true), aurc)
    out["E-AURC"] = boot((pred, 1 - true), e_aurc)
    if scores[0].pred_class_dice:
        p, g = _expand(scores, lambda s: s.pred_class_dice)
        t, _ = _expand(scores, lambda s: s.true_class_dice)
        out["per-class Dice MAE"] = boot((p, t), mae, g)
    if scores[0].slice_abs_errors or any(s.slice_abs_errors for s in scores):
        v, g = _expand(scores, lambda s: s.slice_abs_errors)
        out["per-slice Dice MAE"] = boot((v,), _nanmean, g)
    if not with_maps:
        return out
    for key, getter in (("error-map Dice", lambda s: s.error_map_dice),
                        ("error-map Dice (outside 1-voxel band)", lambda s: s.error_map_dice_outside_band),
                        ("error-map AUPRC", lambda s: s.auprc),
                        ("error-map AUPRC (outside band)", lambda s: s.auprc_outside_band)):
        v, g = _expand(scores, getter)
        out[key] = boot((v,), _nanmean, g)
    found, regions, right, boxes = np.asarray([s.localisation for s in scores], dtype=np.float64).reshape(-1, 4).T
    out["error-region recall"] = boot((found, regions), _ratio_of_sums)
    out["box precision"] = boot((right, boxes), _ratio_of_sums)
    out["boxes per query"] = boot((np.asarray([s.n_boxes for s in scores], dtype=np.float64),), _nanmean)
    for iou in BOX_IOUS:
        counts = np.asarray([s.boxes[str(iou)] for s in scores], dtype=np.float64)
        matched, n_pred, n_true = counts.T
        out[f"box precision @IoU {iou} (one-to-one)"] = boot((matched, n_pred), _ratio_of_sums)
        out[f"box recall @IoU {iou} (one-to-one)"] = boot((matched, n_true), _ratio_of_sums)
    out["correction-curve area"] = boot((np.asarray([s.correction_area for s in scores]),), _nanmean)
    for fraction in SLICE_FRACTIONS:
        values = np.asarray([s.fixed_at.get(str(fraction), math.nan) for s in scores])
        out[f"error fixed @ top {int(fraction * 100)}% slices"] = boot((values,), _nanmean)
    return out


TARGETS = {"case Dice MAE": ("≤", 0.03), "Pearson r": ("≥", 0.95), "error-map Dice": ("≥", 0.65),
           "error-region recall": ("≥", 0.85), "box precision": ("≥", 0.85), "correction-curve area": ("≥", 0.93)}
# The figures shown per group of queries (the overall table has all of them).
GROUP_METRICS = ("case Dice MAE", "Pearson r", "mean (estimate − truth)", "error-map Dice", "error-region recall",
                 "box precision", "boxes per query", "correction-curve area")


def markdown_table(summaries: Mapping[str, Mapping[str, tuple[float, float, float]]], counts: Mapping[str, int],
                   with_counts: bool = True) -> str:
    methods = list(summaries)
    metrics: list[str] = []
    for summary in summaries.values():
        metrics.extend(m for m in summary if m not in metrics)
    header = "| metric | target | " + " | ".join(methods) + " |"
    lines = [header, "|" + "---|" * (len(methods) + 2)]
    for metric in metrics:
        target = TARGETS.get(metric)
        cells = []
        for method in methods:
            value = summaries[method].get(metric)
            if value is None or not np.isfinite(value[0]):
                cells.append("—")
            else:
                estimate, low, high = value
                cells.append(f"{estimate:.3f} [{low:.3f}, {high:.3f}]")
        target_text = f"{target[0]} {target[1]:.2f}" if target else ""
        lines.append(f"| {metric} | {target_text} | " + " | ".join(cells) + " |")
    if with_counts:
        lines.append("")
        lines.append("Queries per method: " + ", ".join(f"{m}: {n}" for m, n in counts.items()) + ".")
    return "\n".join(lines) + "\n"


def family_table(scores: Sequence[QueryScores]) -> str:
    """Network results per query family (perturbation, composed, model, model_tta, identity)."""
    lines = ["| family | queries | mean true Dice | Dice MAE (head) | error-map Dice |", "|---|---|---|---|---|"]
    families = sorted({s.family for s in scores})
    for family in families:
        chosen = [s for s in scores if s.family == family]
        pred = np.asarray([s.pred_dice for s in chosen])
        true = np.asarray([s.true_dice for s in chosen])
        emd = _nanmean(np.concatenate([s.error_map_dice for s in chosen]))
        lines.append(f"| {family} | {len(chosen)} | {true.mean():.3f} | {mae(pred, true):.3f} | {emd:.3f} |")
    return "\n".join(lines) + "\n"


def plot_results(results: Mapping[str, Sequence[QueryScores]], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    names = [m for m in results if m != CONSTANT]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    for axis, name in zip(axes[0], names):
        true = [s.true_dice for s in results[name]]
        pred = [s.pred_dice for s in results[name]]
        axis.scatter(true, pred, s=5, alpha=0.5)
        axis.plot([0, 1], [0, 1], "k--", lw=0.8)
        axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="true Dice", ylabel="predicted Dice", title=name)
        axis.title.set_fontsize(9)
    fig.tight_layout()
    paths.append(out_dir / "scatter_dice.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(5, 4))
    grid = np.linspace(0, 1, 21)
    for name in names:
        if name == NETWORK_HEAD:
            continue
        curves = [s.curve for s in results[name] if s.curve]
        if curves:
            axis.plot(grid, np.mean(curves, axis=0), label=name)
    axis.plot(grid, grid, "k:", label="random")
    axis.set(xlabel="fraction of slices corrected", ylabel="fraction of error fixed", title="Correction curves")
    axis.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "correction_curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def query_groups(scores: Sequence[QueryScores]) -> dict[str, np.ndarray]:
    """Boolean selections of the queries, by quality band and by what the network never saw in training."""
    true = np.asarray([s.true_dice for s in scores])
    groups = {name: np.asarray([quality_band(d) == name for d in true]) for name, _, _ in QUALITY_BANDS}
    families = np.asarray([s.family for s in scores])
    segmenters = np.asarray([s.segmenter for s in scores])
    groups["unseen defect families"] = families == "unseen"
    groups["2D segmenter (unseen architecture)"] = segmenters == "unet2d"
    groups["held-out 3D segmenter"] = segmenters == "heldout"
    groups["local defects"] = families == "local"
    return {name: chosen for name, chosen in groups.items() if chosen.any()}


def group_tables(results: Mapping[str, Sequence[QueryScores]], n_resamples: int) -> str:
    """One markdown table per query group: every method's figures of :data:`GROUP_METRICS` with intervals."""
    reference = next(iter(results.values()))
    sections = []
    for group, chosen in query_groups(reference).items():
        summaries = {}
        for method, scores in results.items():
            subset = [s for s, keep in zip(scores, chosen) if keep]
            summary = summarize(subset, with_maps=method != CONSTANT, n_resamples=n_resamples)
            summaries[method] = {k: v for k, v in summary.items() if k in GROUP_METRICS}
        sections.append(f"### {group} ({int(chosen.sum())} queries)\n\n"
                        + markdown_table(summaries, {m: int(chosen.sum()) for m in results}, with_counts=False))
    return "\n".join(sections)


def _evaluate_shard(arguments: tuple) -> dict[str, list[QueryScores]]:
    torch.set_num_threads(1)
    return evaluate_bank(*arguments)


def evaluate_in_parallel(cases: Sequence[BankCase], workers: int, *arguments) -> dict[str, list[QueryScores]]:
    """:func:`evaluate_bank` over ``workers`` processes (cases dealt round-robin), results merged."""
    if workers <= 1 or len(cases) < 2:
        return evaluate_bank(cases, *arguments)
    import multiprocessing

    shards = [list(cases[i::workers]) for i in range(workers)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_evaluate_shard, [(shard, *arguments) for shard in shards if shard])
    merged: dict[str, list[QueryScores]] = {}
    for part in parts:
        for name, scores in part.items():
            merged.setdefault(name, []).extend(scores)
    return merged


def run_evaluation(bank_dir: str | os.PathLike, model_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   mask_only_dir: str | os.PathLike | None, segmenter_dir: str | os.PathLike | None,
                   train_mean_dice: float, max_cases: int | None = None, max_queries_per_case: int | None = None,
                   n_resamples: int = BOOTSTRAP_RESAMPLES, workers: int = 1,
                   compare: Mapping[str, str | os.PathLike] | None = None) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = load_bank(bank_dir, "validation")
    if max_cases is not None:
        cases = cases[:max_cases]
    started = time.perf_counter()
    results = evaluate_in_parallel(cases, workers, model_dir, mask_only_dir, segmenter_dir, train_mean_dice,
                                   max_queries_per_case, DEFAULT_REGION_PARAMS, dict(compare or {}))
    seconds = time.perf_counter() - started
    summaries = {name: summarize(scores, with_maps=name != CONSTANT, n_resamples=n_resamples)
                 for name, scores in results.items()}
    order = [m for m in (NETWORK_HEAD, NETWORK_ESTIMATE, *(compare or {}), CONSTANT, BAND, MASK_ONLY, TTA)
             if m in summaries]
    summaries = {m: summaries[m] for m in order}
    counts = {m: len(results[m]) for m in order}
    table = markdown_table(summaries, counts)
    families = family_table(results[NETWORK_HEAD])
    (out / "table.md").write_text(
        f"# QC evaluation on the validation split ({len(cases)} cases, {counts[NETWORK_HEAD]} queries)\n\n"
        f"95% intervals: percentile bootstrap over cases ({n_resamples} resamples).\n\n" + table
        + "\n## By group of queries\n\n" + group_tables({m: results[m] for m in order}, n_resamples)
        + "\n## Network by query family\n\n" + families)
    plots = plot_results(results, out)
    data = {"cases": [c.case_id for c in cases], "seconds": round(seconds, 1), "model": str(model_dir),
            "summaries": {m: {k: list(v) for k, v in s.items()} for m, s in summaries.items()},
            "queries": {m: [asdict(s) for s in v] for m, v in results.items()}}
    (out / "results.json").write_text(json.dumps(data) + "\n")
    logger.info("evaluation written to %s (%s)", out, ", ".join(p.name for p in plots))
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--bank", required=True, help="query bank folder (python -m training.bank)")
    parser.add_argument("--model", required=True, help="QC model package to evaluate")
    parser.add_argument("--out", required=True, help="folder for table.md, results.json and plots")
    parser.add_argument("--mask-only-model", default=None, help="model package trained with --mask-only")
    parser.add_argument("--segmenter", default=None, help="segmenter folder for the TTA baseline "
                        "(default: BANK/segmenter)")
    parser.add_argument("--train-mean-dice", type=float, default=None,
                        help="constant baseline (default: read from the model's training settings)")
    parser.add_argument("--max-cases", type=int, default=None)
    parser.add_argument("--max-queries-per-case", type=int, default=None)
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP_RESAMPLES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="processes (cases are split between them)")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=PATH",
                        help="another QC model package scored on the same queries (repeatable)")
    args = parser.parse_args(argv)
    compare = dict(item.split("=", 1) for item in args.compare)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    segmenter = args.segmenter or str(Path(args.bank) / "segmenter")
    mean_dice = args.train_mean_dice
    if mean_dice is None:
        mean_dice = float(load_model_package(args.model).config.validation_metrics.get("train_mean_dice", math.nan))
    data = run_evaluation(args.bank, args.model, args.out, args.mask_only_model,
                          segmenter if Path(segmenter).is_dir() else None, mean_dice, args.max_cases,
                          args.max_queries_per_case, args.bootstrap, args.workers, compare)
    print((Path(args.out) / "table.md").read_text())
    print(f"evaluation took {data['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
