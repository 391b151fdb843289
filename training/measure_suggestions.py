"""Does accepting suggested edits help? ``python -m training.measure_suggestions --model PKG --out DIR``.

On validation-split queries (perturbations with the held-out validation mix and the bundled segmenter's
prediction) it measures, against the truth, the case Dice (multi-class, pooled) of the query before and after
accepting the top-k offered edits (k = 1, 3, 5; in the order of their boxes' scores), every offered edit, every
edit (no threshold) and the whole suggested segmentation; and, per edit applied alone, the fraction that improve
and that worsen their class's Dice.  Offered = expected gain at least the model package's threshold
(``suggestions.json``, see :mod:`training.calibrate_suggestions`; ``--min-gain`` overrides it).

Writes ``DIR/suggestions.md`` (the tables, for the README), ``DIR/suggestions.json`` (every query and edit),
``DIR/suggestion_gains.png`` (expected vs true gain) and ``DIR/suggestion_dice.png`` (Dice before/after).
Intervals: 95 % percentile bootstrap over cases (a case's queries stay together).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from SegQCLib.io.datasets import hippocampus_dir

from .evaluate import BOOTSTRAP_RESAMPLES, cluster_bootstrap
from .queries import VALIDATION_MIX
from .splits import DEFAULT_SPLIT_FILE
from .suggestion_study import (
    ALL_EDITS,
    ALL_OFFERED,
    DEFAULT_SEGMENTER,
    DICE_TOLERANCE,
    STRATEGIES,
    EditRecord,
    Family,
    QueryRecord,
    StudyResult,
    StudySettings,
    run_study,
)

logger = logging.getLogger("training.measure_suggestions")

DEFAULT_QUERIES_PER_CASE = 14  # as many perturbations as the query bank's validation cases have
DEFAULT_SEED = 11  # not the bank's validation seed (8): fresh queries
TABLE_FILE = "suggestions.md"
RESULTS_FILE = "suggestions.json"
GAINS_FIGURE = "suggestion_gains.png"
DICE_FIGURE = "suggestion_dice.png"
NONE = "none (query)"


def _interval(value: tuple[float, float, float], digits: int = 3) -> str:
    estimate, low, high = value
    if not np.isfinite(estimate):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{estimate:.{digits}f}"
    return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _percent(fraction: float) -> str:
    return "n/a" if not np.isfinite(fraction) else f"{100 * fraction:.0f} %"


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else float("nan")


def query_rows(result: StudyResult, resamples: int) -> list[list[str]]:
    """One row per strategy: mean case Dice, mean change, share of queries improved / worsened."""
    groups = np.array([q.case_id for q in result.queries])
    before = np.array([q.dice_before for q in result.queries])
    rows = [[NONE, _interval(cluster_bootstrap(groups, (before,), _mean, resamples)), "", "", ""]]
    for strategy in STRATEGIES:
        after = np.array([q.dice_after[strategy] for q in result.queries])
        change = after - before
        rows.append([strategy, _interval(cluster_bootstrap(groups, (after,), _mean, resamples)),
                     _interval(cluster_bootstrap(groups, (change,), _mean, resamples), 4),
                     _percent(_mean((change > DICE_TOLERANCE).astype(float))),
                     _percent(_mean((change < -DICE_TOLERANCE).astype(float)))])
    return rows


def edit_rows(result: StudyResult) -> list[list[str]]:
    """Edits applied alone: how many, mean expected and true gain, share improving / worsening their class."""
    rows = []
    selections: list[tuple[str, Callable]] = [
        ("offered", lambda q, e: e.offered),
        ("offered, on segmenter predictions", lambda q, e: e.offered and q.family == Family.SEGMENTER),
        ("offered, on perturbations", lambda q, e: e.offered and q.family == Family.PERTURBATION),
        ("offered, on perfect queries (the truth)", lambda q, e: e.offered and q.family == Family.IDENTITY),
        ("not offered (below the threshold)", lambda q, e: not e.offered),
        ("all", lambda q, e: True)]
    for name, chosen in selections:
        picked = [e for q, e in result.edits if chosen(q, e)]
        true = np.array([e.true_gain for e in picked])
        expected = np.array([e.expected_gain for e in picked])
        rows.append([name, str(len(picked)), f"{_mean(expected):+.4f}" if picked else "n/a",
                     f"{_mean(true):+.4f}" if picked else "n/a",
                     _percent(_mean((true > DICE_TOLERANCE).astype(float))),
                     _percent(_mean((true < -DICE_TOLERANCE).astype(float)))])
    return rows


def family_rows(result: StudyResult) -> list[list[str]]:
    """Mean case Dice per query family before and after accepting the top-1 / every offered edit."""
    rows = []
    for family in (Family.SEGMENTER, Family.PERTURBATION, Family.IDENTITY):
        queries = [q for q in result.queries if q.family == family]
        if not queries:
            continue
        before = np.array([q.dice_before for q in queries])
        top1 = np.array([q.dice_after["top-1"] for q in queries])
        offered = np.array([q.dice_after[ALL_OFFERED] for q in queries])
        every = np.array([q.dice_after[ALL_EDITS] for q in queries])
        rows.append([family, str(len(queries)), f"{before.mean():.3f}", f"{top1.mean():.3f}",
                     f"{offered.mean():.3f}", f"{every.mean():.3f}",
                     f"{np.mean([sum(e.offered for e in q.edits) for q in queries]):.1f}"])
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(result: StudyResult, settings: StudySettings, resamples: int) -> str:
    cases = len({q.case_id for q in result.queries})
    lines = [
        f"Suggested edits of QC model `{result.model.get('name')}` {result.model.get('version')} (weights sha256 "
        f"{str(result.model.get('sha256'))[:12]}) on {len(result.queries)} queries of {cases} validation cases "
        f"({settings.queries_per_case} perturbations per case with the validation mix, seed {settings.seed}, and "
        f"the prediction of `{settings.segmenter_dir.name}`). Offered: expected Dice gain >= "
        f"{result.min_gain_dice:.4g} ({result.min_gain_source}). Case Dice is the multi-class Dice of the query "
        "against the truth; intervals are 95 % bootstrap intervals over cases.",
        "",
        *_table(["accepting", "case Dice", "change", "queries improved", "queries worse"],
                query_rows(result, resamples)),
        "",
        "Each edit applied alone (change of its class's Dice):",
        "",
        *_table(["edits", "count", "mean expected gain", "mean true gain", "improve their class", "make it worse"],
                edit_rows(result)),
        "",
        "By query family (mean case Dice):",
        "",
        *_table(["queries", "count", "before", "top-1", "all offered", "all edits", "offered edits per query"],
                family_rows(result)),
        "",
    ]
    return "\n".join(lines)


def plot(result: StudyResult, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edits = [edit for _, edit in result.edits]
    fig, axis = plt.subplots(figsize=(4.6, 4.2))
    for offered, colour, name in ((True, "tab:blue", "offered"), (False, "tab:grey", "not offered")):
        chosen = [e for e in edits if e.offered == offered]
        axis.scatter([e.expected_gain for e in chosen], [e.true_gain for e in chosen], s=6, alpha=0.5,
                     color=colour, label=f"{name} ({len(chosen)})")
    axis.axhline(0.0, color="k", lw=0.6)
    axis.axvline(result.min_gain_dice, color="tab:red", lw=0.8, ls="--", label="threshold")
    limit = max([0.05] + [abs(v) for e in edits for v in (e.expected_gain, e.true_gain)])
    axis.plot([-limit, limit], [-limit, limit], "k:", lw=0.6)
    axis.set(xlabel="expected Dice gain of the edit's class", ylabel="true Dice gain",
             title="Suggested edits, each applied alone")
    axis.legend(fontsize=7)
    fig.tight_layout()
    paths = [out_dir / GAINS_FIGURE]
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(6.4, 3.6))
    names = [NONE, *STRATEGIES]
    values = [[q.dice_before for q in result.queries]]
    values += [[q.dice_after[s] for q in result.queries] for s in STRATEGIES]
    axis.boxplot(values, showmeans=True, showfliers=False)
    axis.set_xticks(range(1, len(names) + 1), [n.replace(" ", "\n") for n in names], fontsize=7)
    axis.set(ylabel="case Dice vs truth", title="Validation queries before and after accepting")
    fig.tight_layout()
    paths.append(out_dir / DICE_FIGURE)
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def write_outputs(result: StudyResult, settings: StudySettings, out_dir: Path, resamples: int,
                  figures: bool = True) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / TABLE_FILE
    table.write_text(markdown(result, settings, resamples), encoding="utf-8")
    data = {"model": result.model, "min_gain_dice": result.min_gain_dice, "min_gain_source": result.min_gain_source,
            "seconds": round(result.seconds, 1), "settings": {"queries_per_case": settings.queries_per_case,
                                                              "seed": settings.seed,
                                                              "segmenter": settings.segmenter_dir.name},
            "queries": [asdict(q) for q in result.queries]}
    (out_dir / RESULTS_FILE).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    if figures:
        plot(result, out_dir)
    return table


def read_results(path: Path) -> tuple[StudyResult, dict]:
    """A study written by :func:`write_outputs` (to redraw its tables and figures without running it again)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    queries = [QueryRecord(**{**q, "edits": [EditRecord(**e) for e in q["edits"]]}) for q in data["queries"]]
    return StudyResult(queries, data["min_gain_dice"], data["min_gain_source"], data["model"],
                       data["seconds"]), data.get("settings", {})


