"""The Results panel's view of a report (SegQCModuleLib/report_view.py): every field it shows, read in one place."""

from __future__ import annotations

from SegQCModuleLib.report_view import summarizeReport

REPORT = {
    "case": {"dice_est": 0.8123, "qi": 0.97, "dice_pred": 0.79},
    "classes": [{"label": 1, "name": "anterior", "dice_est": 0.75},
                {"label": 2, "name": "posterior", "dice_est": None}],
    "boxes": [{}, {}, {}], "slices": [{}] * 12, "device": "cuda",
    "notices": ["Segmentation resampled onto the image grid"],
}


def test_the_summary_gives_case_and_class_estimates_counts_device_and_notices():
    summary = summarizeReport(REPORT)
    assert summary.caseLines == ["Estimated Dice (case): 0.812, QI 0.970; network's Dice 0.790",
                                 "anterior: Dice 0.750", "posterior: Dice n/a", "3 error boxes; 12 slices ranked",
                                 "Ran on cuda"]
    assert summary.classes == [(1, "anterior"), (2, "posterior")]
    assert summary.warnings == ["Segmentation resampled onto the image grid"]
    assert summary.text().endswith("Note: Segmentation resampled onto the image grid")


def test_a_report_without_optional_fields_is_summarised():
    summary = summarizeReport({"case": {"dice_est": None, "qi": None}})
    assert summary.caseLines == ["Estimated Dice (case): n/a, QI n/a", "0 error boxes; 0 slices ranked"]
    assert summary.device is None and summary.classes == []
