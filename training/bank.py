"""The query bank: every case's image, truth and query segmentations, one compressed ``.npz`` per case.

``python -m training.bank --data DIR --out DIR`` builds it:

1. split the dataset by case id (fixed seed, the committed split file);
2. train three small segmenters (:mod:`training.segmenter`): fold A on half of the training cases, fold
   B on the other half, and a *held-out* one on all training cases with another seed;
3. training cases get perturbation queries (``TRAIN_MIX``, seed ``seed``) and the predictions of the
   fold that did not see them, at every snapshot, plain and with flip TTA;
4. validation cases get perturbation queries from the held-out ``VALIDATION_MIX`` with seed ``seed + 1``,
   and the predictions of the held-out segmenter (a training run whose errors the QC network never saw),
   plus the final fold models' TTA predictions.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from SegQCLib.io.datasets import hippocampus_dir, list_nnunet_cases
from SegQCLib.io.image_files import read_image, read_labelmap

from .queries import TRAIN_MIX, VALIDATION_MIX, Defect, Query, QueryMix, perturbation_queries
from .segmenter import (
    TTA_FLIPS,
    SegmenterConfig,
    SegmenterTraining,
    TrainedSegmenter,
    predict_labels,
    save_segmenter,
    train_segmenter,
)
from .splits import DEFAULT_SPLIT_FILE, load_or_make_split

logger = logging.getLogger(__name__)

BANK_MANIFEST = "manifest.json"
DEFAULT_SEED = 7
DEFAULT_TRAIN_QUERIES = 20
DEFAULT_VALIDATION_QUERIES = 14


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
    """A query's provenance as one string, e.g. ``seggen+boundary`` or ``model:foldA@120``."""
    name = "+".join(d.value for d in defects)
    return f"{name}:{detail}" if detail else name


def defect_family(source: str) -> str:
    """Coarse group of a source string for reporting: identity, model, model_tta, perturbation, composed."""
    head = source.split(":", 1)[0]
    if head in (Defect.MODEL.value, Defect.MODEL_TTA.value, Defect.IDENTITY.value):
        return head
    return "composed" if "+" in head else "perturbation"


