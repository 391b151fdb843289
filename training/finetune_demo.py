"""Demonstration of the active-learning loop on the shared data: ``python -m training.finetune_demo``.

1. A weak segmenter (``--segmenter`` folder saved by ``training.segmenter.save_segmenter``, else one
   trained here for ``--segmenter-iterations`` on the training split) segments validation-split cases
   (never seen by the QC model's training, which uses the training split).
2. A simulated annotator corrects each prediction to the ground truth; every correction is recorded in a
   corrections store with ``CorrectionStore.add`` (as the Slicer module and ``segqc corrections add`` do).
3. ``training.finetune`` fine-tunes the QC model ``--model`` on the corrections of some cases (replaying
   the original training queries of ``--bank``) and reports Dice MAE / Pearson r / error-map Dice before
   and after on the corrections of held-out cases.

Everything is written under ``--out`` (the store, the new model package, ``demo.json``); nothing of the
shared data is copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from SegQCLib.corrections.store import CorrectionStore
from SegQCLib.io.datasets import hippocampus_dir, list_nnunet_cases
from SegQCLib.io.image_files import read_image, read_labelmap
from SegQCLib.io.volumes import LabelMap
from SegQCLib.quality.metrics import multiclass_dice

from .finetune import FinetuneSettings, finetune
from .segmenter import SegmenterTraining, load_segmenter, predict_labels, train_segmenter
from .splits import DEFAULT_SPLIT_FILE, load_or_make_split

logger = logging.getLogger("training.finetune_demo")

LABELS = (1, 2)


def weak_segmenter(segmenter_dir: str | None, train_ids: Sequence[str], cases: dict, iterations: int):
    if segmenter_dir:
        return load_segmenter(segmenter_dir)
    images = [read_image(cases[i].images[0]).array for i in train_ids]
    labels = [read_labelmap(cases[i].label).array for i in train_ids]
    settings = SegmenterTraining(iterations=iterations, snapshot_iterations=(iterations,))
    return train_segmenter(images, labels, settings).model()


def record_corrections(store: CorrectionStore, net, case_ids: Sequence[str], cases: dict) -> list[float]:
    """Segment each case, 'correct' it to the truth, record it; returns the segmenter's true Dice per case."""
    dices = []
    for case_id in case_ids:
        image = read_image(cases[case_id].images[0])
        truth = read_labelmap(cases[case_id].label)
        with torch.no_grad():
            prediction = predict_labels(net, image.array).astype(np.uint8)
        dices.append(multiclass_dice(prediction, truth.array, LABELS))
        started = time.perf_counter()
        store.add(case_id, [image], LabelMap(prediction, image.geometry), truth,
                  reviewer="simulated annotator (ground truth)",
                  model_info={"name": "weak-segmenter", "version": "demo"},
                  review_duration_s=time.perf_counter() - started)
    return dices


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.finetune_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="base QC model package (trained on the training split)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--bank", help="query bank of the base model (replayed; also the forgetting check)")
    parser.add_argument("--segmenter", help="saved weak segmenter folder (default: train one here)")
    parser.add_argument("--segmenter-iterations", type=int, default=60)
    parser.add_argument("--segmenter-cases", type=int, default=20)
    parser.add_argument("--cases", type=int, default=30, help="validation cases segmented and corrected")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--holdout-fraction", type=float, default=0.4)
    parser.add_argument("--max-minutes", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = {c.case_id: c for c in list_nnunet_cases(hippocampus_dir())}
    split = load_or_make_split(list(cases), DEFAULT_SPLIT_FILE)
    started = time.perf_counter()
    net = weak_segmenter(args.segmenter, list(split.train)[: args.segmenter_cases], cases, args.segmenter_iterations)
    store = CorrectionStore(out / "store")
    if store.is_store() and store.list():
        raise SystemExit(f"{store.root} already holds corrections; choose a new --out")
    dices = record_corrections(store, net, list(split.validation)[: args.cases], cases)
    logger.info("recorded %d corrections; weak segmenter Dice mean %.3f (min %.3f, max %.3f)", len(dices),
                np.mean(dices), np.min(dices), np.max(dices))
    settings = FinetuneSettings(iterations=args.iterations, holdout_fraction=args.holdout_fraction,
                                threads=args.threads, max_minutes=args.max_minutes)
    result = finetune(store.root, args.model, out / "model", settings, args.bank)
    demo = {"corrections": len(dices), "segmenter_dice_mean": round(float(np.mean(dices)), 4),
            "segmenter_dice_range": [round(float(np.min(dices)), 4), round(float(np.max(dices)), 4)],
            "heldout_cases": result.heldout_cases, "train_cases": result.train_cases,
            "before": result.before, "after": result.after, "finetune_iterations": result.iterations,
            "finetune_seconds": result.seconds, "total_seconds": round(time.perf_counter() - started, 1),
            "base_model": str(Path(args.model).resolve()), "bank": args.bank}
    (out / "demo.json").write_text(json.dumps(demo, indent=2) + "\n", encoding="utf-8")
    for name in result.before:
        b, a = result.before[name], result.after[name]
        print(f"{name:20s} queries {b['queries']:3d}  Dice MAE {b['dice_mae']:.4f} -> {a['dice_mae']:.4f}  "
              f"r {b['dice_r']:.3f} -> {a['dice_r']:.3f}  error-map Dice {b['error_map_dice']:.3f} -> "
              f"{a['error_map_dice']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
