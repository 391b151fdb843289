"""Probability maps as small, fast NIfTI files: 8-bit voxels with their scale in the header.

A probability in [0, 1] is stored as ``round(p * 255)`` in a ``uint8`` NIfTI whose header says
``scl_slope = 1/255`` and ``scl_inter = 0``.  Every NIfTI reader applies that scale (SimpleITK, ITK and so
3D Slicer return float32, nibabel's ``get_fdata`` returns the probabilities), so readers see values in
[0, 1] within :data:`PROBABILITY_STEP` / 2 of what was written.  The file is gzip-compressed at
:data:`GZIP_LEVEL` 1, the fastest level: on the error maps of a 64x256x256 case a quarter of the size of
SimpleITK's gzip float32 and a small fraction of its writing time (``benchmarks/bench_inference.py`` prints
both).

The header, with its geometry (qform and sform from the direction, origin and spacing), is the one
SimpleITK writes for a ``uint8`` image; only the two scale fields are changed afterwards.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import WriteError
from ..geometry import Geometry

PROBABILITY_LEVELS = 255
PROBABILITY_STEP = 1.0 / PROBABILITY_LEVELS
GZIP_LEVEL = 1
# NIfTI-1 and NIfTI-2 header layouts: header size, then where scl_slope and scl_inter sit and their type.
_SCALE_FIELDS = {348: (112, "<ff"), 540: (176, "<dd")}


def quantize_probabilities(prob: np.ndarray) -> np.ndarray:
    """``uint8`` codes of probabilities (clipped to [0, 1], rounded to the nearest 1/255), chunk by chunk so a
    large map needs no float copy of itself."""
    flat = np.asarray(prob).reshape(-1)
    codes = np.empty(flat.shape, dtype=np.uint8)
    chunk = 1 << 22
    for start in range(0, flat.size, chunk):
        part = np.clip(flat[start:start + chunk], 0.0, 1.0) * PROBABILITY_LEVELS
        codes[start:start + chunk] = np.rint(part)
    return codes.reshape(np.shape(prob))


def _set_scale(header: bytearray, slope: float, intercept: float) -> None:
    (size,) = struct.unpack_from("<i", header, 0)
    if size not in _SCALE_FIELDS:
        raise WriteError(f"the NIfTI header reads back as {size} bytes long, not 348 (NIfTI-1) or 540 (NIfTI-2)")
    offset, layout = _SCALE_FIELDS[size]
    struct.pack_into(layout, header, offset, slope, intercept)


def write_probability_nifti(path: Path, codes: np.ndarray, geometry: Geometry) -> None:
    """Write the 8-bit ``codes`` (z, y, x; :func:`quantize_probabilities`) to ``path`` as a gzip-compressed NIfTI
    scaled by 1/255 in its header (not atomic: see
    :func:`SegQCLib.io.image_files.write_probability_map`)."""
    path = Path(path)
    image = sitk.GetImageFromArray(codes)
    geometry.apply_to(image)
    # Uncompressed first (ITK picks compression by extension): the header is patched, then the whole file gzipped.
    raw = path.with_name(path.name + ".raw.nii")
    try:
        sitk.WriteImage(image, str(raw), False)
        data = bytearray(raw.read_bytes())
    finally:
        raw.unlink(missing_ok=True)
    _set_scale(data, PROBABILITY_STEP, 0.0)
    try:
        path.write_bytes(gzip.compress(bytes(data), compresslevel=GZIP_LEVEL, mtime=0))
    except OSError as exc:  # like SimpleITK's silent short writes: the map is incomplete (a full disk, a size limit)
        raise WriteError(exc.strerror or str(exc)) from exc
