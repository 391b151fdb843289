"""The files of a suggestion, written beside ``report.json`` and read back (the Slicer module, scripts).

* ``suggested_segmentation.nii.gz``: the suggested label map (the query's labels, on its grid);
* ``suggested_edits_<label>.nii.gz``: per class, the ids of its edits (uint16, uint32 beyond 65,535 edits;
  0 = no edit); edit k is ``report.json``'s ``suggestion.edits[k - 1]`` and the boxes' ``edit_id``.  One map
  per class because the edits of two classes may share voxels (a label swap), while those of one class never do.

They are written before ``report.json`` (its presence still means the folder is complete) and only with
``--suggest``; a run without it removes suggestion files left by an earlier run, which would no longer belong
to the report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Optional, Union

from ..errors import GeometryMismatchError, InputError
from ..io.image_files import read_labelmap, write_array
from .report import REPORT_FILE_NAME, Report
from .suggestion import SUGGESTED_EDITS_PATTERN, SUGGESTED_SEGMENTATION_FILE, Suggestion

SUGGESTION_FILE_RE = re.compile(r"^(suggested_segmentation|suggested_edits_\d+)\.nii\.gz$")


def write_suggestion_files(out_dir: Union[str, Path], suggestion: Suggestion) -> list[Path]:
    out_dir = Path(out_dir)
    written = [write_array(out_dir / SUGGESTED_SEGMENTATION_FILE, suggestion.segmentation, suggestion.geometry)]
    for label, edit_map in suggestion.edit_maps.items():
        written.append(write_array(out_dir / SUGGESTED_EDITS_PATTERN.format(label=label), edit_map,
                                   suggestion.geometry))
    return written


def remove_suggestion_files(out_dir: Union[str, Path], keep: Iterable[Union[str, Path]] = ()) -> None:
    """Remove suggestion files of an earlier run (exact names only), except ``keep`` (this run's inputs)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return
    kept = {Path(p).resolve() for p in keep}
    for path in out_dir.iterdir():
        if SUGGESTION_FILE_RE.match(path.name) and path.is_file() and path.resolve() not in kept:
            path.unlink()


def read_suggestion(out_dir: Union[str, Path], report: Optional[Report] = None) -> Suggestion:
    """The suggestion of a QC output folder (``report`` defaults to the folder's ``report.json``)."""
    out_dir = Path(out_dir)
    report = report or Report.load(out_dir / REPORT_FILE_NAME)
    if report.suggestion is None:
        raise InputError(f"The report in {out_dir} has no suggestion: run QC with --suggest")
    segmentation = read_labelmap(out_dir / report.suggestion.segmentation_file)
    edit_maps = {}
    for label, name in report.suggestion.edit_files.items():
        volume = read_labelmap(out_dir / name)
        if not volume.geometry.matches(segmentation.geometry):
            raise GeometryMismatchError(f"{out_dir / name} is not on the suggested segmentation's grid")
        edit_maps[int(label)] = volume.array
    return Suggestion(segmentation.array, edit_maps, report.suggestion, segmentation.geometry)
