"""What an image file's header promises, read before any voxel is: size, voxel type, where the voxels are.

A header is a few hundred bytes that can claim any size: an 89-byte NIfTI file "holding" 1800³ float32
voxels makes a reader allocate 23 GB before it finds out there is nothing to read.  :func:`read_header`
parses the headers of the formats SegQC reads (NIfTI-1/-2 ``.nii``/``.nii.gz``, NRRD ``.nrrd``/``.nhdr``
(Slicer's ``.seg.nrrd`` too), MetaImage ``.mha``/``.mhd``) itself, so that :func:`check_header` can
refuse, with a message, a size of zero along an axis, a header that promises more voxel bytes than the
file holds (or, compressed, than the file could hold at the best compression ratio gzip achieves) and a
volume that does not fit in the memory left to the process -- all before SimpleITK allocates anything.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Optional

from ..errors import InputError
from ..files import open_regular_file
from ..memory import format_bytes, require_memory

# deflate (gzip, zlib) compresses at most about 1032:1 (runs of one byte); a header promising more voxel
# bytes than that from its file is not describing the file.
MAX_DEFLATE_RATIO = 1032
# Text encodings (NRRD ascii/hex) store each value in at least one character plus a separator.
MIN_TEXT_BYTES_PER_VALUE = 1
HEADER_READ_BYTES = 1 << 16
NIFTI1_HEADER_BYTES = 348
NIFTI2_HEADER_BYTES = 540


class _HeaderError(Exception):
    """What is wrong with a header, without the path (:func:`read_header` adds it)."""


class Compression(str, Enum):
    NONE = "none"
    DEFLATE = "deflate"  # gzip / zlib: bounded ratio
    OTHER = "other"  # bzip2, text encodings, unknown: no ratio bound is checked


@dataclass
class ImageHeader:
    """The header's promises: ``size`` per axis (x first, as written), bytes per value, where the data is."""

    path: Path
    format: str
    size: tuple[int, ...]
    bytes_per_value: Optional[int]  # None when the header's type is unknown to us (SimpleITK will say)
    components: int = 1
    compression: Compression = Compression.NONE
    data_path: Optional[Path] = None  # file holding the voxels (None: not determinable, e.g. a file list)
    data_offset: int = 0  # where the voxels start in data_path (uncompressed data of attached headers)
    float_type: bool = False
    whole_file_compressed: bool = False  # .nii.gz: header and voxels in one gzip stream (data_offset is inside it)
    # NIfTI only: datatype code, scaling and byte order (for the data scan of :mod:`.nifti_data`)
    nifti_datatype: Optional[int] = None
    little_endian: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def voxels(self) -> int:
        return math.prod(self.size) if self.size else 0

    @property
    def data_bytes(self) -> Optional[int]:
        if self.bytes_per_value is None:
            return None
        return self.voxels * self.components * self.bytes_per_value

    def size_text(self) -> str:
        return "×".join(str(v) for v in self.size)


# --- NIfTI -----------------------------------------------------------------------------------------
# datatype code -> (bytes per value, floating point)
NIFTI_TYPES = {2: (1, False), 4: (2, False), 8: (4, False), 16: (4, True), 32: (8, True), 64: (8, True),
               128: (3, False), 256: (1, False), 512: (2, False), 768: (4, False), 1024: (8, False),
               1280: (8, False), 1536: (16, True), 1792: (16, True), 2048: (32, True), 2304: (4, False)}


def _read_head(path: Path, compressed: bool, count: int) -> bytes:
    with open_regular_file(path) as raw:
        if not compressed:
            return raw.read(count)
        try:
            with gzip.GzipFile(fileobj=raw) as stream:
                return stream.read(count)
        except (OSError, EOFError) as exc:
            raise _HeaderError(f"not a readable gzip-compressed file ({exc})") from exc


