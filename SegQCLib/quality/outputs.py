"""The files of a QC run: ``error_prob_<label>.nii.gz`` maps and ``report.json``, written and read back.

:class:`QCResult` is what the engine (or ``segqc estimate``) produced for one case; its ``write`` writes the
maps and the report beside the earlier ones (each read back as it is written), then moves them into place
together, the report last (:mod:`SegQCLib.staged_files`): a folder with a ``report.json`` is complete, and a
run that fails or is killed while writing leaves the earlier report and maps as they were.  :func:`read_error_probs`
reads error maps from any source back (``segqc estimate``, the Slicer module, resume of ``segqc rank``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import GeometryMismatchError, InputError
from ..geometry import Geometry
from ..io.image_files import read_image, write_probability_map
from ..io.nifti_header import is_nifti
from ..io.nifti_values import count_nonfinite
from ..staged_files import StagedFiles
from .report import ERROR_PROB_PATTERN, REPORT_FILE_NAME, Report
from .suggestion import Suggestion
from .suggestion_files import SUGGESTION_FILE_RE, write_suggestion_files

# The maps QCResult.write itself names (other readable names are inputs it never removes).
ERROR_PROB_NAME_RE = re.compile(r"^error_prob_\d+\.nii\.gz$")
ERROR_PROB_FILE_RE = re.compile(r"error_prob_(?P<label>\d+)\.(nii\.gz|nii|nrrd|nhdr|mha|mhd)$", re.IGNORECASE)


@dataclass
class QCResult:
    """Everything a QC run produced: the report, the per-class error probabilities on the image grid and, with
    ``--suggest``, the suggested segmentation and edits."""

    report: Report
    error_prob: dict[int, np.ndarray]
    geometry: Geometry
    suggestion: Optional[Suggestion] = None

    def write(self, out_dir: Union[str, Path], inputs: Sequence[Union[str, Path]] = ()) -> Path:
        """Write ``error_prob_<label>.nii.gz``, the suggestion's files and ``report.json`` beside the folder's
        earlier ones, then move them into place together (report last); returns the report's path.

        Maps of labels this result does not have and suggestion files of an earlier run (except ``inputs`` of
        this one) are removed in the same step, so the folder never mixes two runs.  The maps are 8-bit
        probabilities scaled by 1/255 in the NIfTI header (:mod:`SegQCLib.io.probability_maps`): every reader
        gets float32 within 1/510 of ``error_prob``, from which the report was computed."""
        out_dir = Path(out_dir)
        started = time.perf_counter()
        names = {label: ERROR_PROB_PATTERN.format(label=label) for label in self.error_prob}
        with StagedFiles(out_dir) as staged:
            for label, prob in self.error_prob.items():
                write_probability_map(staged.path(names[label]), prob, self.geometry)
            suggestion_names: list[str] = []
            if self.suggestion is not None:
                staging_dir = staged.path(REPORT_FILE_NAME).parent
                suggestion_names = [p.name for p in write_suggestion_files(staging_dir, self.suggestion)]
            self.report.timing_s["write"] = round(time.perf_counter() - started, 4)
            self.report.save(staged.path(REPORT_FILE_NAME))
            kept = {Path(p).resolve() for p in inputs}
            obsolete = [p.name for p in out_dir.iterdir()
                        if ERROR_PROB_NAME_RE.match(p.name) and p.name not in names.values()
                        or SUGGESTION_FILE_RE.match(p.name) and p.name not in suggestion_names
                        and p.resolve() not in kept]
            staged.commit([*names.values(), *suggestion_names, REPORT_FILE_NAME], last=REPORT_FILE_NAME,
                          obsolete=obsolete)
        return out_dir / REPORT_FILE_NAME


def read_error_probs(sources: Union[str, Path, Sequence[Union[str, Path]]],
                     geometry: Optional[Geometry] = None) -> dict[int, np.ndarray]:
    """Read ``error_prob_<label>.<ext>`` files from a folder or a list of files (and check their grid)."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    files: list[Path] = []
    for source in map(Path, sources):
        if not source.exists():
            raise InputError(f"Error probability map or folder not found: {source}")
        if source.is_dir():
            found = sorted(p for p in source.iterdir() if ERROR_PROB_FILE_RE.search(p.name))
            if not found:
                raise InputError(f"No error_prob_<label>.nii.gz files in {source}")
            files.extend(found)
        else:
            files.append(source)
    error_prob: dict[int, np.ndarray] = {}
    for path in files:
        match = ERROR_PROB_FILE_RE.search(path.name)
        if not match:
            raise InputError(f"Cannot tell the class of {path}: name it error_prob_<label>.nii.gz")
        label = int(match["label"])
        if label in error_prob:
            raise InputError(f"Two error probability maps for label {label} (second: {path})")
        volume = read_image(path)
        # ITK reads NaN voxels of a NIfTI file as 0: a map of NaNs would pass as "no error anywhere".
        nonfinite = count_nonfinite(path) if is_nifti(str(path)) else 0
        if nonfinite:
            raise InputError(f"Error probability map {path} contains {nonfinite:,} NaN or infinite values; a "
                             "probability map holds numbers in [0, 1] (the method that wrote it failed)")
        differences = geometry.differences(volume.geometry) if geometry is not None else []
        if differences:
            # Not check_same_geometry: its advice (--resample-seg) moves the segmentation, not this map.
            raise GeometryMismatchError(
                f"Error probability map {path} is not on the segmentation's voxel grid: " + "; ".join(differences)
                + ". Give the maps on the segmentation's grid, or, when they are on the image's grid, pass that "
                "image (CLI: --image) with --resample-seg."
            )
        error_prob[label] = volume.array
    return error_prob