def model_queries(trained: TrainedSegmenter, name: str, image: np.ndarray, with_tta: bool) -> list[Query]:
    """Predictions of every snapshot (and, if asked, flip-TTA predictions of the later half)."""
    queries = []
    iterations = sorted(trained.snapshots)
    for iteration in iterations:
        net = trained.model(iteration)
        queries.append(Query(predict_labels(net, image), (Defect.MODEL,), f"{name}@{iteration}"))
        if with_tta and iteration >= iterations[len(iterations) // 2]:
            queries.append(Query(predict_labels(net, image, TTA_FLIPS), (Defect.MODEL_TTA,), f"{name}@{iteration}"))
    return queries


def _progress_logger(name: str, every: int):
    def report(iteration: int, loss: float) -> None:
        if iteration % every == 0:
            logger.info("segmenter %s: iteration %d loss %.3f", name, iteration, loss)
    return report


def build_bank(data_dir: str | os.PathLike, out_dir: str | os.PathLike, split_file: str | os.PathLike,
               seed: int = DEFAULT_SEED, train_queries: int = DEFAULT_TRAIN_QUERIES,
               validation_queries: int = DEFAULT_VALIDATION_QUERIES, segmenter_iterations: int = 250,
               heldout_iterations: int = 400, max_cases: int | None = None,
               train_mix: QueryMix = TRAIN_MIX, validation_mix: QueryMix = VALIDATION_MIX,
               segmenter_config: SegmenterConfig | None = None) -> Path:
    out = Path(out_dir)
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "validation").mkdir(parents=True, exist_ok=True)
    cases = {c.case_id: c for c in list_nnunet_cases(data_dir)}
    split = load_or_make_split(list(cases), split_file)
    train_ids = list(split.train)
    val_ids = list(split.validation)
    if max_cases is not None:
        train_ids, val_ids = train_ids[:max_cases], val_ids[: max(2, max_cases // 2)]
    loaded = {}
    for case_id in train_ids + val_ids:
        image = read_image(cases[case_id].images[0])
        label = read_labelmap(cases[case_id].label)
        loaded[case_id] = (image.array, label.array, tuple(reversed(image.geometry.spacing_xyz_mm)))
    labels = tuple(sorted({int(v) for cid in train_ids for v in np.unique(loaded[cid][1]) if v != 0}))
    config = segmenter_config or SegmenterConfig(num_classes=len(labels) + 1)

    half = len(train_ids) // 2
    folds = {"foldA": train_ids[:half], "foldB": train_ids[half:]}
    step = max(1, segmenter_iterations // 10)
    snapshots = tuple(sorted({max(1, segmenter_iterations * k // 24) for k in (1, 2, 4, 8, 14, 24)}))
    trained: dict[str, TrainedSegmenter] = {}
    for index, (name, ids) in enumerate(folds.items()):
        settings = SegmenterTraining(iterations=segmenter_iterations, batch_size=2, seed=seed + 100 + index,
                                     snapshot_iterations=snapshots)
        trained[name] = train_segmenter([loaded[c][0] for c in ids], [loaded[c][1] for c in ids], settings, config,
                                        _progress_logger(name, step))
        logger.info("segmenter %s: %d cases, %.0f s", name, len(ids), trained[name].seconds)
    heldout_snapshots = tuple(sorted({max(1, heldout_iterations * k // 24) for k in (1, 3, 6, 12, 24)}))
    settings = SegmenterTraining(iterations=heldout_iterations, batch_size=2, seed=seed + 200,
                                 snapshot_iterations=heldout_snapshots)
    trained["heldout"] = train_segmenter([loaded[c][0] for c in train_ids], [loaded[c][1] for c in train_ids],
                                         settings, config, _progress_logger("heldout", step))
    logger.info("segmenter heldout: %d cases, %.0f s", len(train_ids), trained["heldout"].seconds)
    save_segmenter(trained["heldout"].model(), out / "segmenter")

    other_fold = {c: "foldB" for c in folds["foldA"]} | {c: "foldA" for c in folds["foldB"]}
    start = time.perf_counter()
    for subset, ids, mix, n_queries, query_seed in (
        ("train", train_ids, train_mix, train_queries, seed),
        ("validation", val_ids, validation_mix, validation_queries, seed + 1),
    ):
        for case_index, case_id in enumerate(ids):
            image, truth, spacing = loaded[case_id]
            rng = np.random.default_rng([query_seed, case_index])
            queries = perturbation_queries(truth, labels, n_queries, rng, mix)
            sources = [source_name(q.defects, q.source if q.source == "truth" else "") for q in queries]
            if subset == "train":
                model_made = model_queries(trained[other_fold[case_id]], other_fold[case_id], image, with_tta=True)
            else:
                model_made = model_queries(trained["heldout"], "heldout", image, with_tta=True)
                for name in folds:
                    final = trained[name].model()
                    model_made.append(Query(predict_labels(final, image, TTA_FLIPS), (Defect.MODEL_TTA,), name))
            queries += model_made
            sources += [source_name(q.defects, q.source) for q in model_made]
            BankCase(case_id, image, truth, np.stack([q.mask for q in queries]), sources, spacing, labels).save(
                out / subset)
        logger.info("bank %s: %d cases written (%.0f s so far)", subset, len(ids), time.perf_counter() - start)
    manifest = {
        "data": str(data_dir), "split_file": str(split_file), "seed": seed, "labels": list(labels),
        "train_cases": train_ids, "validation_cases": val_ids, "train_queries_per_case": train_queries,
        "validation_queries_per_case": validation_queries,
        "segmenter_seconds": {k: round(v.seconds, 1) for k, v in trained.items()},
    }
    (out / BANK_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def replace_heldout(bank_dir: str | os.PathLike, data_dir: str | os.PathLike, iterations: int,
                    seed: int = DEFAULT_SEED) -> Path:
    """Retrain the held-out segmenter longer and replace its queries in the validation cases.

    The held-out run makes the validation's model-made queries, the TTA baseline and the sample case, so
    it should reach the quality of a real segmentation model; its snapshots still span the Dice range.
    """
    bank = Path(bank_dir)
    manifest = json.loads((bank / BANK_MANIFEST).read_text())
    cases = {c.case_id: c for c in list_nnunet_cases(data_dir)}
    train_ids = manifest["train_cases"]
    images = [read_image(cases[c].images[0]).array for c in train_ids]
    labels = [read_labelmap(cases[c].label).array for c in train_ids]
    snapshots = tuple(sorted({max(1, iterations * k // 24) for k in (1, 3, 6, 12, 24)}))
    settings = SegmenterTraining(iterations=iterations, batch_size=2, seed=seed + 200, snapshot_iterations=snapshots)
    config = SegmenterConfig(num_classes=len(manifest["labels"]) + 1)
    trained = train_segmenter(images, labels, settings, config, _progress_logger("heldout", max(1, iterations // 20)))
    logger.info("segmenter heldout: %d cases, %.0f s", len(train_ids), trained.seconds)
    save_segmenter(trained.model(), bank / "segmenter")
    for path in sorted((bank / "validation").glob("*.npz")):
        case = BankCase.load(path)
        keep = [i for i, source in enumerate(case.sources) if ":heldout" not in source]
        made = model_queries(trained, "heldout", case.image, with_tta=True)
        case.queries = np.concatenate([case.queries[keep], np.stack([q.mask for q in made])])
        case.sources = [case.sources[i] for i in keep] + [source_name(q.defects, q.source) for q in made]
        case.save(bank / "validation")
    manifest["segmenter_seconds"]["heldout"] = round(trained.seconds, 1)
    manifest["heldout_iterations"] = iterations
    (bank / BANK_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return bank


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
    parser.add_argument("--train-queries", type=int, default=DEFAULT_TRAIN_QUERIES)
    parser.add_argument("--validation-queries", type=int, default=DEFAULT_VALIDATION_QUERIES)
    parser.add_argument("--segmenter-iterations", type=int, default=250)
    parser.add_argument("--heldout-iterations", type=int, default=400)
    parser.add_argument("--max-cases", type=int, default=None, help="use only the first N training cases")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--replace-heldout", action="store_true",
                        help="retrain only the held-out segmenter (--heldout-iterations) in an existing bank")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    if args.replace_heldout:
        replace_heldout(args.out, args.data, args.heldout_iterations, args.seed)
        return 0
    build_bank(args.data, args.out, args.split, args.seed, args.train_queries, args.validation_queries,
               args.segmenter_iterations, args.heldout_iterations, args.max_cases)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
