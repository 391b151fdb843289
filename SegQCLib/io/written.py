"""Reading back an image file SegQC has just written, before it replaces anything (see :func:`files.atomic_write`).

SimpleITK's writers do not always report a failed ``write()`` (a full disk, an I/O error): the NIfTI
writer logs "wrote only 0 of N bytes" and returns normally, leaving a truncated file.  A verifier from
:func:`image_file_verifier` therefore reads the file back: for NIfTI every voxel byte is compared with
the array that was meant to be written (one pass through the gzip stream, whose CRC is checked too) and
the header's grid with the geometry; other formats are read back with SimpleITK and compared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, WriteError
from ..files import Verifier
from ..geometry import Geometry
from .image_headers import read_header
from .nifti_data import scan_nifti_data


def _header_geometry(path: Path) -> Geometry:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = reader.GetSize()
    return Geometry((int(size[2]), int(size[1]), int(size[0])), tuple(reader.GetSpacing()),
                    tuple(reader.GetOrigin()), tuple(reader.GetDirection()))


def _check(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    try:
        header = read_header(path)
        if header is not None and header.format == "NIfTI":
            if tuple(header.size[:3]) != tuple(reversed(array.shape)) or header.voxels != array.size:
                raise WriteError(f"its header says {header.size_text()} voxels, "
                                 f"{'×'.join(map(str, reversed(array.shape)))} were written")
            if not scan_nifti_data(header, expected=array).matches_expected:
                raise WriteError("its voxels read back differently from what was written")
            written = _header_geometry(path)
        else:
            image = sitk.ReadImage(str(path))
            if not np.array_equal(sitk.GetArrayFromImage(image), array):
                raise WriteError("its voxels read back differently from what was written")
            written = Geometry.from_sitk(image)
    except (InputError, RuntimeError) as exc:  # truncated or unreadable
        reason = str(exc).replace(str(path), "the file").strip().splitlines()[-1]
        raise WriteError(f"reading it back failed ({reason})") from exc
    differences = geometry.differences(written)
    if differences:
        raise WriteError("its header reads back another grid: " + "; ".join(differences))


def image_file_verifier(array: np.ndarray, geometry: Geometry) -> Verifier:
    """A verifier for :func:`files.atomic_write` of ``array`` with ``geometry`` (WriteError when it differs)."""
    return lambda path: _check(Path(path), array, geometry)
