"""Fine-tune a QC model on recorded corrections: ``python -m training.finetune --corrections DIR --model M --out M2``.

Every correction record is a QC training example with an exact target: the query is the segmentation
before review (M), the truth is the reviewer's corrected segmentation (T), the target error maps are
E_c = (M == c) xor (T == c) (SegQC paper: correction data has less observer variability than
annotation from scratch).  ``--corrections`` is a corrections store (newest version of each case by
default, ``--all-versions`` for all) or a ``qc`` export of one (``segqc corrections export --format qc``).

Steps:

1. Split the corrections by case id (every version of a case on the same side; seeded): a held-out
   part is never trained on and measures the change.
2. Evaluate the base model on the held-out corrections (Dice MAE, Pearson r of predicted vs true Dice,
   error-map Dice; no augmentation, prepared exactly as at inference) and, with ``--bank``, on the
   original validation queries (forgetting check).
3. Continue training from the base weights with the training loss of ``training.train``; each batch
   mixes correction queries with the original training queries of ``--bank`` (``--replay-fraction``)
   so that the network does not forget what it knew.  Low learning rate, cosine decay, seeded.
4. Evaluate again, write the new model package (config version ``<base>+ft<N>``, the card records the
   base model's sha256, the data, the settings and the before/after figures) and a JSON summary.

Images are resampled to the model's target spacing (linear; masks nearest-neighbour) when a record's
spacing differs from it, as inference does.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk
import torch

from SegQCLib.corrections.export import load_qc_dataset
from SegQCLib.corrections.store import CorrectionStore
from SegQCLib.errors import InputError
from SegQCLib.geometry import Geometry
from SegQCLib.io.image_files import read_image, read_labelmap
from SegQCLib.network.package import load_model_package, save_model_package
from SegQCLib.network.qcresunet import one_hot

from .bank import BankCase, load_bank
from .dataset import AugmentParams, Batch, QueryDataset
from .train import TrainSettings, evaluate_dataset, learning_rate_at, multitask_loss

logger = logging.getLogger("training.finetune")

SUMMARY_FILE_SUFFIX = ".finetune.json"
SPACING_TOLERANCE = 0.01  # relative: below this the record is used at its own spacing
REPLAY_VALIDATION_QUERIES = 60  # forgetting check: evaluated before and after, keep it cheap


@dataclass
class FinetuneSettings:
    iterations: int = 200
    batch_size: int = 4
    learning_rate: float = 2e-4
    min_learning_rate: float = 1e-6
    warmup_iterations: int = 10
    weight_decay: float = 1e-4
    replay_fraction: float = 0.5
    holdout_fraction: float = 0.3
    error_map_weight: float = 1.0
    seed: int = 0
    threads: int = 2
    max_minutes: float = 0.0
    all_versions: bool = False


@dataclass
class CorrectionExample:
    """One correction as a training example on the model's grid."""

    case_id: str
    record_id: str
    bank_case: BankCase


@dataclass
class FinetuneResult:
    package: Path
    train_cases: list[str]
    heldout_cases: list[str]
    before: dict[str, dict[str, float]]
    after: dict[str, dict[str, float]]
    iterations: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------
# Loading corrections


def _resample(array: np.ndarray, geometry: Geometry, spacing_zyx_mm: Sequence[float], linear: bool) -> np.ndarray:
    image = sitk.GetImageFromArray(array)
    geometry.apply_to(image)
    old_spacing = np.asarray(geometry.spacing_xyz_mm)
    new_spacing = np.asarray(spacing_zyx_mm, dtype=float)[::-1]
    size = np.maximum(1, np.round(np.asarray(image.GetSize()) * old_spacing / new_spacing)).astype(int)
    interpolator = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    resampled = sitk.Resample(image, [int(s) for s in size], sitk.Transform(), interpolator, image.GetOrigin(),
                              [float(s) for s in new_spacing], image.GetDirection(), 0.0, image.GetPixelID())
    return sitk.GetArrayFromImage(resampled)


def _example(case_id: str, record_id: str, image_paths: Sequence[Path], query_path: Path, truth_path: Path,
             labels: Sequence[int], target_spacing_zyx_mm: Optional[Sequence[float]]) -> CorrectionExample:
    if len(image_paths) != 1:
        raise InputError(f"Correction {record_id} has {len(image_paths)} image channels; fine-tuning supports "
                         "single-modality models")
    image = read_image(image_paths[0])
    query = read_labelmap(query_path).array
    truth = read_labelmap(truth_path).array
    spacing = image.geometry.spacing_zyx_mm
    image_array = image.array
    if target_spacing_zyx_mm is not None and not np.allclose(spacing, target_spacing_zyx_mm,
                                                             rtol=SPACING_TOLERANCE):
        image_array = _resample(image_array, image.geometry, target_spacing_zyx_mm, linear=True)
        query = _resample(query, image.geometry, target_spacing_zyx_mm, linear=False)
        truth = _resample(truth, image.geometry, target_spacing_zyx_mm, linear=False)
        spacing = tuple(float(s) for s in target_spacing_zyx_mm)
    bank_case = BankCase(f"{case_id}__{record_id.replace('/', '_')}", image_array.astype(np.float32),
                         truth.astype(np.uint8), query[None].astype(np.uint8), [f"correction:{record_id}"],
                         tuple(float(s) for s in spacing), tuple(int(c) for c in labels))
    return CorrectionExample(case_id, record_id, bank_case)


