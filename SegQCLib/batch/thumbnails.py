"""PNG thumbnails of a case's worst slices, for the batch ranking page.

Thumbnails are composed with numpy (image in grey, the QC error probability as a red overlay whose
opacity is the probability, the segmentation's class outlines in colour, error boxes in yellow) and
written as PNG with Pillow (no display, no plotting library).  Slices are shown in array order
(rows = the first in-plane array axis), stretched to their physical aspect ratio.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ..errors import WriteError
from ..files import atomic_write
from ..geometry import Geometry
from ..quality.report import Report

logger = logging.getLogger(__name__)

THUMBNAIL_LONG_SIDE_PX = 192
DEFAULT_THUMBNAILS_PER_CASE = 3
INTENSITY_PERCENTILES = (1.0, 99.0)
ERROR_OVERLAY_MAX_ALPHA = 0.75
ERROR_COLOR = np.array([1.0, 0.1, 0.1])
BOX_COLOR = np.array([1.0, 0.9, 0.0])
CLASS_COLORS = np.array([[0.1, 0.9, 0.2], [0.2, 0.6, 1.0], [1.0, 0.5, 0.0], [0.9, 0.2, 0.9], [0.0, 0.9, 0.9]])
BOX_LINE_PX = 2


def _verify_png(path: Path, expected: Image.Image) -> None:
    """The written PNG decodes (chunk CRCs and all) to the picture that was meant to be written."""
    try:
        with Image.open(path) as written:
            same = written.size == expected.size and np.array_equal(np.asarray(written), np.asarray(expected))
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow reports a truncated PNG as OSError or SyntaxError
        raise WriteError(f"it cannot be read back ({exc})") from exc
    if not same:
        raise WriteError("it reads back as another picture")


@dataclass
class Thumbnail:
    path: Path
    slice_index: int
    error_score: float


def worst_slices(report: Report, segmentation: np.ndarray, count: int) -> list[tuple[int, float]]:
    """The ``count`` slices with the highest error score; a case without predicted errors shows the slice
    with the most segmented voxels, so every row has a picture."""
    chosen = [(s.index, s.error_score) for s in report.slices if s.error_score > 0][:count]
    if chosen:
        return chosen
    axes = tuple(a for a in range(3) if a != report.slice_axis)
    area = np.count_nonzero(segmentation, axis=axes)
    return [(int(np.argmax(area)) if area.any() else segmentation.shape[report.slice_axis] // 2, 0.0)]


def _grey(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, INTENSITY_PERCENTILES)
    return float(low), float(high) if high > low else float(low) + 1.0


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def compose_slice(image: np.ndarray, segmentation: np.ndarray, error: np.ndarray, window: tuple[float, float],
                  boxes: Sequence[tuple[int, int, int, int]], spacing_rc_mm: tuple[float, float]) -> np.ndarray:
    """RGB uint8 picture of one slice: grey image, red error overlay, class outlines, yellow boxes.

    ``boxes`` are (row0, col0, row1, col1) in slice voxels, end exclusive.  The picture is resampled
    nearest-neighbour to :data:`THUMBNAIL_LONG_SIDE_PX` on its longer physical side.
    """
    low, high = window
    grey = np.clip((image.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    alpha = (np.clip(error, 0.0, 1.0) * ERROR_OVERLAY_MAX_ALPHA)[..., None]
    rgb = rgb * (1.0 - alpha) + ERROR_COLOR * alpha
    for index, label in enumerate(int(v) for v in np.unique(segmentation) if v != 0):
        rgb[_outline(segmentation == label)] = CLASS_COLORS[index % len(CLASS_COLORS)]
    rows, cols = image.shape
    extent_r, extent_c = rows * spacing_rc_mm[0], cols * spacing_rc_mm[1]
    scale = THUMBNAIL_LONG_SIDE_PX / max(extent_r, extent_c)
    out_r, out_c = max(1, round(extent_r * scale)), max(1, round(extent_c * scale))
    row_index = np.minimum((np.arange(out_r) * rows) // out_r, rows - 1)
    col_index = np.minimum((np.arange(out_c) * cols) // out_c, cols - 1)
    picture = rgb[row_index[:, None], col_index[None, :]]
    for r0, c0, r1, c1 in boxes:
        top, bottom = int(r0 * out_r / rows), max(int(r0 * out_r / rows) + 1, int(round(r1 * out_r / rows)))
        left, right = int(c0 * out_c / cols), max(int(c0 * out_c / cols) + 1, int(round(c1 * out_c / cols)))
        top, left = min(top, out_r - 1), min(left, out_c - 1)
        picture[top:bottom, left:left + BOX_LINE_PX] = BOX_COLOR
        picture[top:bottom, max(left, right - BOX_LINE_PX):right] = BOX_COLOR
        picture[top:top + BOX_LINE_PX, left:right] = BOX_COLOR
        picture[max(top, bottom - BOX_LINE_PX):bottom, left:right] = BOX_COLOR
    return (np.clip(picture, 0.0, 1.0) * 255).astype(np.uint8)


def _save_png(path: Path, picture: np.ndarray) -> None:
    image = Image.fromarray(picture)  # (rows, cols, 3) uint8 -> RGB
    atomic_write(path, lambda temporary: image.save(temporary, format="PNG"), suffix=".tmp.png",
                 verify=lambda temporary: _verify_png(temporary, image))


def render_thumbnails(image: np.ndarray, segmentation: np.ndarray, error_prob: Mapping[int, np.ndarray],
                      report: Report, geometry: Geometry, out_dir: Path, stem: str,
                      count: int = DEFAULT_THUMBNAILS_PER_CASE) -> list[Thumbnail]:
    """Write ``<stem><k>.png`` (k = slice index) for the case's worst slices into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    axis = report.slice_axis
    in_plane = [a for a in range(3) if a != axis]
    spacing = geometry.spacing_zyx_mm
    window = _grey(image)
    error = np.max(np.stack(list(error_prob.values())), axis=0) if error_prob else np.zeros_like(image)
    thumbnails = []
    for index, score in worst_slices(report, segmentation, count):
        boxes = [(b.bbox_zyx[0][in_plane[0]], b.bbox_zyx[0][in_plane[1]], b.bbox_zyx[1][in_plane[0]],
                  b.bbox_zyx[1][in_plane[1]]) for b in report.boxes if b.slice == index]
        picture = compose_slice(np.take(image, index, axis), np.take(segmentation, index, axis),
                                np.take(error, index, axis), window, boxes,
                                (spacing[in_plane[0]], spacing[in_plane[1]]))
        path = out_dir / f"{stem}{index}.png"
        _save_png(path, picture)
        thumbnails.append(Thumbnail(path, int(index), float(score)))
    return thumbnails
