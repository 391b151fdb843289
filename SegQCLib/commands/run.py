"""``segqc run``: the QC network on one case or on a manifest of cases (model loaded once).

``--progress json`` prints one JSON object per line on stdout for programs that drive segqc (the Slicer
module): ``{"event": "progress", "fraction": 0.42, "message": "..."}`` while running, then
``{"event": "done", "report": "<path>"}`` or ``{"event": "error", "message": "..."}``.  In manifest mode
progress and per-case events (``case_done`` / ``case_error``) carry ``case_id``, and the final ``done``
points at ``summary.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TextIO

# OpenMP threads that spin while waiting (libgomp's default) collapse when the cores are shared with
# other jobs: on a loaded 2-core machine a window took 100-350 ms with spinning threads and 55 ms with
# passive ones.  Batch QC often runs beside other work, so the CLI asks for passive waiting unless the
# user chose otherwise.  This only takes effect before torch (and its OpenMP runtime) is loaded.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ..errors import CancelledError, InputError, SegQCError  # noqa: E402
from ..files import check_output_folder, write_text_atomic  # noqa: E402
from ..network.config_schema import MAX_WINDOW_OVERLAP  # noqa: E402
from ..quality.report import REPORT_FILE_NAME, write_json_atomic  # noqa: E402
from .common import (  # noqa: E402
    add_region_options,
    add_suggestion_options,
    format_summary,
    postprocess_params_from_args,
)
from .options import positive_int, window_overlap  # noqa: E402

if TYPE_CHECKING:  # the engine (torch) is imported when a run starts, so that `segqc run --help` answers at once
    from ..engine import QCEngine

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
MANIFEST_COLUMNS = ("case_id", "image", "seg")
MODALITY_SEPARATOR = ";"
FAILURES_FILE = "failures.json"
SUMMARY_FILE = "summary.csv"
SUMMARY_COLUMNS = ("case_id", "status", "dice_pred", "nsd_pred", "dice_est", "qi", "in_domain", "report", "error")
# Case ids become folder names: keep them to one safe path component.
CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TEXT_PROGRESS_STEP = 0.05
REVIEW_IMAGES_DIR = "review_images"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the QC network: error maps, estimated and predicted quality, ranked error boxes",
        description="Predict where a segmentation is wrong with the QC network and write report.json and "
                    "error_prob_<label>.nii.gz (on the image grid) per case. One case: --image (one per modality, "
                    "in the model's order) and --seg. Many cases: --manifest CSV with columns case_id,image,seg "
                    "(modalities separated by ';', paths relative to the CSV), written to OUT/<case_id>/. With "
                    "--suggest also the suggested segmentation and one suggested edit per error box, offered when "
                    "its expected Dice gain clears the model's calibrated threshold.",
    )
    parser.add_argument("--image", action="append", help="image file; repeat once per modality")
    parser.add_argument("--seg", help="segmentation label map (NIfTI, NRRD, MHA or .seg.nrrd)")
    parser.add_argument("--manifest", help="CSV with columns case_id,image,seg for many cases")
    parser.add_argument("--out", required=True, help="output folder (created if new)")
    parser.add_argument("--model", help="model package folder (default: $SEGQC_MODEL or the bundled model)")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--resample-seg", action="store_true",
                        help="resample the segmentation nearest-neighbour onto the image grid when they differ "
                             "(default: refuse a segmentation on another grid)")
    parser.add_argument("--progress", choices=("text", "json", "none"), default="text",
                        help="progress on stderr (text), as JSON lines on stdout (json), or none (default: text)")
    parser.add_argument("--overlap", type=window_overlap, default=None,
                        help=f"sliding-window overlap in [0, {MAX_WINDOW_OVERLAP}] (default: the model's)")
    parser.add_argument("--window-batch", type=positive_int, default=None,
                        help="windows per forward pass (default: as many as fit in memory)")
    parser.add_argument("--runtime", choices=("torch", "openvino"), default="torch",
                        help="library that runs the network on CPU: torch, or openvino (pip install openvino; half the "
                             "CPU time per window, same results within 1e-4; falls back to torch when missing; "
                             "default %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for the network (default: PyTorch's choice, usually all cores)")
    parser.add_argument("--html", action="store_true",
                        help="also write the case's review page OUT/review.html (pictures in three orientations, "
                             "the estimates explained, how to open the case in 3D Slicer)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse to report estimates (exit code 1, nothing written) for an input outside the "
                             "model's domain or when the model has no domain profile (default: report them, marked "
                             "unreliable)")
    add_region_options(parser)
    add_suggestion_options(parser)
    parser.set_defaults(func=run)


# --- progress reporters -------------------------------------------------------------------------
class Reporter:
    """Where progress, results and errors go; one subclass per --progress mode."""

    def progress(self, fraction: float, message: str, case_id: Optional[str] = None) -> None:
        pass

    def event(self, name: str, **fields: Any) -> None:
        pass

    def text(self, line: str) -> None:
        pass


class JsonReporter(Reporter):
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def _emit(self, data: dict[str, Any]) -> None:
        self.stream.write(json.dumps(data) + "\n")
        self.stream.flush()

    def progress(self, fraction: float, message: str, case_id: Optional[str] = None) -> None:
        data: dict[str, Any] = {"event": "progress", "fraction": round(min(max(fraction, 0.0), 1.0), 4),
                                "message": message}
        if case_id is not None:
            data["case_id"] = case_id
        self._emit(data)

    def event(self, name: str, **fields: Any) -> None:
        self._emit({"event": name, **fields})


class TextReporter(Reporter):
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._last = -1.0
        self._stage = ""

    def progress(self, fraction: float, message: str, case_id: Optional[str] = None) -> None:
        # One line per stage, and within a stage (the windows) one per TEXT_PROGRESS_STEP.
        stage = message.split(":")[0]
        if stage == self._stage and fraction < 1.0 and 0 <= fraction - self._last < TEXT_PROGRESS_STEP:
            return
        self._last, self._stage = fraction, stage
        prefix = f"{case_id}: " if case_id else ""
        self.stream.write(f"[{fraction * 100:5.1f}%] {prefix}{message}\n")
        self.stream.flush()

    def reset(self) -> None:
        self._last, self._stage = -1.0, ""

    def text(self, line: str) -> None:
        print(line)


def make_reporter(mode: str) -> Reporter:
    if mode == "json":
        return JsonReporter(sys.stdout)
    if mode == "text":
        return TextReporter(sys.stderr)
    return Reporter()


# --- manifest -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ManifestCase:
    case_id: str
    images: tuple[Path, ...]
    seg: Path


def read_manifest(path: Path) -> list[ManifestCase]:
    """Parse and check the whole manifest before any case runs (a typo should not cost hours)."""
    if not path.is_file():
        raise InputError(f"Manifest not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"Manifest {path} is not UTF-8 text ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in MANIFEST_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"Manifest {path} lacks column(s) {', '.join(missing)}; expected a header "
                         f"{','.join(MANIFEST_COLUMNS)}")
    cases, seen, problems = [], set(), []
    for line, raw in enumerate(reader, start=2):
        if None in raw:  # DictReader files surplus fields under the key None
            problems.append(f"line {line}: more fields than the header (quote paths that contain commas)")
            continue
        row = {k.strip(): (v or "").strip() for k, v in raw.items()}
        case_id, images, seg = row.get("case_id", ""), row.get("image", ""), row.get("seg", "")
        if not (case_id or images or seg):
            continue
        if not CASE_ID_RE.match(case_id):
            problems.append(f"line {line}: case_id {case_id!r} is not a simple folder name (letters, digits, . _ -)")
        elif case_id in seen:
            problems.append(f"line {line}: case_id {case_id!r} appears twice")
        if not images or not seg:
            problems.append(f"line {line}: image and seg are both required")
        seen.add(case_id)
        image_paths = tuple(path.parent / p.strip() for p in images.split(MODALITY_SEPARATOR) if p.strip())
        cases.append(ManifestCase(case_id, image_paths, path.parent / seg))
    if problems:
        raise InputError(f"Manifest {path} has problems: " + "; ".join(problems))
    if not cases:
        raise InputError(f"Manifest {path} lists no cases")
    return cases


def _summary_row(case_id: str, report_path: Optional[Path], result: Any, error: Optional[str]) -> dict[str, Any]:
    case = result.report.case if result is not None else None
    return {"case_id": case_id, "status": "ok" if error is None else "failed",
            "dice_pred": case.dice_pred if case else None, "nsd_pred": case.nsd_pred if case else None,
            "dice_est": case.dice_est if case else None, "qi": case.qi if case else None,
            "in_domain": _in_domain_text(result.report if result is not None else None),
            "report": str(report_path) if report_path else "", "error": error or ""}


def _in_domain_text(report: Any) -> str:
    """summary.csv's in_domain: true, false (estimates unreliable) or empty (not checked)."""
    verdict = _in_domain(report) if report is not None else None
    return "" if verdict is None else str(verdict).lower()


