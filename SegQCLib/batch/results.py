"""What a batch produces: one :class:`RankRow` per case, the ranking (worst first, ``ranking.csv``) and the
batch's timing (:class:`BatchStats`) and summary."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import SegQCError
from ..files import write_text_atomic

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

RANKING_FILE = "ranking.csv"
RANKING_COLUMNS = ("rank", "case_id", "dice_est", "dice_pred", "qi", "n_boxes", "worst_slice", "report", "status")


class CaseStatus(str, Enum):
    DONE = "done"
    RESUMED = "resumed"
    FAILED = "failed"


@dataclass
class RankRow:
    case_id: str
    status: CaseStatus
    dice_est: Optional[float] = None
    dice_pred: Optional[float] = None
    qi: Optional[float] = None
    n_boxes: Optional[int] = None
    worst_slice: Optional[int] = None
    report: Optional[str] = None
    thumbnails: list[tuple[str, int]] = field(default_factory=list)
    error: Optional[str] = None
    timing_s: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchStats:
    """Where the time went: seconds summed over cases per step, and the wall time of the whole batch."""

    cases: int = 0
    read_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0
    read_wait_s: float = 0.0
    write_wait_s: float = 0.0
    wall_s: float = 0.0

    @property
    def io_fraction(self) -> float:
        """Share of the per-case work that is disk I/O (reading, writing outputs, thumbnails)."""
        total = self.read_s + self.compute_s + self.write_s
        return (self.read_s + self.write_s) / total if total > 0 else 0.0

    @property
    def cases_per_s(self) -> float:
        return self.cases / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class BatchResult:
    rows: list[RankRow]
    stats: BatchStats
    ranking_csv: Path
    index_html: Path

    @property
    def failed(self) -> list[RankRow]:
        return [r for r in self.rows if r.status is CaseStatus.FAILED]


def add_row_timing(stats: BatchStats, row: RankRow) -> None:
    """Add a row's per-case seconds (from :func:`process_case`) to ``stats``."""
    stats.read_s += row.timing_s.get("read", 0.0)
    stats.compute_s += row.timing_s.get("compute", 0.0)
    stats.write_s += row.timing_s.get("write", 0.0)


def failed_row(case_id: str, exc: BaseException) -> RankRow:
    if isinstance(exc, SegQCError):
        message = str(exc)
    else:
        logger.exception("Case %s failed with an unexpected error", case_id, exc_info=exc)
        message = f"unexpected {type(exc).__name__}: {exc}"
    logger.error("Case %s failed: %s", case_id, message)
    return RankRow(case_id, CaseStatus.FAILED, error=message)


def _sort_key(row: RankRow) -> tuple[float, float, str]:
    """Worst first: lowest estimated Dice, then lowest predicted Dice; unknown estimates first (check them)."""
    est = row.dice_est if row.dice_est is not None else -math.inf
    pred = row.dice_pred if row.dice_pred is not None else -math.inf
    return (est, pred, row.case_id)


def rank_rows(rows: Iterable[RankRow]) -> list[RankRow]:
    rows = list(rows)
    ranked = sorted((r for r in rows if r.status is not CaseStatus.FAILED), key=_sort_key)
    failed = sorted((r for r in rows if r.status is CaseStatus.FAILED), key=lambda r: r.case_id)
    return ranked + failed


def rank_numbers(rows: Sequence[RankRow]) -> list[Optional[int]]:
    """Rank of each row in the given order: 1, 2, ... for checked cases, None for failed ones."""
    ranks, rank = [], 0
    for row in rows:
        if row.status is CaseStatus.FAILED:
            ranks.append(None)
        else:
            rank += 1
            ranks.append(rank)
    return ranks


def write_ranking_csv(ranked: Sequence[RankRow], out_dir: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RANKING_COLUMNS)
    for row, rank in zip(ranked, rank_numbers(ranked)):
        if rank is None:
            continue
        writer.writerow([rank, row.case_id, _csv_number(row.dice_est), _csv_number(row.dice_pred),
                         _csv_number(row.qi), row.n_boxes, "" if row.worst_slice is None else row.worst_slice,
                         row.report, row.status.value])
    return write_text_atomic(out_dir / RANKING_FILE, buffer.getvalue())


def _csv_number(value: Optional[float]) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6g}"


def read_ranking_csv(path: PathLike) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def batch_summary(result: BatchResult) -> dict[str, Any]:
    stats = result.stats
    return {"cases": len(result.rows), "checked": stats.cases, "failed": len(result.failed),
            "resumed": sum(r.status is CaseStatus.RESUMED for r in result.rows),
            "wall_s": round(stats.wall_s, 3), "cases_per_s": round(stats.cases_per_s, 4),
            "io_fraction": round(stats.io_fraction, 4), "read_s": round(stats.read_s, 3),
            "compute_s": round(stats.compute_s, 3), "write_s": round(stats.write_s, 3),
            "read_wait_s": round(stats.read_wait_s, 3), "write_wait_s": round(stats.write_wait_s, 3)}


def dump_summary(result: BatchResult) -> str:
    return json.dumps(batch_summary(result), indent=2)
