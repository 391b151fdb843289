"""Options and output shared by several sub-commands."""

from __future__ import annotations

import argparse

from ..network.domain_check import OUT_OF_DOMAIN_PREFIX
from ..quality.postprocess import PostprocessParams
from ..quality.regions import RegionParams
from ..quality.report import Report
from .options import non_negative_float, non_negative_int, probability_below_one

SUMMARY_TOP_N = 5


def add_region_options(parser: argparse.ArgumentParser) -> None:
    defaults = RegionParams()
    group = parser.add_argument_group("error regions")
    group.add_argument("--threshold", type=probability_below_one, default=defaults.threshold,
                       help="error probability above which a voxel counts as wrong, in [0, 1) (default %(default)s)")
    group.add_argument("--band-width-mm", type=non_negative_float, default=defaults.band_width_mm,
                       help="error extraction: an error region needs a part wider than this band around its "
                            "contour to get a box (default %(default)s mm, at least one pixel)")
    group.add_argument("--band-width-px", type=non_negative_int, default=None,
                       help="the same band in pixels on both in-plane axes (overrides --band-width-mm)")
    group.add_argument("--no-error-extraction", action="store_true",
                       help="box every thresholded error region, however thin (default: extract)")
    group.add_argument("--merge-distance-mm", type=non_negative_float, default=defaults.merge_distance_mm,
                       help="unify boxes on a slice closer than this; 0 never unifies (default %(default)s)")
    group.add_argument("--min-box-area-mm2", type=non_negative_float, default=defaults.min_box_area_mm2,
                       help="drop boxes smaller than this (default %(default)s)")
    group.add_argument("--slice-axis", type=int, choices=(0, 1, 2), default=None,
                       help="numpy axis of the (z,y,x) array to review slices along (default: the axis of coarsest "
                            "spacing, else 0)")


def add_suggestion_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("suggested corrections")
    group.add_argument(
        "--suggest", action="store_true",
        help="also write the suggested segmentation (suggested_segmentation.nii.gz: per voxel the label with the "
             "highest estimated-truth probability) and, per error box, a suggested edit: the voxels to add to and "
             "remove from the box's class in the connected error region the box frames, followed in 3D "
             "(suggested_edits_<label>.nii.gz: edit ids; report.json: each box's edit_id, size, expected Dice gain "
             "and whether it is offered)")
    group.add_argument(
        "--suggest-min-gain", type=float, default=None, metavar="DICE",
        help="offer only edits whose expected gain (estimated Dice of the box's class after the edit minus "
             "before) is at least this (default: the model package's calibrated threshold in suggestions.json, "
             "else 0)")


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


def out_of_domain(report: Report) -> bool:
    return report.domain is not None and report.domain.in_domain is False


def domain_lines(report: Report) -> list[str]:
    """What the terminal says about the domain check: prominent when the input is outside the model's domain."""
    domain = report.domain
    if domain is None:
        return []
    if not domain.checked:
        return [f"domain: not checked: {domain.warnings[0]}" if domain.warnings else "domain: not checked"]
    if domain.in_domain:
        lines = [f"domain: like the model's training data (score {_fmt(domain.score)}; above 1 is outside)"]
    else:
        lines = ["domain: OUTSIDE THE MODEL'S DOMAIN -- the estimates above are UNRELIABLE. Reasons:"]
        lines += [f"  - {reason}" for reason in domain.reasons]
    lines += [f"  note: {warning}" for warning in domain.warnings]
    return lines


def format_summary(report: Report, top_n: int = SUMMARY_TOP_N) -> str:
    """A few lines for the terminal: case quality, per-class estimates, worst slices and boxes, the domain check."""
    lines = [f"case: estimated Dice {_fmt(report.case.dice_est)}, QI {_fmt(report.case.qi)}"
             + (f", predicted Dice {_fmt(report.case.dice_pred)}" if report.case.dice_pred is not None else "")
             + (" -- UNRELIABLE: input outside the model's domain" if out_of_domain(report) else "")]
    for entry in report.classes:
        lines.append(f"  class {entry.label} ({entry.name}): Dice {_fmt(entry.dice_est)}, IoU {_fmt(entry.iou_est)}, "
                     f"ARVD {_fmt(entry.arvd_est)}")
    worst = [f"{s.index} ({s.error_score:.1f})" for s in report.slices[:top_n] if s.error_score > 0]
    lines.append(f"worst slices (axis {report.slice_axis}): " + (", ".join(worst) if worst else "none"))
    lines.append(f"error boxes: {len(report.boxes)}")
    for box in report.boxes[:top_n]:
        edit = ""
        if box.edit_offered:
            edit = (f"; suggested edit {box.edit_id}: {box.edit_voxels} voxels, expected Dice "
                    f"{box.edit_gain_dice_est:+.3f}")
        lines.append(f"  class {box.label} slice {box.slice}: score {box.score:.1f}, {box.area_mm2:.0f} mm2, "
                     f"centre RAS ({', '.join(f'{v:.1f}' for v in box.center_ras)}){edit}")
    if report.suggestion is not None:
        offered = sum(edit.offered for edit in report.suggestion.edits)
        lines.append(f"suggested edits: {len(report.suggestion.edits)}, {offered} offered (expected Dice gain >= "
                     f"{report.suggestion.min_gain_dice:.3g}, {report.suggestion.min_gain_source}); estimated case "
                     f"Dice after accepting them {_fmt(report.suggestion.case_dice_est_after_offered)}")
    shown = set(report.domain.reasons + report.domain.warnings) if report.domain else set()
    lines += [f"notice: {notice}" for notice in report.notices
              if notice not in shown and not notice.startswith(OUT_OF_DOMAIN_PREFIX)]
    lines += domain_lines(report)
    return "\n".join(lines)