def _write_summary(out_dir: Path, rows: list[dict[str, Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    target = write_text_atomic(out_dir / SUMMARY_FILE, buffer.getvalue())
    failures = [{"case_id": r["case_id"], "error": r["error"]} for r in rows if r["status"] != "ok"]
    write_json_atomic(out_dir / FAILURES_FILE, failures)
    return target


def _run_manifest(args: argparse.Namespace, engine: QCEngine, reporter: Reporter) -> int:
    from ..engine import run_qc_files

    cases = read_manifest(Path(args.manifest))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = postprocess_params_from_args(args)
    rows: list[dict[str, Any]] = []
    for index, case in enumerate(cases):
        if isinstance(reporter, TextReporter):
            reporter.reset()

        def progress(fraction: float, message: str, _index: int = index, _case: str = case.case_id) -> None:
            reporter.progress((_index + fraction) / len(cases), message, _case)

        case_dir = out_dir / case.case_id
        try:
            result = run_qc_files(case.images, case.seg, case_dir, resample_seg=args.resample_seg, progress=progress,
                                  engine=engine, postprocess_params=params, strict=args.strict,
                                  suggest_edits=args.suggest, min_gain_dice=args.suggest_min_gain)
            if args.html:
                _write_html(case.case_id, case.images, case.seg, args.resample_seg, result, case_dir)
        except CancelledError:
            raise
        except SegQCError as exc:
            rows.append(_summary_row(case.case_id, None, None, str(exc)))
            reporter.event("case_error", case_id=case.case_id, message=str(exc))
            logger.error("Case %s failed: %s", case.case_id, exc)
        except Exception as exc:  # one broken case must not stop a batch of thousands
            logger.exception("Case %s failed with an unexpected error", case.case_id)
            message = f"unexpected {type(exc).__name__}: {exc}"
            rows.append(_summary_row(case.case_id, None, None, message))
            reporter.event("case_error", case_id=case.case_id, message=message)
        else:
            report_path = (case_dir / REPORT_FILE_NAME).resolve()
            rows.append(_summary_row(case.case_id, report_path, result, None))
            reporter.event("case_done", case_id=case.case_id, report=str(report_path),
                           in_domain=_in_domain(result.report))
            reporter.text(f"[{index + 1}/{len(cases)}] {case.case_id}: {format_summary(result.report).splitlines()[0]}")
            warn_out_of_domain(result.report, case.case_id)
        _write_summary(out_dir, rows)
    summary = (out_dir / SUMMARY_FILE).resolve()
    failed = [r["case_id"] for r in rows if r["status"] != "ok"]
    reporter.event("done", report=str(summary), succeeded=len(rows) - len(failed), failed=failed)
    reporter.text(f"{len(rows) - len(failed)} of {len(rows)} cases done; summary: {summary}"
                  + (f"; {len(failed)} failed (see {out_dir / FAILURES_FILE})" if failed else ""))
    return EXIT_FAILURE if failed else EXIT_OK


def _write_html(case_id: str, images: Any, seg: Any, resample_seg: bool, result: Any, out_dir: Path) -> Path:
    """The case's review page beside its report (the inputs are read again: the engine keeps no copy)."""
    from ..io.case import load_case
    from ..review.writer import write_case_review

    case = load_case(images, seg, resample_seg=resample_seg)
    page, _ = write_case_review(case_id, result.report, case.images[0].array, case.segmentation.array,
                                result.error_prob, result.geometry, out_dir, out_dir / REVIEW_IMAGES_DIR)
    return page.resolve()


def _case_name(seg: str) -> str:
    name = Path(seg).name
    for suffix in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _in_domain(report: Any) -> Optional[bool]:
    return report.domain.in_domain if report.domain is not None else None


def warn_out_of_domain(report: Any, case_id: Optional[str] = None) -> None:
    """On stderr, whatever --progress is: an out-of-domain result must not pass unnoticed."""
    if _in_domain(report) is False:
        where = f" ({case_id})" if case_id else ""
        print(f"segqc run: WARNING{where}: the input is outside the model's domain, its estimates are unreliable: "
              + "; ".join(report.domain.reasons), file=sys.stderr)


def _run_single(args: argparse.Namespace, engine: QCEngine, reporter: Reporter) -> int:
    from ..engine import run_qc_files

    result = run_qc_files(args.image, args.seg, args.out, resample_seg=args.resample_seg,
                          progress=lambda fraction, message: reporter.progress(fraction, message), engine=engine,
                          postprocess_params=postprocess_params_from_args(args), strict=args.strict,
                          suggest_edits=args.suggest, min_gain_dice=args.suggest_min_gain)
    report_path = (Path(args.out) / REPORT_FILE_NAME).resolve()
    page = _write_html(_case_name(args.seg), args.image, args.seg, args.resample_seg, result,
                       Path(args.out)) if args.html else None
    reporter.event("done", report=str(report_path), in_domain=_in_domain(result.report),
                   **({"page": str(page)} if page else {}))
    reporter.text(format_summary(result.report))
    reporter.text(f"report: {report_path}")
    if page is not None:
        reporter.text(f"review page: {page}")
    warn_out_of_domain(result.report)
    return EXIT_OK


def _usage_problem(args: argparse.Namespace) -> Optional[str]:
    if args.manifest and (args.image or args.seg):
        return "give either --manifest or --image/--seg, not both"
    if not args.manifest and not (args.image and args.seg):
        return "give --image (one per modality) and --seg, or --manifest"
    if args.suggest_min_gain is not None and not args.suggest:
        return "--suggest-min-gain needs --suggest"
    return None


def run(args: argparse.Namespace) -> int:
    reporter = make_reporter(args.progress)
    problem = _usage_problem(args)
    if problem:
        reporter.event("error", message=problem)
        print(f"segqc run: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    started = time.perf_counter()
    try:
        check_output_folder(args.out)  # before the model and the cases: a typo must not cost a whole run
    except SegQCError as exc:
        if isinstance(reporter, JsonReporter):
            reporter.event("error", message=str(exc))
            return EXIT_FAILURE
        raise
    work: Callable[[argparse.Namespace, QCEngine, Reporter], int] = _run_manifest if args.manifest else _run_single
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        from ..engine import QCEngine

        reporter.progress(0.0, "Loading model")
        engine = QCEngine(args.model, args.device, overlap=args.overlap, window_batch=args.window_batch,
                          runtime=args.runtime)
        logger.info("Model %s on %s", engine.model_info["name"], engine.device)
        code = work(args, engine, reporter)
    except SegQCError as exc:
        if isinstance(reporter, JsonReporter):
            reporter.event("error", message=str(exc))
            return EXIT_FAILURE
        raise
    except Exception as exc:
        if isinstance(reporter, JsonReporter):  # the driving program must hear about it, not wait forever
            logger.exception("segqc run failed")
            reporter.event("error", message=f"unexpected {type(exc).__name__}: {exc}")
            return EXIT_FAILURE
        raise
    logger.info("segqc run finished in %.1f s", time.perf_counter() - started)
    return code
