"""What the Results panel shows of a report, read in one place: the panel (and the self-test) take every report
field through :func:`summarizeReport`.  Fields other parts of SegQC add to ``report.json`` later (a domain /
out-of-distribution warning, suggested corrections per box) are shown by adding them here.  No Qt, no MRML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class ResultsSummary:
    """The panel's view of a report."""

    caseLines: list[str]  # estimated quality of the case and per class
    warnings: list[str] = field(default_factory=list)  # notices the reviewer must see
    classes: list[tuple[int, str]] = field(default_factory=list)  # overlay choices: (label, name)
    boxCount: int = 0
    sliceCount: int = 0
    device: Optional[str] = None  # what the QC process ran on

    def text(self) -> str:
        return "\n".join([*self.caseLines, *(f"Note: {w}" for w in self.warnings)])


def summarizeReport(report: dict[str, Any]) -> ResultsSummary:
    case = report.get("case", {})
    lines = [f"Estimated Dice (case): {formatNumber(case.get('dice_est'))}, QI {formatNumber(case.get('qi'))}"]
    if case.get("dice_pred") is not None:
        lines[0] += f"; network's Dice {formatNumber(case.get('dice_pred'))}"
    lines += [f"{c['name']}: Dice {formatNumber(c.get('dice_est'))}" for c in report.get("classes", [])]
    boxes, slices = len(report.get("boxes", [])), len(report.get("slices", []))
    lines.append(f"{boxes} error boxes; {slices} slices ranked")
    device = report.get("device")
    if device:
        lines.append(f"Ran on {device}")
    return ResultsSummary(lines, [str(n) for n in report.get("notices", [])],
                          [(int(c["label"]), str(c["name"])) for c in report.get("classes", [])], boxes, slices,
                          str(device) if device else None)


def formatNumber(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"
