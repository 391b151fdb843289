"""PNG pictures of a case for the review pages: the worst slices along the report's slice axis and the three
anatomical views through the worst error box.

A picture is composed with numpy (image in grey; each class's predicted error probability as a translucent fill
in the class's colour, opacity growing with the probability; the segmentation's class outlines and the error
boxes in the same class colour) and written as PNG with Pillow (no display, no plotting library).  Pictures are
shown in radiological convention (see :mod:`.orientation`) and stretched to their physical aspect ratio.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image
from scipy import ndimage

from ..files import atomic_write
from ..geometry import Geometry
from ..quality.report import Report
from .orientation import Orientation, View

logger = logging.getLogger(__name__)

SLICE_LONG_SIDE_PX = 192
VIEW_LONG_SIDE_PX = 256
DEFAULT_SLICES_PER_CASE = 3
INTENSITY_PERCENTILES = (1.0, 99.0)
ERROR_OVERLAY_MAX_ALPHA = 0.7
BOX_LINE_PX = 2
OUTLINE_PX = 2
HALO_COLOR = np.array([0.05, 0.05, 0.05])
# zlib level of the PNGs: 1 writes several times faster than the default 6, for files about a third larger.
PNG_COMPRESSION = 1
# Colour of class <label> is CLASS_COLORS[(label - 1) % len]: the same on every picture, page and legend.
CLASS_COLORS = np.array([[0.0, 0.75, 1.0], [1.0, 0.55, 0.0], [0.85, 0.25, 0.95], [0.2, 0.85, 0.3],
                         [1.0, 0.9, 0.0], [0.95, 0.2, 0.2]])
SLICE_FILE = "slice{index}.png"
VIEW_FILE = "view_{view}_{plane}.png"
SLICE_FILE_RE = re.compile(r"^slice(?P<index>\d+)\.png$")
VIEW_FILE_RE = re.compile(r"^view_(?P<view>axial|coronal|sagittal)_(?P<plane>\d+)\.png$")


def class_color(label: int) -> np.ndarray:
    return CLASS_COLORS[(int(label) - 1) % len(CLASS_COLORS)]


def class_color_hex(label: int) -> str:
    return "#" + "".join(f"{round(255 * v):02x}" for v in class_color(label))


@dataclass(frozen=True)
class PlaneBox:
    """An error box on a displayed plane: (row0, col0, row1, col1) in plane pixels, end exclusive."""

    label: int
    rows_cols: tuple[int, int, int, int]


@dataclass
class Picture:
    path: Path
    view: View
    plane: int  # index along the view's canonical axis
    slice_index: Optional[int] = None  # array index along the report's slice axis, for the ranked slices
    error_score: float = 0.0


def worst_slices(report: Report, segmentation: np.ndarray, count: int) -> list[tuple[int, float]]:
    """The ``count`` slices with the highest error score; a case without predicted errors shows the slice
    with the most segmented voxels, so every case has a picture."""
    chosen = [(s.index, s.error_score) for s in report.slices if s.error_score > 0][:count]
    if chosen:
        return chosen
    axes = tuple(a for a in range(3) if a != report.slice_axis)
    area = np.count_nonzero(segmentation, axis=axes)
    return [(int(np.argmax(area)) if area.any() else segmentation.shape[report.slice_axis] // 2, 0.0)]


def focus_voxel(report: Report, segmentation: np.ndarray, error: np.ndarray) -> tuple[int, int, int]:
    """Where the three views cross: the centre of the top error box, else the most likely error voxel, else the
    segmentation's centre, else the volume's centre (array indices)."""
    if report.boxes:
        start, end = report.boxes[0].bbox_zyx
        return tuple(int((s + e - 1) // 2) for s, e in zip(start, end))
    if error.size and float(error.max()) > 0:
        return tuple(int(i) for i in np.unravel_index(int(np.argmax(error)), error.shape))
    if segmentation.any():
        return tuple(int(round(c)) for c in ndimage.center_of_mass(segmentation > 0))
    return tuple(n // 2 for n in segmentation.shape)


def grey_window(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, INTENSITY_PERCENTILES)
    return float(low), float(high) if high > low else float(low) + 1.0


def _shifted(mask: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """``mask`` moved by (dr, dc) pixels, padded with False."""
    out = np.zeros_like(mask)
    rows, cols = mask.shape
    out[max(dr, 0):rows + min(dr, 0), max(dc, 0):cols + min(dc, 0)] = \
        mask[max(-dr, 0):rows + min(-dr, 0), max(-dc, 0):cols + min(-dc, 0)]
    return out


def _outline(mask: np.ndarray, width_px: int) -> np.ndarray:
    """The ``width_px`` innermost pixels of each region's border (numpy shifts: no per-call scipy overhead)."""
    inner = mask.copy()
    for step in range(1, width_px + 1):
        for dr, dc in ((step, 0), (-step, 0), (0, step), (0, -step)):
            inner &= _shifted(mask, dr, dc)
    return mask & ~inner


