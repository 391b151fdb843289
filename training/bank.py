"""The query bank: every case's image, truth and query segmentations, one compressed ``.npz`` per case.

``python -m training.bank --data DIR --out DIR`` builds it (settings in :class:`BankPlan`):

1. split the dataset by case id (the committed split file, extended when the data grew);
2. train the segmenters (:mod:`training.segmenter`) that make real model errors:

   * ``fold0..foldK-1``: 3D U-Nets, each on the training cases outside its fold, trained to real quality
     (hippocampus segmenters reach Dice about 0.88) with snapshots along training, so their predictions
     span poor early masks (heavy over-segmentation) to good final ones;
   * ``weak0..``: a smaller 3D U-Net per fold, trained briefly (another family of errors);
   * ``heldout``: a 3D U-Net on all training cases with another seed, for the validation cases only;
   * ``unet2d``: a slice-wise 2D U-Net on all training cases, for the validation cases only (a second
     segmenter architecture, whose errors no training query resembles);

3. training cases get the truth itself, local defects (:data:`~training.queries.LOCAL_MIX`: good
   segmentations with one or two local errors, what reviewers mostly check), broad defects
   (:data:`~training.queries.TRAIN_MIX`), and the predictions of their fold's segmenters (which never
   saw them) at every snapshot, plain and with flip TTA;
4. validation cases get, with other seeds, the truth, the held-out ``VALIDATION_MIX``, local defects,
   defect families never used in training (:data:`~training.queries.HELD_OUT_MIX`), and the predictions
   of ``heldout`` and ``unet2d``.

Targets are not stored: training recomputes them after spatial augmentation, evaluation computes them
from the stored query and truth.  The bank lives outside the repository (it is derived from the data).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from SegQCLib.io.datasets import hippocampus_dir, list_nnunet_cases
from SegQCLib.io.image_files import read_image, read_labelmap

from .queries import (
    HELD_OUT_MIX,
    LOCAL_MIX,
    TRAIN_MIX,
    VALIDATION_MIX,
    Defect,
    Query,
    QueryMix,
    perturbation_queries,
)
from .segmenter import (
    SEGMENTER_CONFIG_FILE,
    TTA_FLIPS,
    SegmenterConfig,
    SegmenterTraining,
    TrainedSegmenter,
    load_segmenter,
    predict_labels,
    save_segmenter,
    train_segmenter,
)
from .splits import DEFAULT_SPLIT_FILE, load_or_make_split

logger = logging.getLogger(__name__)

BANK_MANIFEST = "manifest.json"
DEFAULT_SEED = 7
# Snapshots as fractions of a run: early ones make the poor queries, the last the good ones.
SNAPSHOT_FRACTIONS = (1 / 30, 1 / 10, 1 / 4, 1 / 2, 1.0)
WEAK_SNAPSHOT_FRACTIONS = (1 / 3, 1.0)
# TTA predictions only of snapshots from this fraction of the run on (early snapshots are all poor).
TTA_FROM_FRACTION = 0.25


@dataclass(frozen=True)
class BankPlan:
    """How many queries of each kind, and how long each segmenter trains."""

    folds: int = 3
    segmenter_iterations: int = 1500
    weak_iterations: int = 300
    heldout_iterations: int = 1500
    second_architecture_iterations: int = 1500
    train_local_queries: int = 12
    train_broad_queries: int = 8
    validation_queries: int = 12
    validation_local_queries: int = 6
    validation_unseen_family_queries: int = 6
    segmenter: SegmenterConfig = SegmenterConfig()
    weak_segmenter: SegmenterConfig = SegmenterConfig(base_channels=4, levels=2)
    second_architecture: SegmenterConfig = SegmenterConfig(architecture="unet2d")
    max_cases: int | None = None


@dataclass
class BankCase:
    """One case of the bank: raw image (z, y, x), truth, queries (Q, z, y, x) and how each was made."""

    case_id: str
    image: np.ndarray
    truth: np.ndarray
    queries: np.ndarray
    sources: list[str]
    spacing_zyx_mm: tuple[float, float, float]
    labels: tuple[int, ...]

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / f"{self.case_id}.npz"
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, image=self.image.astype(np.float32), truth=self.truth.astype(np.uint8),
                            queries=self.queries.astype(np.uint8), sources=np.array(self.sources),
                            spacing_zyx_mm=np.array(self.spacing_zyx_mm), labels=np.array(self.labels))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> BankCase:
        with np.load(path, allow_pickle=False) as data:
            return cls(Path(path).stem, data["image"], data["truth"], data["queries"],
                       [str(s) for s in data["sources"]], tuple(float(v) for v in data["spacing_zyx_mm"]),
                       tuple(int(v) for v in data["labels"]))


def source_name(defects: Sequence[Defect], detail: str = "") -> str:
    """A query's provenance as one string, e.g. ``seggen+boundary``, ``local:missing_part`` or
    ``model:fold0@1500``."""
    name = "+".join(d.value for d in defects)
    return f"{name}:{detail}" if detail else name


def defect_family(source: str) -> str:
    """Coarse group of a source string for reporting: identity, model, model_tta, local (defects of
    :data:`~training.queries.LOCAL_MIX`), unseen (families never in training), perturbation, composed."""
    head, _, detail = source.partition(":")
    if head in (Defect.MODEL.value, Defect.MODEL_TTA.value, Defect.IDENTITY.value):
        return head
    if detail in ("local", "unseen"):
        return detail
    return "composed" if "+" in head else "perturbation"


def source_segmenter(source: str) -> str | None:
    """The segmenter run that made a model query (``fold0``, ``heldout``, ``unet2d``...), else None."""
    head, _, detail = source.partition(":")
    if head not in (Defect.MODEL.value, Defect.MODEL_TTA.value) or not detail:
        return None
    return detail.split("@", 1)[0]


def source_defects(source: str) -> tuple[str, ...]:
    """The defect names of a perturbation query's source (empty for model and identity queries)."""
    head = source.split(":", 1)[0]
    if head in (Defect.MODEL.value, Defect.MODEL_TTA.value, Defect.IDENTITY.value):
        return ()
    return tuple(head.split("+"))