def _nifti_header(path: Path) -> ImageHeader:
    compressed = path.name.lower().endswith(".gz")
    head = _read_head(path, compressed, NIFTI2_HEADER_BYTES)
    if len(head) < NIFTI1_HEADER_BYTES:
        raise _HeaderError(f"too short to be a NIfTI file ({len(head)} bytes of header)")
    for order in ("<", ">"):
        sizeof_hdr = struct.unpack_from(f"{order}i", head, 0)[0]
        if sizeof_hdr in (NIFTI1_HEADER_BYTES, NIFTI2_HEADER_BYTES):
            break
    else:
        raise _HeaderError("not a NIfTI file (its first field is not a NIfTI header size)")
    if sizeof_hdr == NIFTI1_HEADER_BYTES:
        dims = struct.unpack_from(f"{order}8h", head, 40)
        datatype, _bitpix = struct.unpack_from(f"{order}2h", head, 70)
        vox_offset = struct.unpack_from(f"{order}f", head, 108)[0]
    else:
        if len(head) < NIFTI2_HEADER_BYTES:
            raise _HeaderError("too short for its NIfTI-2 header")
        datatype, _bitpix = struct.unpack_from(f"{order}2h", head, 12)
        dims = struct.unpack_from(f"{order}8q", head, 16)
        vox_offset = struct.unpack_from(f"{order}q", head, 168)[0]
    ndim = dims[0]
    if not 1 <= ndim <= 7:
        raise _HeaderError(f"invalid NIfTI header: dim[0] (the number of dimensions) is {ndim}")
    if not (math.isfinite(vox_offset) and vox_offset >= 0):
        raise _HeaderError(f"invalid NIfTI header: the voxel offset is {vox_offset}")
    per_value, is_float = NIFTI_TYPES.get(datatype, (None, False))
    return ImageHeader(path, "NIfTI", tuple(int(d) for d in dims[1:ndim + 1]), per_value,
                       compression=Compression.DEFLATE if compressed else Compression.NONE, data_path=path,
                       data_offset=int(vox_offset), float_type=is_float, whole_file_compressed=compressed,
                       nifti_datatype=int(datatype),
                       little_endian=order == "<")


# --- NRRD ------------------------------------------------------------------------------------------
_NRRD_TYPES = {
    1: {"signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"},
    2: {"short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort", "unsigned short",
        "unsigned short int", "uint16", "uint16_t"},
    4: {"int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"},
    8: {"longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t",
        "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double"},
}


def _text_header_lines(path: Path, first: bytes) -> tuple[list[str], int]:
    """Lines of a text header up to its blank line (NRRD) and the byte offset just after it."""
    with open_regular_file(path) as handle:
        head = handle.read(HEADER_READ_BYTES)
    if not head.startswith(first):
        raise _HeaderError(f"does not start like a {first.decode()} file")
    end = head.find(b"\n\n")
    if end < 0:
        end = len(head)
        offset = len(head)
    else:
        offset = end + 2
    return head[:end].decode("latin-1").splitlines(), offset


def _nrrd_header(path: Path) -> ImageHeader:
    lines, offset = _text_header_lines(path, b"NRRD")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line.startswith("#") or ":=" in line or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    try:
        size = tuple(int(v) for v in fields["sizes"].split())
    except (KeyError, ValueError) as exc:
        raise _HeaderError("invalid NRRD header: no readable 'sizes' field") from exc
    kind = fields.get("type", "").lower()
    per_value = next((n for n, names in _NRRD_TYPES.items() if kind in names), None)
    encoding = fields.get("encoding", "raw").lower()
    compression = {"raw": Compression.NONE, "gzip": Compression.DEFLATE, "gz": Compression.DEFLATE}.get(
        encoding, Compression.OTHER)
    data_file = fields.get("data file", fields.get("datafile"))
    data_path: Optional[Path] = path
    if data_file is not None:
        # "LIST" and "%d" patterns name several files: not checked here.
        data_path = None if (data_file.upper().startswith("LIST") or "%" in data_file) else path.parent / data_file
        offset = 0
    if "byte skip" in fields or "byteskip" in fields or "line skip" in fields or "lineskip" in fields:
        compression = Compression.OTHER if compression is Compression.NONE else compression
    return ImageHeader(path, "NRRD", size, per_value, compression=compression, data_path=data_path,
                       data_offset=offset, float_type=kind in ("float", "double"), extra=fields)


# --- MetaImage -------------------------------------------------------------------------------------
_MET_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}
_META_KEY = re.compile(r"^\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")


