"""How often the domain check flags inputs: ``python -m training.evaluate_domain``.

Two measurements with a model package (default: the bundled hippocampus model and its ``domain.json``), each
through the production path (:meth:`SegQCLib.engine.QCEngine.run_case`, network included):

* **in domain** -- queries of every quality level on the *validation* split (cases the profile never saw): the
  truth itself, perturbations of it (the held-out mix of :mod:`training.queries`, its own seed) and predictions
  of the bundled segmenter (plain and with flip TTA).  The flag rate is reported per quality level (true Dice
  of the query) and per kind of query; it should be at most 2 %.
* **other anatomy** -- every case of ``../shared/data/other/`` (one image and one segmentation per folder): each
  should be flagged, with its reasons.

Writes ``results.json`` and ``table.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from SegQCLib.engine import QCEngine
from SegQCLib.io.case import Case, load_case
from SegQCLib.io.datasets import default_shared_data_dir, hippocampus_dir, list_nnunet_cases
from SegQCLib.io.volumes import LabelMap
from SegQCLib.quality.metrics import multiclass_dice

from .queries import VALIDATION_MIX, perturbation_queries
from .segmenter import TTA_FLIPS, load_segmenter, predict_labels
from .splits import DEFAULT_SPLIT_FILE, load_split

logger = logging.getLogger("training.evaluate_domain")

OTHER_SUBDIR = "other"
DEFAULT_SEGMENTER = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "hippocampus-segmenter"
DEFAULT_QUERIES_PER_CASE = 12
QUERY_SEED = 20251130
# Quality levels: true Dice of the query against the ground truth, [low, high).
DICE_LEVELS = ((0.9, 1.01), (0.8, 0.9), (0.7, 0.8), (0.5, 0.7), (0.0, 0.5))
IMAGE_PREFIXES = ("image",)
SEGMENTATION_PREFIXES = ("seg",)
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


@dataclass
class Flag:
    case: str
    kind: str  # truth, perturbation, segmenter, segmenter_tta, other
    source: str
    dice: Optional[float]
    in_domain: Optional[bool]
    score: Optional[float]
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    flip_disagreement: Optional[float] = None


def other_cases(root: Path) -> list[tuple[str, Path, Path]]:
    """(name, image, segmentation) of every folder under ``root`` holding one ``image.*`` and one ``seg*`` file."""
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        volumes = [p for p in folder.iterdir() if p.name.lower().endswith(VOLUME_SUFFIXES)]
        images = [p for p in volumes if p.name.lower().startswith(IMAGE_PREFIXES)]
        segmentations = [p for p in volumes if p.name.lower().startswith(SEGMENTATION_PREFIXES)]
        if len(images) == 1 and len(segmentations) == 1:
            found.append((folder.name, images[0], segmentations[0]))
        else:
            logger.warning("Skipped %s: expected one image.* and one seg* file", folder)
    return found


def _flag(engine: QCEngine, case: Case, name: str, kind: str, source: str, dice: Optional[float]) -> Flag:
    domain = engine.run_case(case).report.domain
    uncertainty = domain.uncertainty or {}
    return Flag(name, kind, source, dice, domain.in_domain, domain.score, domain.reasons, domain.warnings,
                uncertainty.get("flip_disagreement"))


def validation_flags(engine: QCEngine, split_file: Path, queries_per_case: int, segmenter_dir: Optional[Path],
                     max_cases: Optional[int] = None) -> list[Flag]:
    cases = {c.case_id: c for c in list_nnunet_cases(hippocampus_dir())}
    validation = list(load_split(split_file).validation)[:max_cases]
    segmenter = load_segmenter(segmenter_dir) if segmenter_dir else None
    labels = engine.config.labels
    flags: list[Flag] = []
    started = time.perf_counter()
    for index, case_id in enumerate(validation):
        loaded = load_case(cases[case_id].images, cases[case_id].label)
        truth = loaded.segmentation.array
        rng = np.random.default_rng([QUERY_SEED, index])
        queries = [(q.mask, "truth" if q.source == "truth" else "perturbation", "+".join(d.value for d in q.defects))
                   for q in perturbation_queries(truth, labels, queries_per_case, rng, VALIDATION_MIX)]
        if segmenter is not None:
            image = loaded.images[0].array
            queries.append((predict_labels(segmenter, image), "segmenter", "segmenter"))
            queries.append((predict_labels(segmenter, image, TTA_FLIPS), "segmenter_tta", "segmenter + flip TTA"))
        for mask, kind, source in queries:
            mask = mask.astype(truth.dtype, copy=False)
            dice = float(multiclass_dice(mask, truth, labels))
            query = Case(loaded.images, LabelMap(mask, loaded.geometry), list(loaded.notices))
            flags.append(_flag(engine, query, case_id, kind, source, dice))
        logger.info("%d/%d validation cases, %d queries, %d flagged (%.0f s)", index + 1, len(validation),
                    len(flags), sum(f.in_domain is False for f in flags), time.perf_counter() - started)
    return flags


def other_flags(engine: QCEngine, root: Path) -> list[Flag]:
    flags = []
    for name, image, segmentation in other_cases(root):
        case = load_case([image], segmentation, resample_seg=True)
        flags.append(_flag(engine, case, name, "other", f"{image.name} + {segmentation.name}", None))
    return flags


def rate(flags: Sequence[Flag]) -> tuple[int, int, float]:
    flagged = sum(f.in_domain is False for f in flags)
    return flagged, len(flags), (flagged / len(flags) if flags else float("nan"))


def summarize(validation: Sequence[Flag], other: Sequence[Flag]) -> dict:
    levels = {f"Dice {low:.1f}-{min(high, 1.0):.1f}": rate([f for f in validation if low <= (f.dice or 0) < high])
              for low, high in DICE_LEVELS}
    kinds = {kind: rate([f for f in validation if f.kind == kind])
             for kind in ("truth", "perturbation", "segmenter", "segmenter_tta")}
    return {"validation": rate(validation), "validation_by_level": levels, "validation_by_kind": kinds,
            "other": rate(other), "validation_cases": len({f.case for f in validation})}


def markdown(summary: dict, other: Sequence[Flag], flagged_validation: Sequence[Flag]) -> str:
    def row(name: str, value: tuple[int, int, float]) -> str:
        return f"| {name} | {value[0]} / {value[1]} | {100 * value[2]:.1f} % |"

    lines = ["| queries | flagged | rate |", "|---|---|---|", row("validation, all", summary["validation"])]
    lines += [row(f"validation, {name}", value) for name, value in summary["validation_by_level"].items()]
    lines += [row(f"validation, {name}", value) for name, value in summary["validation_by_kind"].items()]
    lines += [row("other anatomy (../shared/data/other)", summary["other"]), ""]
    lines += ["| other case | flagged | score | reasons |", "|---|---|---|---|"]
    for flag in other:
        reasons = "<br>".join(flag.reasons).replace("|", "/")
        lines.append(f"| {flag.case} | {'yes' if flag.in_domain is False else 'NO'} | {flag.score} | {reasons} |")
    if flagged_validation:
        lines += ["", "Flagged validation queries:", ""]
        lines += [f"- {f.case} ({f.source}, Dice {f.dice:.2f}): {'; '.join(f.reasons)}" for f in flagged_validation]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model package (default: the bundled hippocampus model)")
    parser.add_argument("--split", default=str(DEFAULT_SPLIT_FILE), help="split file (default: %(default)s)")
    parser.add_argument("--queries-per-case", type=int, default=DEFAULT_QUERIES_PER_CASE,
                        help="perturbation queries per validation case, the truth included (default: %(default)s)")
    parser.add_argument("--segmenter", default=str(DEFAULT_SEGMENTER),
                        help="segmenter folder whose predictions are queries too ('' for none; default: %(default)s)")
    parser.add_argument("--other", default=str(default_shared_data_dir() / OTHER_SUBDIR),
                        help="folder of other-anatomy cases (default: %(default)s)")
    parser.add_argument("--max-cases", type=int, default=None, help="only the first N validation cases")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", required=True, help="folder for results.json and table.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    engine = QCEngine(args.model, "cpu")
    other = other_flags(engine, Path(args.other))
    validation = validation_flags(engine, Path(args.split), args.queries_per_case,
                                  Path(args.segmenter) if args.segmenter else None, args.max_cases)
    summary = summarize(validation, other)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"summary": summary, "other": [asdict(f) for f in other],
                                                  "validation": [asdict(f) for f in validation]}, indent=1) + "\n")
    flagged = [f for f in validation if f.in_domain is False]
    (out / "table.md").write_text(markdown(summary, other, flagged), encoding="utf-8")
    print((out / "table.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
