"""``segqc corrections add|list|verify|export``: the corrections store from the command line."""

from __future__ import annotations

import argparse
import json

from ..corrections.export import ExportFormat, export_store
from ..corrections.store import CorrectionStore
from ..errors import InputError
from ..files import check_output_folder
from ..review.rating import CaseRating

EXIT_OK = 0
EXIT_STORE_DAMAGED = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("corrections", help="record, list, verify and export expert corrections",
                                   description="The corrections store from the command line: record an expert's "
                                               "correction, list, verify and export the records.")
    actions = parser.add_subparsers(dest="corrections_action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="record one correction (a new version if the case exists)")
    add.add_argument("--store", required=True, help="corrections store folder (created if new)")
    add.add_argument("--case-id", required=True, help="case identifier (any text without control characters)")
    add.add_argument("--image", action="append", required=True, help="image file; repeat for each channel in order")
    add.add_argument("--original", required=True, help="segmentation before correction")
    add.add_argument("--corrected", required=True, help="segmentation after correction")
    add.add_argument("--reviewer", help="name of the reviewer (default: none recorded)")
    add.add_argument("--qc-report", help="report.json of the QC run the reviewer saw (default: none)")
    add.add_argument("--model-name", help="name of the model that made the original segmentation (default: none)")
    add.add_argument("--model-version", help="its version (default: none)")
    add.add_argument("--model-file", help="its file, whose sha256 is recorded (default: none)")
    add.add_argument("--review-duration-s", type=float, help="time spent reviewing, in seconds (default: not recorded)")
    add.add_argument("--rating", choices=[rating.value for rating in CaseRating],
                     help="the reviewer's verdict on the case (default: none recorded)")
    add.set_defaults(func=run_add)

    listing = actions.add_parser("list", help="list the records")
    listing.add_argument("--store", required=True)
    listing.add_argument("--json", action="store_true", help="one JSON object per line (default: a table)")
    listing.set_defaults(func=run_list)

    verify = actions.add_parser("verify", help="check every record; exit 0 only when the store is whole (exit 3 while "
                                               "a record is lost, even after --repair)")
    verify.add_argument("--store", required=True)
    verify.add_argument("--repair", action="store_true",
                        help="quarantine what is broken (planted links too), record lost records in the ledger, "
                             "rebuild the index, and write a new marker if it was lost (default: only report)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON (default: text)")
    verify.set_defaults(func=run_verify)

    export = actions.add_parser("export", help="export corrected cases as a training dataset")
    export.add_argument("--store", required=True)
    export.add_argument("--format", required=True, choices=[f.value for f in ExportFormat])
    export.add_argument("--out", required=True, help="new or empty output folder")
    export.add_argument("--all-versions", action="store_true", help="every version (default: only the newest per case)")
    export.add_argument("--channel-names", nargs="+",
                        help="one name per image channel, e.g. CT (nnU-Net then uses CT normalisation) or T1 T2; "
                             "needed for nnunet and monai unless --model (or the records' QC model) gives them")
    export.add_argument("--model", help="QC model package whose modalities name the channels and whose classes "
                                        "name the labels (default: the QC model named in the records, if present)")
    export.add_argument("--queue", help="a `segqc rank` output folder (or its ranking.csv): export exactly the cases "
                                        "marked fixed in its review_status.csv, each with its correction_record")
    export.set_defaults(func=run_export)


def run_add(args: argparse.Namespace) -> int:
    check_output_folder(args.store, "--store")
    qc_report = None
    if args.qc_report:
        try:
            with open(args.qc_report, encoding="utf-8") as stream:
                qc_report = json.load(stream)
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"Cannot read QC report {args.qc_report}: {exc}") from exc
    model_info = None
    if args.model_name or args.model_version or args.model_file:
        model_info = {"name": args.model_name, "version": args.model_version, "path": args.model_file}
    record = CorrectionStore(args.store).add(
        args.case_id, args.image, args.original, args.corrected, reviewer=args.reviewer, qc_report=qc_report,
        model_info=model_info, review_duration_s=args.review_duration_s, rating=args.rating)
    print(f"recorded {record.record_id} in {args.store}")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    records = CorrectionStore(args.store).list()
    if args.json:
        for record in records:
            print(json.dumps(record.index_entry()))
        return EXIT_OK
    print(f"{'record':40s} {'case id':30s} {'created (UTC)':30s} {'reviewer':20s} dice(orig,corr)")
    for record in records:
        dice = "-" if record.dice_original_vs_corrected is None else f"{record.dice_original_vs_corrected:.4f}"
        print(f"{record.record_id:40s} {record.case_id:30s} {record.created_utc:30s} {record.reviewer or '-':20s} "
              f"{dice}")
    print(f"{len(records)} record(s)")
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    report = CorrectionStore(args.store).verify(repair=args.repair)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    # After a repair the store is whole again unless a record is lost (deleted, or damaged and now in quarantine):
    # a loss is reported, and fails verify, every time until the record is put back.
    return EXIT_OK if report.ok else EXIT_STORE_DAMAGED


def _queue_records(store: CorrectionStore, queue: str) -> tuple[list[str], list[str]]:
    from ..batch.review_status import fixed_record_ids, read_reviews, status_path

    if not status_path(queue).is_file():
        raise InputError(f"No review statuses at {status_path(queue)}: is --queue a `segqc rank` output folder "
                         "whose cases were reviewed?")
    newest = {r.case_id: r.record_id for r in store.latest()}
    return fixed_record_ids(read_reviews(queue), newest)


def run_export(args: argparse.Namespace) -> int:
    check_output_folder(args.out)
    store = CorrectionStore(args.store)
    record_ids, queue_notices = (None, []) if not args.queue else _queue_records(store, args.queue)
    if record_ids is not None and args.all_versions:
        raise InputError("--queue exports the reviewed version of each fixed case; leave out --all-versions")
    result = export_store(store, args.format, args.out, all_versions=args.all_versions,
                          channel_names=args.channel_names, model=args.model, record_ids=record_ids)
    for notice in [*queue_notices, *result.notices]:
        print(f"note: {notice}")
    print(f"exported {len(result.cases)} case(s) as {result.format.value} to {result.out_dir}")
    return EXIT_OK