def _draw_line(picture: np.ndarray, mask: np.ndarray, color: np.ndarray) -> None:
    """Draw ``mask`` in ``color`` with a dark one-pixel halo, so that it shows over an error fill of its own
    colour and over a bright image alike."""
    halo = mask.copy()
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr or dc:
                halo |= _shifted(mask, dr, dc)
    picture[halo & ~mask] = HALO_COLOR
    picture[mask] = color


def compose_plane(image: np.ndarray, segmentation: np.ndarray, errors: Mapping[int, np.ndarray],
                  window: tuple[float, float], boxes: Sequence[PlaneBox], spacing_rc_mm: tuple[float, float],
                  long_side_px: int = SLICE_LONG_SIDE_PX) -> np.ndarray:
    """RGB uint8 picture of one displayed plane, resampled nearest-neighbour to ``long_side_px`` on its longer
    physical side.  Outlines and boxes are thin lines with a dark halo drawn at the picture's resolution over the
    blocky error fill; boxes of different classes at one place are drawn one inside the other."""
    low, high = window
    grey = np.clip((image.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for label in sorted(errors):
        alpha = (np.clip(np.nan_to_num(errors[label]), 0.0, 1.0) * ERROR_OVERLAY_MAX_ALPHA)[..., None]
        rgb = rgb * (1.0 - alpha) + class_color(label) * alpha
    rows, cols = image.shape
    extent_r, extent_c = rows * spacing_rc_mm[0], cols * spacing_rc_mm[1]
    scale = long_side_px / max(extent_r, extent_c)
    out_r, out_c = max(1, round(extent_r * scale)), max(1, round(extent_c * scale))
    row_index = np.minimum((np.arange(out_r) * rows) // out_r, rows - 1)
    col_index = np.minimum((np.arange(out_c) * cols) // out_c, cols - 1)
    picture = rgb[row_index[:, None], col_index[None, :]]
    labels_up = segmentation[row_index[:, None], col_index[None, :]]
    for label in (int(v) for v in np.unique(segmentation) if v != 0):
        _draw_line(picture, _outline(labels_up == label, OUTLINE_PX), class_color(label))
    order = {label: i for i, label in enumerate(sorted({b.label for b in boxes}))}
    for box in boxes:
        r0, c0, r1, c1 = box.rows_cols
        inset = order[box.label] * (BOX_LINE_PX + 2)
        top, left = int(r0 * out_r / rows) + inset, int(c0 * out_c / cols) + inset
        bottom, right = int(round(r1 * out_r / rows)) - inset, int(round(c1 * out_c / cols)) - inset
        top, left = min(max(top, 0), out_r - 1), min(max(left, 0), out_c - 1)
        bottom, right = max(top + 1, min(bottom, out_r)), max(left + 1, min(right, out_c))
        # Dark halo: the frame one pixel wider on each side, then the frame itself in the class colour.
        for (t, lft, b, rgt), width, color in (((top - 1, left - 1, bottom + 1, right + 1), BOX_LINE_PX + 2,
                                                 HALO_COLOR), ((top, left, bottom, right), BOX_LINE_PX,
                                                               class_color(box.label))):
            t, lft = max(t, 0), max(lft, 0)
            picture[t:b, lft:lft + width] = color
            picture[t:b, max(lft, rgt - width):rgt] = color
            picture[t:t + width, lft:rgt] = color
            picture[max(t, b - width):b, lft:rgt] = color
    return (np.clip(picture, 0.0, 1.0) * 255).astype(np.uint8)


def save_png(path: Path, picture: np.ndarray) -> Path:
    """Written atomically (a killed process leaves the old picture or the new one) but not fsynced: pictures are
    drawn again from the report and maps whenever one is missing."""
    image = Image.fromarray(picture)  # (rows, cols, 3) uint8 -> RGB
    return atomic_write(path, lambda temporary: image.save(temporary, format="PNG", compress_level=PNG_COMPRESSION),
                        suffix=".tmp.png", durable=False)


@dataclass
class CasePictures:
    """Everything needed to draw any plane of one case."""

    orientation: Orientation
    image: np.ndarray  # canonical grids from here on
    segmentation: np.ndarray
    errors: dict[int, np.ndarray]
    window: tuple[float, float]
    report: Report

    @classmethod
    def build(cls, image: np.ndarray, segmentation: np.ndarray, error_prob: Mapping[int, np.ndarray],
              report: Report, geometry: Geometry) -> CasePictures:
        orientation = Orientation.from_geometry(geometry)
        return cls(orientation, orientation.canonical(image), orientation.canonical(segmentation),
                   {label: orientation.canonical(e) for label, e in error_prob.items()}, grey_window(image), report)

    def draw(self, view: View, plane: int, long_side_px: int) -> np.ndarray:
        """One plane; error boxes only on planes along the report's slice axis (a box is one slice thick: across
        the other views it would be a stack of slivers)."""
        orient = self.orientation
        along_slices = view is orient.view_of_array_axis(self.report.slice_axis)
        boxes = [PlaneBox(b.label, rect) for b in self.report.boxes
                 if along_slices and (rect := orient.plane_rect(b.bbox_zyx, view, plane)) is not None]
        return compose_plane(orient.plane(self.image, view, plane), orient.plane(self.segmentation, view, plane),
                             {label: orient.plane(e, view, plane) for label, e in self.errors.items()}, self.window,
                             boxes, orient.plane_spacing_mm(view), long_side_px)


def render_case_pictures(image: np.ndarray, segmentation: np.ndarray, error_prob: Mapping[int, np.ndarray],
                         report: Report, geometry: Geometry, out_dir: Path, slice_count: int = DEFAULT_SLICES_PER_CASE
                         ) -> list[Picture]:
    """Write the ``slice_count`` worst slices (``slice<k>.png``, k = array index along the slice axis) and the
    three views through the worst box (``view_<axial|coronal|sagittal>_<plane>.png``) into ``out_dir``; earlier pictures
    there are removed first (a re-run may pick other slices).  ``slice_count <= 0`` draws nothing."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in (*out_dir.glob("slice*.png"), *out_dir.glob("view_*.png")):
        old.unlink()
    if slice_count <= 0:
        return []
    case = CasePictures.build(image, segmentation, error_prob, report, geometry)
    pictures = []
    for index, score in worst_slices(report, segmentation, slice_count):
        view, plane = case.orientation.plane_of_slice(report.slice_axis, index)
        path = save_png(out_dir / SLICE_FILE.format(index=index), case.draw(view, plane, SLICE_LONG_SIDE_PX))
        pictures.append(Picture(path, view, plane, int(index), float(score)))
    total_error = sum(error_prob.values()) if error_prob else np.zeros(segmentation.shape, np.float32)
    focus = case.orientation.canonical_index(focus_voxel(report, segmentation, np.asarray(total_error)))
    for view in View:
        plane = focus[view.canonical_axis]
        path = save_png(out_dir / VIEW_FILE.format(view=view.value, plane=plane),
                        case.draw(view, plane, VIEW_LONG_SIDE_PX))
        pictures.append(Picture(path, view, plane))
    return pictures


def pictures_in_folder(folder: Path, report: Report, orientation: Orientation) -> Optional[list[Picture]]:
    """The pictures :func:`render_case_pictures` wrote into ``folder`` for this report (slices worst first, then
    the three views), or None when they are not all there (drawn for another report, or not drawn)."""
    if not folder.is_dir():
        return None
    scores = {s.index: s.error_score for s in report.slices}
    order = {s.index: i for i, s in enumerate(report.slices)}
    slices, views = [], {}
    for path in folder.iterdir():
        if match := SLICE_FILE_RE.match(path.name):
            index = int(match["index"])
            if index >= orientation.shape_zyx[report.slice_axis]:
                return None
            view, plane = orientation.plane_of_slice(report.slice_axis, index)
            slices.append(Picture(path, view, plane, index, scores.get(index, 0.0)))
        elif match := VIEW_FILE_RE.match(path.name):
            views[View(match["view"])] = Picture(path, View(match["view"]), int(match["plane"]))
    if not slices or set(views) != set(View):
        return None
    slices.sort(key=lambda p: order.get(p.slice_index, len(order)))
    return slices + [views[v] for v in View]