def _meta_header(path: Path) -> ImageHeader:
    with open_regular_file(path) as handle:
        head = handle.read(HEADER_READ_BYTES)
    fields: dict[str, str] = {}
    offset = 0
    for raw_line in head.split(b"\n"):
        offset += len(raw_line) + 1
        match = _META_KEY.match(raw_line.decode("latin-1"))
        if not match:
            continue
        fields[match[1]] = match[2]
        if match[1] == "ElementDataFile":
            break
    else:
        raise _HeaderError("invalid MetaImage header: no ElementDataFile line")
    try:
        size = tuple(int(v) for v in fields["DimSize"].split())
    except (KeyError, ValueError) as exc:
        raise _HeaderError("invalid MetaImage header: no readable DimSize") from exc
    components = int(fields.get("ElementNumberOfChannels", "1") or 1)
    compressed = fields.get("CompressedData", "False").lower() == "true"
    data_file = fields["ElementDataFile"]
    data_path: Optional[Path] = path
    if data_file.upper() != "LOCAL":
        data_path = None if (data_file.upper().startswith("LIST") or "%" in data_file) else path.parent / data_file
        offset = 0
    header_size = int(fields.get("HeaderSize", "0") or 0)
    compression = Compression.DEFLATE if compressed else Compression.NONE
    if header_size < 0:  # "-1": the data are the file's last bytes; the header before them is skipped
        compression = Compression.OTHER if not compressed else compression
    offset += max(header_size, 0)
    kind = fields.get("ElementType", "")
    return ImageHeader(path, "MetaImage", size, _MET_TYPES.get(kind), components, compression, data_path, offset,
                       float_type=kind in ("MET_FLOAT", "MET_DOUBLE"), extra=fields)


def read_header(path: Path, what: str = "image") -> Optional[ImageHeader]:
    """The header of a NIfTI, NRRD or MetaImage file; None for other formats (left to SimpleITK).
    InputError ("Cannot read <what> <path>: ...") when it is not a header of its format."""
    name = path.name.lower()
    parsers = (((".nii", ".nii.gz"), _nifti_header), ((".nrrd", ".nhdr"), _nrrd_header),
               ((".mha", ".mhd"), _meta_header))
    parser = next((function for suffixes, function in parsers if name.endswith(suffixes)), None)
    if parser is None:
        return None
    try:
        return parser(path)
    except _HeaderError as exc:
        raise InputError(f"Cannot read {what.lower()} {path}: not a readable NIfTI/NRRD/MHA image ({exc})") from exc
    except (OSError, UnicodeDecodeError, ValueError, struct.error) as exc:
        raise InputError(f"Cannot read {what.lower()} {path}: {exc}") from exc


def _data_bytes_on_disk(header: ImageHeader) -> Optional[int]:
    if header.data_path is None:
        return None
    try:
        skipped = 0 if header.whole_file_compressed else header.data_offset
        return max(0, os.stat(header.data_path).st_size - skipped)
    except OSError as exc:
        raise InputError(f"{header.path}: its voxels are in {header.data_path}, which cannot be read "
                         f"({os.strerror(exc.errno) if exc.errno else exc})") from exc


def check_header(path: Path, what: str, extra_bytes_per_voxel: int = 0) -> Optional[ImageHeader]:
    """Refuse, before any voxel is read, a header with an empty axis, more voxel bytes than its file holds
    or could hold, or a volume that does not fit in memory (its voxels plus ``extra_bytes_per_voxel`` for the
    caller's copies).  Returns the header (None for formats it does not parse)."""
    header = read_header(path, what)
    if header is None:
        return None
    if any(v <= 0 for v in header.size):
        raise InputError(f"{what} {path} has a size of {header.size_text()} voxels: an axis of size "
                         f"{min(header.size)} holds no voxels (the file is empty or its header is damaged)")
    needed = header.data_bytes
    if needed is None:
        return header
    on_disk = _data_bytes_on_disk(header)
    promise = (f"its {header.format} header describes {header.size_text()} voxels"
               + (f" × {header.components} components" if header.components > 1 else "")
               + f" of {header.bytes_per_value} bytes ({format_bytes(needed)})")
    if on_disk is not None:
        if header.compression is Compression.NONE and on_disk < needed:
            raise InputError(f"{what} {path} is truncated or its header is damaged: {promise}, but the file holds "
                             f"only {format_bytes(on_disk)} of voxel data")
        if header.compression is Compression.DEFLATE and needed > on_disk * MAX_DEFLATE_RATIO + HEADER_READ_BYTES:
            raise InputError(f"{what} {path} has a damaged or hostile header: {promise}, more than its "
                             f"{format_bytes(on_disk)} of compressed data can hold (gzip compresses at most "
                             f"{MAX_DEFLATE_RATIO}:1)")
    require_memory(needed + header.voxels * extra_bytes_per_voxel, f"Reading {what.lower()} {path} "
                   f"({header.size_text()} voxels)")
    return header
