"""``segqc estimate``: the post-processing on error maps from any source (no network)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ..errors import InputError
from ..files import check_output_folder
from ..io.case import load_case
from ..io.image_files import read_labelmap
from ..quality.outputs import QCResult, read_error_probs
from ..quality.postprocess import build_report
from ..quality.suggestion import suggest
from ..quality.suggestion_settings import resolve_suggestion_params
from .common import add_region_options, add_suggestion_options, format_summary, postprocess_params_from_args

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "estimate",
        help="estimates, error boxes and rankings from given error probability maps",
        description="Turn a segmentation and per-class error probabilities (error_prob_<label>.nii.gz, from any "
                    "QC method or uncertainty map) into report.json and the error maps on the image grid. With "
                    "--suggest also the suggested segmentation and one suggested edit per error box, computed "
                    "from the error maps alone.",
    )
    parser.add_argument("--seg", required=True, help="segmentation label map (NIfTI, NRRD, MHA or .seg.nrrd)")
    parser.add_argument("--error-prob", required=True, nargs="+",
                        help="folder with error_prob_<label>.nii.gz, or those files (one per class of --seg)")
    parser.add_argument("--image", help="image the segmentation belongs to: checks the grid, recorded in the report "
                                        "(default: none)")
    parser.add_argument("--resample-seg", action="store_true",
                        help="resample the segmentation nearest-neighbour onto the image grid when they differ "
                             "(default: refuse a segmentation on another grid)")
    parser.add_argument("--out", required=True, help="output folder (may be the input folder)")
    add_region_options(parser)
    add_suggestion_options(parser)
    parser.add_argument("--model", help="with --suggest: the QC model package whose calibrated threshold "
                                        "(suggestions.json) decides which edits are offered (no weights are loaded)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (args.suggest_min_gain is not None or args.model) and not args.suggest:
        raise InputError("--suggest-min-gain and --model need --suggest")
    started = time.perf_counter()
    check_output_folder(args.out)
    if args.image:
        case = load_case([args.image], args.seg, resample_seg=args.resample_seg)
        segmentation, notices = case.segmentation, case.notices
    else:
        segmentation = read_labelmap(args.seg)
        notices = list(segmentation.notices)
    error_prob = read_error_probs(args.error_prob, segmentation.geometry)
    report = build_report(segmentation, error_prob, postprocess_params_from_args(args))
    report.notices.extend(notices)
    absent = sorted(set(error_prob) - set(segmentation.labels))
    if absent:
        report.notices.append(f"Error map(s) given for label(s) {', '.join(map(str, absent))}, which the "
                              "segmentation does not have: for them only missed structure can be estimated")
    suggestion = None
    if args.suggest:
        if args.model and not Path(args.model).is_dir():
            raise InputError(f"Model package not found: {args.model}")
        params, setting_notices = resolve_suggestion_params(args.suggest_min_gain, args.model)
        suggestion = suggest(segmentation, error_prob, report, params)
        report.notices.extend(setting_notices)
    report.inputs = {"seg": str(Path(args.seg).resolve()), "image": str(Path(args.image).resolve()) if args.image
                     else None, "error_prob": [str(Path(p).resolve()) for p in args.error_prob]}
    report.timing_s["total"] = round(time.perf_counter() - started, 4)
    inputs = [args.seg, *args.error_prob, *([args.image] if args.image else [])]
    path = QCResult(report, error_prob, segmentation.geometry, suggestion).write(args.out, inputs=inputs)
    print(format_summary(report))
    print(f"report: {path}")
    return 0