def load_corrections(source: str | Path, labels: Sequence[int], target_spacing_zyx_mm: Optional[Sequence[float]],
                     all_versions: bool = False) -> list[CorrectionExample]:
    """Correction examples from a corrections store (checksums verified) or from a ``qc`` export."""
    source = Path(source)
    store = CorrectionStore(source)
    examples = []
    if store.is_store():
        summaries = store.list() if all_versions else store.latest()
        for summary in summaries:
            record = store.load(summary.record_id, check=True)
            examples.append(_example(record.case_id, record.record_id, record.image_paths, record.original_path,
                                     record.corrected_path, labels, target_spacing_zyx_mm))
    else:
        for case in load_qc_dataset(source):
            examples.append(_example(case.case_id, case.record_id, case.images, case.query, case.truth, labels,
                                     target_spacing_zyx_mm))
    if not examples:
        raise InputError(f"No corrections found in {source}")
    return examples


def split_by_case(examples: Sequence[CorrectionExample], holdout_fraction: float, seed: int
                  ) -> tuple[list[CorrectionExample], list[CorrectionExample]]:
    """(train, held out): whole cases on one side, at least one case on each side."""
    case_ids = sorted({e.case_id for e in examples})
    if len(case_ids) < 2:
        raise InputError(f"Fine-tuning needs corrections of at least 2 cases (one to hold out), got {case_ids}")
    count = min(len(case_ids) - 1, max(1, int(round(holdout_fraction * len(case_ids)))))
    order = np.random.default_rng(seed).permutation(len(case_ids))
    heldout = {case_ids[i] for i in order[:count]}
    return ([e for e in examples if e.case_id not in heldout], [e for e in examples if e.case_id in heldout])


# ----------------------------------------------------------------------------------------------------
# Training


def _concat(a: Batch, b: Batch) -> Batch:
    fields = ("image", "query", "error_maps", "dice", "nsd", "truth")
    return Batch(*(torch.cat([getattr(a, name), getattr(b, name)]) for name in fields))


def _as_train_settings(settings: FinetuneSettings) -> TrainSettings:
    return TrainSettings(iterations=settings.iterations, batch_size=settings.batch_size,
                         learning_rate=settings.learning_rate, min_learning_rate=settings.min_learning_rate,
                         warmup_iterations=settings.warmup_iterations, weight_decay=settings.weight_decay,
                         error_map_weight=settings.error_map_weight, seed=settings.seed, threads=settings.threads,
                         max_minutes=settings.max_minutes)


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()}


