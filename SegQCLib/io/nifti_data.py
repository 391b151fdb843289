"""One pass over a NIfTI file's voxel bytes: is the file whole, are its values finite, are they what was written.

SimpleITK's NIfTI reader turns NaN and infinite values into 0 without a word and reads a gzip stream
that ends early as far as it goes, so a half-written ``.nii.gz`` or an all-NaN image would be checked as
if it were fine.  :func:`scan_nifti_data` reads the voxel bytes itself, through Python's gzip reader,
which checks the stream's length and CRC at its end: a truncated or damaged file is refused, non-finite
values of float types are counted, and, for a file SegQC has just written, the bytes are compared with
the array that was meant to be written.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from typing import IO, Optional

import numpy as np

from ..errors import InputError
from ..files import open_regular_file
from .image_headers import Compression, ImageHeader

CHUNK_BYTES = 1 << 22
_NUMPY_TYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 32: "c8", 64: "f8", 256: "i1", 512: "u2", 768: "u4",
                1024: "i8", 1280: "u8", 1792: "c16"}


@dataclass
class NiftiScan:
    data_bytes: int
    nonfinite: int = 0  # NaN or infinite values (float and complex types only)
    matches_expected: Optional[bool] = None  # None when nothing was expected


def nifti_numpy_dtype(header: ImageHeader) -> Optional[np.dtype]:
    code = _NUMPY_TYPES.get(header.nifti_datatype or -1)
    if code is None:
        return None
    return np.dtype(("<" if header.little_endian else ">") + code)


class _Truncated(Exception):
    pass


def _read_exactly(stream: IO[bytes], count: int) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise _Truncated
    return data


def scan_nifti_data(header: ImageHeader, expected: Optional[np.ndarray] = None) -> NiftiScan:
    """Read every voxel byte of the NIfTI file ``header`` describes (and, gzip-compressed, the rest of the
    stream, so its CRC is checked); InputError when the file ends early or is damaged.

    ``expected`` (an array in the file's (z, y, x) order) is compared byte for byte, cast to the file's
    voxel type."""
    dtype = nifti_numpy_dtype(header)
    total = header.data_bytes or 0
    scan = NiftiScan(total)
    floats = dtype is not None and dtype.kind in "fc"
    value_dtype = None
    if floats:
        value_dtype = np.dtype(dtype.str[0] + "f" + str(dtype.itemsize // (2 if dtype.kind == "c" else 1)))
    expected_bytes = None
    if expected is not None:
        if dtype is None:
            scan.matches_expected = False
            return scan
        expected_bytes = np.ascontiguousarray(expected, dtype=dtype).reshape(-1).view(np.uint8)
        if expected_bytes.size != total:
            scan.matches_expected = False
            return scan
    step = CHUNK_BYTES - CHUNK_BYTES % max(dtype.itemsize if dtype is not None else 1, 1)
    compressed = header.compression is Compression.DEFLATE
    try:
        with open_regular_file(header.path) as raw:
            stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if compressed else raw  # type: ignore[assignment]
            _read_exactly(stream, header.data_offset)
            position = 0
            same = True
            while position < total:
                chunk = _read_exactly(stream, min(step, total - position))
                if value_dtype is not None:
                    scan.nonfinite += int(np.count_nonzero(~np.isfinite(np.frombuffer(chunk, value_dtype))))
                if expected_bytes is not None and same:
                    same = bool(np.array_equal(np.frombuffer(chunk, np.uint8),
                                               expected_bytes[position:position + len(chunk)]))
                position += len(chunk)
            if compressed:
                while stream.read(CHUNK_BYTES):  # to the end of the stream: gzip checks its length and CRC there
                    pass
    except _Truncated as exc:
        raise InputError(f"{header.path} is truncated: its header describes {total} bytes of voxels after "
                         f"byte {header.data_offset}, but the file ends before them (an interrupted write or a "
                         "full disk?)") from exc
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(f"{header.path} is damaged: its compressed data cannot be read to the end ({exc})") from exc
    if expected_bytes is not None:
        scan.matches_expected = same
    return scan
