"""Small synthetic cases on disk (an image with a bright two-class blob and its segmentation), for tests and
benchmarks that need many cases without the shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegQCLib.batch.cases import BatchCase

# A QC network small enough to build, save and run in a test (3 stages, widths 4-16, 16^3 patches).
TINY_ARCHITECTURE = dict(widths=[4, 8, 16], blocks_per_stage=[1, 1, 1], strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                         decoder_from_stage=1, full_res_width=4, case_head_hidden=8, patch_size_zyx=[16, 16, 16])

SMALL_SHAPE_ZYX = (24, 32, 28)
SPACING_XYZ_MM = (1.0, 1.0, 1.5)


def write_case(root: Path, case_id: str, shape_zyx: tuple[int, int, int] = SMALL_SHAPE_ZYX,
               seed: int = 0) -> BatchCase:
    """``root/images/<case_id>_0000.nii.gz`` and ``root/segs/<case_id>.nii.gz``: an ellipsoid (label 1) with a
    core (label 2) at a random place, in a noisy image that is brighter inside."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape_zyx[0], : shape_zyx[1], : shape_zyx[2]]
    centre = np.array(shape_zyx) / 2 + rng.normal(0, 1.5, 3)
    radius = min(shape_zyx) * rng.uniform(0.2, 0.3)
    distance = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    seg = (distance < radius).astype(np.uint8) + (distance < radius / 2).astype(np.uint8)
    image = (200 * (distance < radius * 1.1) + rng.normal(300, 40, shape_zyx)).astype(np.int16)
    paths = root / "images" / f"{case_id}_0000.nii.gz", root / "segs" / f"{case_id}.nii.gz"
    for array, path in zip((image, seg), paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        volume = sitk.GetImageFromArray(array)
        volume.SetSpacing(SPACING_XYZ_MM)
        sitk.WriteImage(volume, str(path), True)
    return BatchCase(case_id, (paths[0],), paths[1])


def write_cases(root: Path, count: int, prefix: str = "case", shape_zyx: tuple[int, int, int] = SMALL_SHAPE_ZYX
                ) -> list[BatchCase]:
    return [write_case(root, f"{prefix}{index:04d}", shape_zyx, seed=index) for index in range(count)]


def write_manifest(path: Path, cases: list[BatchCase]) -> Path:
    lines = ["case_id,image,seg"] + [f"{c.case_id},{c.images[0]},{c.seg}" for c in cases]
    path.write_text("\n".join(lines) + "\n")
    return path
