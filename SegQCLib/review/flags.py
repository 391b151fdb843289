"""Flags: what makes a case need a closer look than its rank says, shown on the pages and in ranking.csv."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, Optional

from ..quality.report import Report

# The two Dice estimates disagree when they differ by more than this.
DISAGREEMENT_THRESHOLD = 0.10


class CaseFlag(str, Enum):
    FAILED = "failed"
    OUT_OF_DOMAIN = "out_of_domain"
    ESTIMATES_DISAGREE = "estimates_disagree"
    NOTICES = "notices"

    @property
    def description(self) -> str:
        return {
            CaseFlag.FAILED: "the case could not be checked (see the error)",
            CaseFlag.OUT_OF_DOMAIN: "the input is unlike the model's training data: its estimates are unreliable",
            CaseFlag.ESTIMATES_DISAGREE: "estimated and predicted Dice differ by more than "
                                         f"{DISAGREEMENT_THRESHOLD:.2f}: look at the case yourself",
            CaseFlag.NOTICES: "the report has notices (e.g. a resampled segmentation or renamed classes)",
        }[self]


def domain_of(report: Report) -> Optional[Mapping[str, Any]]:
    """The report's domain check (``report.domain``, added by the domain-check work) as a mapping, or None when the
    report has none.  Accepts a dataclass-like object or a dict with ``in_domain`` and ``reasons``."""
    domain = getattr(report, "domain", None)
    if domain is None:
        return None
    if isinstance(domain, Mapping):
        return domain
    return {key: getattr(domain, key) for key in ("in_domain", "score", "reasons") if hasattr(domain, key)}


def in_domain_of(report: Report) -> Optional[bool]:
    domain = domain_of(report)
    value = None if domain is None else domain.get("in_domain")
    return None if value is None else bool(value)


def report_flags(report: Report) -> list[CaseFlag]:
    flags = []
    if in_domain_of(report) is False:
        flags.append(CaseFlag.OUT_OF_DOMAIN)
    est, pred = report.case.dice_est, report.case.dice_pred
    if est is not None and pred is not None and abs(est - pred) > DISAGREEMENT_THRESHOLD:
        flags.append(CaseFlag.ESTIMATES_DISAGREE)
    if report.notices:
        flags.append(CaseFlag.NOTICES)
    return flags