def model_queries(trained: TrainedSegmenter, name: str, image: np.ndarray, with_tta: bool) -> list[Query]:
    """Predictions of every snapshot (and, if asked, flip-TTA predictions of the later snapshots)."""
    queries = []
    iterations = sorted(trained.snapshots)
    last = iterations[-1]
    for iteration in iterations:
        net = trained.model(iteration)
        queries.append(Query(predict_labels(net, image), (Defect.MODEL,), f"{name}@{iteration}"))
        if with_tta and iteration >= TTA_FROM_FRACTION * last:
            queries.append(Query(predict_labels(net, image, TTA_FLIPS), (Defect.MODEL_TTA,), f"{name}@{iteration}"))
    return queries


def _progress_logger(name: str, every: int):
    def report(iteration: int, loss: float) -> None:
        if iteration % every == 0:
            logger.info("segmenter %s: iteration %d loss %.3f", name, iteration, loss)
    return report


def _snapshots(iterations: int, fractions: Sequence[float]) -> tuple[int, ...]:
    return tuple(sorted({max(1, int(round(iterations * f))) for f in fractions}))


SNAPSHOT_FOLDER = "segmenters"


def _train(name: str, cases: Sequence[tuple[np.ndarray, np.ndarray]], iterations: int, fractions: Sequence[float],
           config: SegmenterConfig, seed: int, folder: Path) -> TrainedSegmenter:
    """Train one segmenter run and keep its snapshots under ``folder/<name>/<iteration>``; a run whose
    snapshots are all there already is loaded instead (the bank can be rebuilt without retraining)."""
    wanted = _snapshots(iterations, fractions)
    stored = {it: folder / name / str(it) for it in wanted}
    if all((path / SEGMENTER_CONFIG_FILE).is_file() for path in stored.values()):
        loaded = {it: load_segmenter(path) for it, path in stored.items()}
        if all(net.config == config for net in loaded.values()):
            logger.info("segmenter %s: snapshots %s loaded from %s", name, list(wanted), folder / name)
            return TrainedSegmenter(config, {it: net.state_dict() for it, net in loaded.items()})
    settings = SegmenterTraining(iterations=iterations, batch_size=2, seed=seed, snapshot_iterations=wanted)
    trained = train_segmenter([c[0] for c in cases], [c[1] for c in cases], settings, config,
                              _progress_logger(name, max(1, iterations // 10)))
    logger.info("segmenter %s: %d cases, %d iterations, %.0f s", name, len(cases), iterations, trained.seconds)
    for iteration, path in stored.items():
        save_segmenter(trained.model(iteration), path)
    return trained


def _perturbations(truth: np.ndarray, labels: Sequence[int], rng: np.random.Generator,
                   parts: Sequence[tuple[str, QueryMix, int]], with_truth: bool) -> list[tuple[Query, str]]:
    """The truth (if asked), then each (detail, mix, count) part's perturbation queries with their sources."""
    out = []
    if with_truth:
        out.append((Query(truth.copy(), (Defect.IDENTITY,), "truth"), source_name((Defect.IDENTITY,), "truth")))
    for detail, mix, count in parts:
        for query in perturbation_queries(truth, labels, count, rng, mix):
            identity = query.defects == (Defect.IDENTITY,)
            out.append((query, source_name(query.defects, "truth" if identity else detail)))
    return out


def build_bank(data_dir: str | os.PathLike, out_dir: str | os.PathLike, split_file: str | os.PathLike,
               seed: int = DEFAULT_SEED, plan: BankPlan = BankPlan()) -> Path:
    out = Path(out_dir)
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "validation").mkdir(parents=True, exist_ok=True)
    cases = {c.case_id: c for c in list_nnunet_cases(data_dir)}
    split = load_or_make_split(list(cases), split_file)
    train_ids = list(split.train)
    val_ids = list(split.validation)
    if plan.max_cases is not None:
        train_ids, val_ids = train_ids[: plan.max_cases], val_ids[: max(2, plan.max_cases // 2)]
    loaded = {}
    for case_id in train_ids + val_ids:
        image = read_image(cases[case_id].images[0])
        label = read_labelmap(cases[case_id].label)
        loaded[case_id] = (image.array, label.array, tuple(reversed(image.geometry.spacing_xyz_mm)))
    labels = tuple(sorted({int(v) for cid in train_ids for v in np.unique(loaded[cid][1]) if v != 0}))
    classes = len(labels) + 1

    def configured(config: SegmenterConfig) -> SegmenterConfig:
        return SegmenterConfig(**{**asdict(config), "num_classes": classes})

    folds = max(2, min(plan.folds, len(train_ids)))
    fold_of = {case_id: index % folds for index, case_id in enumerate(train_ids)}
    trained: dict[str, TrainedSegmenter] = {}
    started = time.perf_counter()
    snapshots = out / SNAPSHOT_FOLDER
    for fold in range(folds):
        seen = [loaded[c][:2] for c in train_ids if fold_of[c] != fold]
        trained[f"fold{fold}"] = _train(f"fold{fold}", seen, plan.segmenter_iterations, SNAPSHOT_FRACTIONS,
                                        configured(plan.segmenter), seed + 100 + fold, snapshots)
        trained[f"weak{fold}"] = _train(f"weak{fold}", seen, plan.weak_iterations, WEAK_SNAPSHOT_FRACTIONS,
                                        configured(plan.weak_segmenter), seed + 150 + fold, snapshots)
    everything = [loaded[c][:2] for c in train_ids]
    trained["heldout"] = _train("heldout", everything, plan.heldout_iterations, SNAPSHOT_FRACTIONS,
                                configured(plan.segmenter), seed + 200, snapshots)
    trained["unet2d"] = _train("unet2d", everything, plan.second_architecture_iterations, SNAPSHOT_FRACTIONS,
                               configured(plan.second_architecture), seed + 300, snapshots)
    save_segmenter(trained["heldout"].model(), out / "segmenter")
    save_segmenter(trained["unet2d"].model(), out / "segmenter_unet2d")
    logger.info("segmenters trained in %.0f s", time.perf_counter() - started)

    started = time.perf_counter()
    for subset, ids, query_seed in (("train", train_ids, seed), ("validation", val_ids, seed + 1)):
        for case_index, case_id in enumerate(ids):
            image, truth, spacing = loaded[case_id]
            rng = np.random.default_rng([query_seed, case_index])
            if subset == "train":
                made = _perturbations(truth, labels, rng, (("local", LOCAL_MIX, plan.train_local_queries),
                                                           ("", TRAIN_MIX, plan.train_broad_queries)), True)
                fold = fold_of[case_id]
                runs = [(f"fold{fold}", True), (f"weak{fold}", False)]
            else:
                made = _perturbations(truth, labels, rng, (
                    ("", VALIDATION_MIX, plan.validation_queries),
                    ("local", LOCAL_MIX, plan.validation_local_queries),
                    ("unseen", HELD_OUT_MIX, plan.validation_unseen_family_queries)), False)
                runs = [("heldout", True), ("unet2d", False)]
            for name, with_tta in runs:
                made += [(q, source_name(q.defects, q.source))
                         for q in model_queries(trained[name], name, image, with_tta)]
            BankCase(case_id, image, truth, np.stack([q.mask for q, _ in made]), [s for _, s in made], spacing,
                     labels).save(out / subset)
        logger.info("bank %s: %d cases written (%.0f s so far)", subset, len(ids), time.perf_counter() - started)
    plan_data = asdict(plan)
    manifest = {
        "data": str(data_dir), "split_file": str(split_file), "seed": seed, "labels": list(labels),
        "train_cases": train_ids, "validation_cases": val_ids, "plan": plan_data,
        "segmenter_seconds": {k: round(v.seconds, 1) for k, v in trained.items()},
    }
    (out / BANK_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def load_bank(folder: str | os.PathLike, subset: str) -> list[BankCase]:
    paths = sorted((Path(folder) / subset).glob("*.npz"))
    if not paths:
        from SegQCLib.errors import InputError

        raise InputError(f"No query bank cases in {Path(folder) / subset} (run python -m training.bank first)")
    return [BankCase.load(p) for p in paths if not p.name.endswith(".tmp.npz")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.bank", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(hippocampus_dir()), help="nnU-Net raw dataset folder")
    parser.add_argument("--out", required=True, help="output folder (outside the repository)")
    parser.add_argument("--split", default=str(DEFAULT_SPLIT_FILE), help="split JSON (created if missing)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    defaults = BankPlan()
    parser.add_argument("--folds", type=int, default=defaults.folds)
    parser.add_argument("--segmenter-iterations", type=int, default=defaults.segmenter_iterations)
    parser.add_argument("--weak-iterations", type=int, default=defaults.weak_iterations)
    parser.add_argument("--heldout-iterations", type=int, default=defaults.heldout_iterations)
    parser.add_argument("--second-architecture-iterations", type=int,
                        default=defaults.second_architecture_iterations)
    parser.add_argument("--max-cases", type=int, default=None, help="use only the first N training cases")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    plan = BankPlan(folds=args.folds, segmenter_iterations=args.segmenter_iterations,
                    weak_iterations=args.weak_iterations, heldout_iterations=args.heldout_iterations,
                    second_architecture_iterations=args.second_architecture_iterations, max_cases=args.max_cases)
    build_bank(args.data, args.out, args.split, args.seed, plan)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
