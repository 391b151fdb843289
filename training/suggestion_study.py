"""Whether accepting SegQC's suggested edits helps: queries with a known truth, the QC model's edits, true gains.

For every case of one side of the split (``train`` for calibrating the threshold, ``validation`` for measuring)
the queries are perturbations of the truth (:func:`training.queries.perturbation_queries` with a mix) and the
bundled segmenter's prediction.  Each query goes through the QC engine with ``--suggest``; then, against the
truth, every edit is applied alone (true Dice gain of its class, beside its expected gain) and the query is
scored after accepting the top-k offered edits, every offered edit, every edit, and the whole suggested
segmentation.  :mod:`training.calibrate_suggestions` and :mod:`training.measure_suggestions` use it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from SegQCLib.engine import QCEngine
from SegQCLib.io.case import Case
from SegQCLib.io.datasets import list_nnunet_cases
from SegQCLib.io.image_files import read_image, read_labelmap
from SegQCLib.io.volumes import LabelMap, Volume
from SegQCLib.quality.metrics import dice, multiclass_dice

from .queries import QueryMix, perturbation_queries
from .segmenter import load_segmenter, predict_labels
from .splits import load_split

logger = logging.getLogger(__name__)

DEFAULT_SEGMENTER = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "hippocampus-segmenter"
TOP_K = (1, 3, 5)
ALL_OFFERED = "all offered"
ALL_EDITS = "all edits"
WHOLE_SUGGESTION = "suggested segmentation"
STRATEGIES = (*(f"top-{k}" for k in TOP_K), ALL_OFFERED, ALL_EDITS, WHOLE_SUGGESTION)
# A change of Dice smaller than this is "no change" (float noise; one voxel of a hippocampus class is ~1e-3).
DICE_TOLERANCE = 1e-9
# A threshold every non-empty edit clears (Dice gains lie in [-1, 1]): the study sees every edit.
OFFER_EVERY_EDIT = -1.0


class Family:
    IDENTITY = "identity"
    PERTURBATION = "perturbation"
    SEGMENTER = "segmenter"


@dataclass
class StudySettings:
    data_dir: Path
    model_dir: Optional[Path]
    split_side: str
    mix: QueryMix
    queries_per_case: int
    seed: int
    split_file: Path
    segmenter_dir: Path = DEFAULT_SEGMENTER
    min_gain_dice: Optional[float] = None  # None: the model package's threshold
    max_cases: Optional[int] = None
    device: str = "cpu"


@dataclass
class EditRecord:
    edit_id: int
    label: int
    voxels: int
    expected_gain: float
    true_gain: float
    offered: bool


@dataclass
class QueryRecord:
    case_id: str
    query: int
    family: str
    source: str
    dice_before: float
    dice_after: dict[str, float] = field(default_factory=dict)
    edits: list[EditRecord] = field(default_factory=list)


@dataclass
class StudyResult:
    queries: list[QueryRecord]
    min_gain_dice: float
    min_gain_source: str
    model: dict
    seconds: float

    @property
    def edits(self) -> list[tuple[QueryRecord, EditRecord]]:
        return [(query, edit) for query in self.queries for edit in query.edits]


def study_query(engine: QCEngine, image: Volume, truth: LabelMap, query: np.ndarray, labels: Sequence[int],
                min_gain_dice: Optional[float]) -> tuple[float, dict[str, float], list[EditRecord]]:
    """Dice of ``query`` before and after each strategy, and every edit's expected and true gain."""
    case = Case([image], LabelMap(query, truth.geometry))
    result = engine.run_case(case, suggest_edits=True, min_gain_dice=min_gain_dice)
    suggestion = result.suggestion
    assert suggestion is not None
    before = multiclass_dice(query, truth.array, labels)
    edits = []
    for edit in suggestion.edits:  # a handful per query
        alone = suggestion.accept_all(query, [edit.id])
        true_gain = dice(alone == edit.label, truth.array == edit.label) - dice(query == edit.label,
                                                                               truth.array == edit.label)
        edits.append(EditRecord(edit.id, edit.label, edit.voxels, edit.gain_dice_est, true_gain, edit.offered))
    offered = [edit.id for edit in suggestion.offered]  # ids follow the boxes' score order
    choices = {f"top-{k}": offered[:k] for k in TOP_K}
    choices[ALL_OFFERED] = offered
    choices[ALL_EDITS] = [edit.id for edit in suggestion.edits]
    after = {name: multiclass_dice(suggestion.accept_all(query, ids), truth.array, labels)
             for name, ids in choices.items()}
    after[WHOLE_SUGGESTION] = multiclass_dice(suggestion.segmentation, truth.array, labels)
    return before, after, edits


def case_queries(image: np.ndarray, truth: np.ndarray, labels: Sequence[int], settings: StudySettings,
                 segmenter, rng: np.random.Generator) -> list[tuple[str, str, np.ndarray]]:
    """(family, source, mask) of a case's queries: perturbations with the mix, then the segmenter's prediction."""
    queries = []
    for query in perturbation_queries(truth, labels, settings.queries_per_case, rng, settings.mix):
        family = Family.IDENTITY if query.source == "truth" else Family.PERTURBATION
        queries.append((family, "+".join(d.value for d in query.defects), query.mask))
    queries.append((Family.SEGMENTER, settings.segmenter_dir.name, predict_labels(segmenter, image)))
    return queries


def run_study(settings: StudySettings) -> StudyResult:
    started = time.perf_counter()
    split = load_split(settings.split_file)
    case_ids = list(split.train if settings.split_side == "train" else split.validation)
    if settings.max_cases is not None:
        case_ids = case_ids[:settings.max_cases]
    files = {c.case_id: c for c in list_nnunet_cases(settings.data_dir)}
    missing = [c for c in case_ids if c not in files]
    if missing:
        raise FileNotFoundError(f"{len(missing)} {settings.split_side} cases are not in {settings.data_dir} "
                                f"(e.g. {missing[0]})")
    engine = QCEngine(settings.model_dir, settings.device)
    labels = sorted(engine.config.classes)
    params, notices = engine.suggestion_params(settings.min_gain_dice)
    for notice in notices:
        logger.warning(notice)
    segmenter = load_segmenter(settings.segmenter_dir)
    records: list[QueryRecord] = []
    for case_index, case_id in enumerate(case_ids):
        image = read_image(files[case_id].images[0])
        truth = read_labelmap(files[case_id].label)
        rng = np.random.default_rng([settings.seed, case_index])
        with torch.no_grad():
            queries = case_queries(image.array, truth.array, labels, settings, segmenter, rng)
        for index, (family, source, mask) in enumerate(queries):
            before, after, edits = study_query(engine, image, truth, mask.astype(truth.array.dtype), labels,
                                                  params.min_gain_dice)
            records.append(QueryRecord(case_id, index, family, source, before, after, edits))
        if (case_index + 1) % 5 == 0 or case_index + 1 == len(case_ids):
            logger.info("%d/%d cases, %d queries (%.0f s)", case_index + 1, len(case_ids), len(records),
                        time.perf_counter() - started)
    return StudyResult(records, params.min_gain_dice, params.min_gain_source, engine.model_info,
                       time.perf_counter() - started)
