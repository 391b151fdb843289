"""Slicer segmentation files (``.seg.nrrd``) <-> :class:`LabelMap`, through ``slicerio``; segment names, colours
and terminology are kept."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError, WriteError
from ..files import TEMP_SUFFIX, atomic_write
from ..geometry import Geometry
from .directions import checked_direction
from .volumes import LabelMap, SegmentStyle, validate_label_array

logger = logging.getLogger(__name__)

SEG_NRRD_SUFFIX = ".seg.nrrd"


def read_seg_nrrd(path: Path) -> LabelMap:
    """Read a Slicer segmentation; overlapping layers are flattened, segment names, colours and terminology kept."""
    import slicerio

    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as exc:  # slicerio raises IOError, ValueError, KeyError on malformed headers
        raise InputError(f"Cannot read Slicer segmentation {path}: {exc}") from exc
    voxels = np.asarray(segmentation["voxels"])
    segments = segmentation.get("segments", [])
    if voxels.ndim == 4:
        # Overlapping segments are stored in layers; a label map holds one class per voxel, so flatten
        # them in segment order (later segments win where they overlap) and renumber 1..N.
        flat = np.zeros(voxels.shape[1:], dtype=np.int16)
        names, styles = {}, {}
        for index, segment in enumerate(segments, start=1):
            mask = voxels[segment.get("layer", 0)] == segment["labelValue"]
            if np.any(flat[mask] != 0):
                logger.warning("Segment %r overlaps an earlier segment in %s; overlap assigned to it", segment["name"],
                               path)
            flat[mask] = index
            names[index] = segment.get("name", f"Segment_{index}")
            styles[index] = _style(segment)
        voxels = flat
    else:
        names = {int(s["labelValue"]): s.get("name", f"Segment_{s['labelValue']}") for s in segments}
        styles = {int(s["labelValue"]): _style(s) for s in segments}
    array_zyx = np.ascontiguousarray(np.transpose(voxels, (2, 1, 0)))
    geometry, notices = _geometry_from_ijk_to_lps(np.asarray(segmentation["ijkToLPS"], dtype=float),
                                                  array_zyx.shape, str(path))
    array = validate_label_array(array_zyx, str(path))
    styles = {label: style for label, style in styles.items() if style != SegmentStyle()}
    return LabelMap(array, geometry, names, str(path), notices, styles=styles)


def _style(segment: dict) -> SegmentStyle:
    from slicerio.segmentation import terminology_entry_to_string

    color = segment.get("color")
    terminology = segment.get("terminology")
    return SegmentStyle(tuple(float(c) for c in color[:3]) if color is not None else None,
                        terminology_entry_to_string(terminology) if terminology else None)


def _segment_fields(style: SegmentStyle | None) -> dict:
    """slicerio's fields for a segment's colour and terminology."""
    from slicerio.segmentation import terminology_entry_from_string

    fields: dict = {}
    if style is not None and style.color_rgb is not None:
        fields["color"] = [float(c) for c in style.color_rgb]
    if style is not None and style.terminology:
        fields["terminology"] = terminology_entry_from_string(style.terminology)
    return fields


def _geometry_from_ijk_to_lps(matrix: np.ndarray, shape_zyx: tuple[int, int, int],
                              source: str) -> tuple[Geometry, list[str]]:
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise InputError(f"Segmentation {source} has a damaged geometry (space directions/origin not finite)")
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise InputError(f"Segmentation {source} has a voxel axis of length 0 in its space directions")
    direction, notice = checked_direction((matrix[:3, :3] / spacing).ravel(), source, "Segmentation")
    if notice:
        logger.warning(notice)
    geometry = Geometry(tuple(int(s) for s in shape_zyx), tuple(float(s) for s in spacing),
                        tuple(float(v) for v in matrix[:3, 3]), direction)
    return geometry, [notice] if notice else []


def write_seg_nrrd(path: Path, labelmap: LabelMap) -> Path:
    """Write a label map as a Slicer segmentation (atomically), one segment per label with its name, and its
    colour and terminology when the label map carries them."""
    import slicerio

    geometry = labelmap.geometry
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = geometry.direction_matrix @ np.diag(geometry.spacing_xyz_mm)
    ijk_to_lps[:3, 3] = geometry.origin_lps_mm
    segmentation = {
        "voxels": np.transpose(labelmap.array, (2, 1, 0)),
        "ijkToLPS": ijk_to_lps,
        "segments": [
            {"id": f"Segment_{label}", "labelValue": int(label), "layer": 0,
             "name": labelmap.names.get(label, f"Segment_{label}"), **_segment_fields(labelmap.styles.get(label))}
            for label in sorted(set(labelmap.labels) | set(labelmap.names))
        ],
    }

    def verify(temporary: Path) -> None:
        try:
            written = read_seg_nrrd(temporary)
        except InputError as exc:
            raise WriteError("reading it back failed") from exc
        if not np.array_equal(written.array, labelmap.array) or geometry.differences(written.geometry):
            raise WriteError("it reads back differently from what was written")

    return atomic_write(path, lambda temporary: slicerio.write_segmentation(str(temporary), segmentation),
                        suffix=f"{TEMP_SUFFIX}{SEG_NRRD_SUFFIX}", verify=verify)