def measure(settings: StudySettings, out_dir: Path, resamples: int = BOOTSTRAP_RESAMPLES,
            figures: bool = True) -> Path:
    if settings.split_side != "validation":
        raise ValueError("Measure on validation-split cases")
    return write_outputs(run_study(settings), settings, out_dir, resamples, figures)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.measure_suggestions",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="QC model package (default: the bundled one)")
    parser.add_argument("--out", required=True, help="folder for suggestions.md, suggestions.json and the figures")
    parser.add_argument("--data", default=str(hippocampus_dir()), help="nnU-Net raw dataset folder")
    parser.add_argument("--split", default=str(DEFAULT_SPLIT_FILE), help="split file (its validation cases are used)")
    parser.add_argument("--segmenter", default=str(DEFAULT_SEGMENTER), help="segmenter folder")
    parser.add_argument("--queries-per-case", type=int, default=DEFAULT_QUERIES_PER_CASE,
                        help="perturbation queries per case (plus the segmenter's prediction)")
    parser.add_argument("--min-gain", type=float, default=None,
                        help="threshold of offered edits (default: the package's suggestions.json, else 0)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--max-cases", type=int, default=None)
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP_RESAMPLES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--redraw", action="store_true",
                        help="only rewrite the table and figures from OUT/suggestions.json (no QC runs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    settings = StudySettings(Path(args.data), Path(args.model) if args.model else None, "validation",
                             VALIDATION_MIX, args.queries_per_case, args.seed, Path(args.split),
                             Path(args.segmenter), args.min_gain, args.max_cases, args.device)
    if args.redraw:
        result, recorded = read_results(Path(args.out) / RESULTS_FILE)
        settings.queries_per_case = int(recorded.get("queries_per_case", settings.queries_per_case))
        settings.seed = int(recorded.get("seed", settings.seed))
        settings.segmenter_dir = Path(recorded.get("segmenter", settings.segmenter_dir.name))
        table = write_outputs(result, settings, Path(args.out), args.bootstrap)
    else:
        table = measure(settings, Path(args.out), args.bootstrap)
    print(table.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
