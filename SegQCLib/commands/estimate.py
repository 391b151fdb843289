"""``segqc estimate``: the post-processing on error maps from any source (no network)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ..files import check_output_folder
from ..io.case import load_case
from ..io.image_files import read_labelmap
from ..quality.outputs import QCResult, read_error_probs
from ..quality.postprocess import build_report
from .common import add_region_options, format_summary, postprocess_params_from_args

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "estimate",
        help="estimates, error boxes and rankings from given error probability maps",
        description="Turn a segmentation and per-class error probabilities (error_prob_<label>.nii.gz, from any "
                    "QC method or uncertainty map) into report.json and the error maps on the image grid.",
    )
    parser.add_argument("--seg", required=True, help="segmentation label map (NIfTI, NRRD, MHA or .seg.nrrd)")
    parser.add_argument("--error-prob", required=True, nargs="+",
                        help="folder with error_prob_<label>.nii.gz, or those files")
    parser.add_argument("--image", help="image the segmentation belongs to (checks the grid, recorded in report)")
    parser.add_argument("--resample-seg", action="store_true",
                        help="resample the segmentation nearest-neighbour onto the image grid when they differ")
    parser.add_argument("--out", required=True, help="output folder (may be the input folder)")
    add_region_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
    report.inputs = {"seg": str(Path(args.seg).resolve()), "image": str(Path(args.image).resolve()) if args.image
                     else None, "error_prob": [str(Path(p).resolve()) for p in args.error_prob]}
    report.timing_s["total"] = round(time.perf_counter() - started, 4)
    path = QCResult(report, error_prob, segmentation.geometry).write(args.out)
    print(format_summary(report))
    print(f"report: {path}")
    return 0
