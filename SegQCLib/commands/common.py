"""Options and output shared by several sub-commands."""

from __future__ import annotations

import argparse

from ..quality.postprocess import PostprocessParams
from ..quality.regions import RegionParams
from ..quality.report import Report

SUMMARY_TOP_N = 5


def add_region_options(parser: argparse.ArgumentParser) -> None:
    defaults = RegionParams()
    group = parser.add_argument_group("error regions")
    group.add_argument("--threshold", type=float, default=defaults.threshold,
                       help="error probability above which a voxel counts as wrong (default %(default)s)")
    group.add_argument("--band-width-mm", type=float, default=defaults.band_width_mm,
                       help="error extraction: an error region needs a part wider than this band around its "
                            "contour to get a box (default %(default)s mm, at least one pixel)")
    group.add_argument("--band-width-px", type=int, default=None,
                       help="the same band in pixels on both in-plane axes (overrides --band-width-mm)")
    group.add_argument("--no-error-extraction", action="store_true",
                       help="box every thresholded error region, however thin")
    group.add_argument("--merge-distance-mm", type=float, default=defaults.merge_distance_mm,
                       help="unify boxes on a slice closer than this (default %(default)s)")
    group.add_argument("--min-box-area-mm2", type=float, default=defaults.min_box_area_mm2,
                       help="drop boxes smaller than this (default %(default)s)")
    group.add_argument("--slice-axis", type=int, choices=(0, 1, 2), default=None,
                       help="numpy axis of the (z,y,x) array to review slices along (default: coarsest spacing)")


def postprocess_params_from_args(args: argparse.Namespace) -> PostprocessParams:
    defaults = RegionParams()
    regions = RegionParams(
        threshold=args.threshold,
        extract_errors=not args.no_error_extraction,
        band_width_mm=args.band_width_mm,
        band_width_px=args.band_width_px,
        min_component_area_mm2=defaults.min_component_area_mm2,
        merge_distance_mm=args.merge_distance_mm,
        min_box_area_mm2=args.min_box_area_mm2,
        max_box_slice_fraction=defaults.max_box_slice_fraction,
    )
    return PostprocessParams(regions=regions, slice_axis=args.slice_axis)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_summary(report: Report, top_n: int = SUMMARY_TOP_N) -> str:
    """A few lines for the terminal: case quality, per-class estimates, worst slices and boxes."""
    lines = [f"case: estimated Dice {_fmt(report.case.dice_est)}, QI {_fmt(report.case.qi)}"
             + (f", predicted Dice {_fmt(report.case.dice_pred)}" if report.case.dice_pred is not None else "")]
    for entry in report.classes:
        lines.append(f"  class {entry.label} ({entry.name}): Dice {_fmt(entry.dice_est)}, IoU {_fmt(entry.iou_est)}, "
                     f"ARVD {_fmt(entry.arvd_est)}")
    worst = [f"{s.index} ({s.error_score:.1f})" for s in report.slices[:top_n] if s.error_score > 0]
    lines.append(f"worst slices (axis {report.slice_axis}): " + (", ".join(worst) if worst else "none"))
    lines.append(f"error boxes: {len(report.boxes)}")
    for box in report.boxes[:top_n]:
        lines.append(f"  class {box.label} slice {box.slice}: score {box.score:.1f}, {box.area_mm2:.0f} mm2, "
                     f"centre RAS ({', '.join(f'{v:.1f}' for v in box.center_ras)})")
    return "\n".join(lines)