def finetune(corrections: str | Path, model_dir: str | Path, out_dir: str | Path,
             settings: Optional[FinetuneSettings] = None, bank_dir: Optional[str | Path] = None) -> FinetuneResult:
    settings = settings or FinetuneSettings()
    if not 0.0 <= settings.replay_fraction < 1.0:
        raise InputError(f"replay fraction must be in [0, 1), got {settings.replay_fraction}")
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    package = load_model_package(model_dir)
    config = package.config
    model = package.model.to(device)
    examples = load_corrections(corrections, config.labels, config.target_spacing_zyx_mm, settings.all_versions)
    train_examples, heldout_examples = split_by_case(examples, settings.holdout_fraction, settings.seed)
    train_set = QueryDataset([e.bank_case for e in train_examples], config, AugmentParams())
    heldout_set = QueryDataset([e.bank_case for e in heldout_examples], config)
    eval_sets = {"heldout_corrections": heldout_set,
                 "train_corrections": QueryDataset([e.bank_case for e in train_examples], config)}
    replay_set = None
    if bank_dir is not None:
        replay_set = QueryDataset(load_bank(bank_dir, "train"), config, AugmentParams())
        original_validation = QueryDataset(load_bank(bank_dir, "validation"), config)
        original_validation.keep(REPLAY_VALIDATION_QUERIES)
        eval_sets["original_validation"] = original_validation
    before = {name: _rounded(evaluate_dataset(model, data, device)) for name, data in eval_sets.items()}
    logger.info("before: %s", before)

    train_settings = _as_train_settings(settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    rng = np.random.default_rng(settings.seed)
    n_replay = 0
    if replay_set is not None:  # at least one correction per batch
        n_replay = min(settings.batch_size - 1, int(round(settings.batch_size * settings.replay_fraction)))
    n_corrections = settings.batch_size - n_replay
    started = time.perf_counter()
    model.train()
    iteration = 0
    while iteration < settings.iterations:
        batch = train_set.batch(rng.integers(0, len(train_set), n_corrections), rng)
        if n_replay:
            batch = _concat(batch, replay_set.batch(replay_set.epoch_indices(n_replay, rng), rng))
        batch = batch.to(device)
        output = model(batch.image, one_hot(batch.query, config.mask_labels))
        loss, parts = multitask_loss(output, batch, train_settings, config.labels)
        elapsed = time.perf_counter() - started
        progress = iteration / settings.iterations
        if settings.max_minutes > 0:
            progress = max(progress, elapsed / (settings.max_minutes * 60))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(iteration, min(1.0, progress), train_settings)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        iteration += 1
        if iteration % 25 == 0:
            logger.info("iteration %d/%d loss %.4f %s", iteration, settings.iterations, parts["loss"],
                        {k: round(v, 4) for k, v in parts.items() if k != "loss"})
        if settings.max_minutes > 0 and elapsed > settings.max_minutes * 60:
            logger.warning("Stopping at iteration %d: --max-minutes %.1f reached", iteration, settings.max_minutes)
            break
    seconds = time.perf_counter() - started
    model.eval()
    after = {name: _rounded(evaluate_dataset(model, data, device)) for name, data in eval_sets.items()}
    logger.info("after: %s", after)

    train_cases = sorted({e.case_id for e in train_examples})
    heldout_cases = sorted({e.case_id for e in heldout_examples})
    new_config = type(config).from_dict(config.to_dict())
    new_config.version = f"{config.version}+ft{len(train_examples)}"
    new_config.trained = True
    new_config.training_data = f"{config.training_data}; fine-tuned on corrections {Path(corrections).resolve()}"
    new_config.validation_metrics = {"finetune_before": before, "finetune_after": after,
                                     "heldout_cases": heldout_cases, "base_sha256": package.sha256}
    result = FinetuneResult(Path(out_dir), train_cases, heldout_cases, before, after, iteration, round(seconds, 1),
                            asdict(settings))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_model_package(out_dir, new_config, state, _card(package, new_config, result, corrections, bank_dir))
    summary_path = Path(out_dir).with_name(Path(out_dir).name + SUMMARY_FILE_SUFFIX)
    summary_path.write_text(json.dumps(_summary(result), indent=2) + "\n", encoding="utf-8")
    return result


def _summary(result: FinetuneResult) -> dict[str, Any]:
    data = asdict(result)
    data["package"] = str(result.package)
    return data


def _card(base: Any, config: Any, result: FinetuneResult, corrections: Any, bank_dir: Any) -> str:
    rows = []
    for name in result.before:
        b, a = result.before[name], result.after[name]
        rows.append(f"| {name} | {b['queries']} | {b['dice_mae']:.4f} → {a['dice_mae']:.4f} | "
                    f"{b['dice_r']:.3f} → {a['dice_r']:.3f} | {b['error_map_dice']:.3f} → {a['error_map_dice']:.3f} |")
    table = "\n".join(rows)
    return (
        f"# {config.name} {config.version}\n\n"
        f"Fine-tuned from {base.config.name} {base.config.version} (weights sha256 `{base.sha256}`) on expert\n"
        f"corrections from `{corrections}` with `python -m training.finetune`"
        f"{f', replaying the original training queries of `{bank_dir}`' if bank_dir else ''}.\n\n"
        f"- Correction cases trained on ({len(result.train_cases)}): {', '.join(result.train_cases)}\n"
        f"- Held-out correction cases ({len(result.heldout_cases)}): {', '.join(result.heldout_cases)}\n"
        f"- Iterations: {result.iterations} ({result.seconds:.0f} s), settings: {json.dumps(result.settings)}\n\n"
        "## Before → after\n\n"
        "| set | queries | Dice MAE | Pearson r | error-map Dice |\n|---|---|---|---|---|\n"
        f"{table}\n\n"
        "Held-out corrections are whole cases never trained on; original_validation (when present) checks\n"
        "that the model did not forget the data it was trained on.\n\n"
        "## Base model card\n\n" + (base.card or "(none)") + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    defaults = FinetuneSettings()
    parser = argparse.ArgumentParser(prog="python -m training.finetune", description=__doc__.splitlines()[0])
    parser.add_argument("--corrections", required=True, help="corrections store, or a qc export of one")
    parser.add_argument("--model", required=True, help="base model package")
    parser.add_argument("--out", required=True, help="new model package folder")
    parser.add_argument("--bank", help="query bank of the base model's training (replayed so it does not forget)")
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate)
    parser.add_argument("--replay-fraction", type=float, default=defaults.replay_fraction)
    parser.add_argument("--holdout-fraction", type=float, default=defaults.holdout_fraction)
    parser.add_argument("--all-versions", action="store_true", help="every version of each case, not the newest")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--max-minutes", type=float, default=0.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = FinetuneSettings(iterations=args.iterations, batch_size=args.batch_size, learning_rate=args.lr,
                                replay_fraction=args.replay_fraction, holdout_fraction=args.holdout_fraction,
                                seed=args.seed, threads=args.threads, max_minutes=args.max_minutes,
                                all_versions=args.all_versions)
    result = finetune(args.corrections, args.model, args.out, settings, args.bank)
    print(json.dumps(_summary(result), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
