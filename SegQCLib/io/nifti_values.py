"""NaN and infinity in a NIfTI file's voxels, which ITK's NIfTI reader (and so SimpleITK) silently turns into 0.

An error-probability map of NaNs read through SimpleITK becomes a map of zeros, which SegQC would report as
a perfect segmentation.  :func:`count_nonfinite` reads the raw voxel data (NIfTI-1 or NIfTI-2, gzipped or
not) without scaling and counts the values that are not finite; integer data has none.
"""

from __future__ import annotations

import gzip
import os
import struct
from typing import Union

import numpy as np

from ..errors import InputError

PathLike = Union[str, os.PathLike]

NIFTI1_HEADER_BYTES = 348
NIFTI2_HEADER_BYTES = 540
# NIfTI datatype codes of floating-point voxels.
FLOAT_DATATYPES = {16: "f4", 64: "f8"}
COMPLEX_DATATYPES = {32: "c8", 1792: "c16"}
# Read the voxels in pieces of this many bytes (large maps need not fit in memory twice).
CHUNK_BYTES = 1 << 24


def _open(path: PathLike):
    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")


def _layout(header: bytes) -> tuple[np.dtype, int, int]:
    """(voxel dtype or None for non-float data, voxel count, data offset) of a NIfTI-1 or NIfTI-2 header."""
    for order in ("<", ">"):
        size = struct.unpack(order + "i", header[:4])[0]
        if size == NIFTI1_HEADER_BYTES:
            dims = struct.unpack(order + "8h", header[40:56])
            datatype = struct.unpack(order + "h", header[70:72])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
        elif size == NIFTI2_HEADER_BYTES:
            datatype = struct.unpack(order + "h", header[12:14])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
        else:
            continue
        kind = FLOAT_DATATYPES.get(datatype, COMPLEX_DATATYPES.get(datatype))
        voxels = int(np.prod([max(1, int(d)) for d in dims[1:1 + max(0, min(int(dims[0]), 7))]]))
        return (np.dtype(order + kind) if kind else None), voxels, max(offset, size)
    raise InputError("not a NIfTI-1 or NIfTI-2 header")


def count_nonfinite(path: PathLike) -> int:
    """Number of NaN or infinite voxel values stored in a NIfTI file (0 for integer data)."""
    with _open(path) as stream:
        dtype, voxels, offset = _layout(stream.read(NIFTI2_HEADER_BYTES))
        if dtype is None:
            return 0
        stream.seek(offset)
        count, remaining, rest = 0, voxels * dtype.itemsize, b""
        while remaining > 0:
            data = stream.read(min(CHUNK_BYTES, remaining))
            if not data:
                break
            remaining -= len(data)
            chunk = rest + data
            usable = len(chunk) - len(chunk) % dtype.itemsize
            values = np.frombuffer(chunk[:usable], dtype=dtype)
            count += int(values.size - np.count_nonzero(np.isfinite(values)))
            rest = chunk[usable:]
        return count
