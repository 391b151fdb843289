"""The README's sample case: a hippocampus crop of the MNI152 T1 template, segmented by the bundled segmenter.

``python -m training.sample_case --out sample/`` writes ``sample/image.nii.gz`` and
``sample/segmentation.nii.gz``.  The image comes from the ICBM 2009a symmetric MNI152 T1 template that
the ``nilearn`` package ships (``pip install nilearn``); only the file is read, nilearn is never
imported.  The crop has the size and orientation of the MSD hippocampus cases (35×51×35 voxels at 1 mm,
around the left hippocampus), and the segmentation is what the small segmenter trained on the training
split predicts: a real model output whose errors the QC network is meant to find.  No shared data is
copied or needed.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegQCLib.errors import InputError
from SegQCLib.geometry import Geometry
from SegQCLib.io.image_files import write_array

from .segmenter import TTA_FLIPS, load_segmenter, predict_labels

logger = logging.getLogger(__name__)

MNI_T1_FILE = ("datasets", "data", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
# Centre of the left hippocampus (body) in MNI space, RAS millimetres.
LEFT_HIPPOCAMPUS_CENTRE_RAS_MM = (-27.0, -22.0, -12.0)
# Size of the MSD Task04 hippocampus crops (x, y, z voxels at 1 mm): the long axis is anterior-posterior.
CROP_SIZE_XYZ = (35, 51, 35)
DEFAULT_SEGMENTER_DIR = Path(__file__).resolve().parent.parent / "Resources" / "Models" / "hippocampus-segmenter"
IMAGE_NAME = "image.nii.gz"
SEGMENTATION_NAME = "segmentation.nii.gz"


def mni_template_path() -> Path:
    """Path of nilearn's MNI152 T1 template, found without importing nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("The sample case needs the MNI152 template shipped by nilearn: pip install nilearn")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*MNI_T1_FILE)
    if not path.is_file():
        raise InputError(f"nilearn is installed but its MNI152 T1 template is missing: {path}")
    return path


def crop_around(image: sitk.Image, centre_ras_mm: Sequence[float], size_xyz: Sequence[int]) -> sitk.Image:
    """A ``size_xyz`` voxel box of ``image`` centred on a RAS point (clipped to stay inside the image)."""
    centre_lps = (-float(centre_ras_mm[0]), -float(centre_ras_mm[1]), float(centre_ras_mm[2]))
    centre_index = np.array(image.TransformPhysicalPointToIndex(centre_lps))
    size = np.array(size_xyz, dtype=int)
    start = np.clip(centre_index - size // 2, 0, np.array(image.GetSize()) - size)
    return sitk.RegionOfInterest(image, [int(s) for s in size], [int(s) for s in start])


def make_sample_case(out_dir: str | os.PathLike, segmenter_dir: str | os.PathLike = DEFAULT_SEGMENTER_DIR,
                     centre_ras_mm: Sequence[float] = LEFT_HIPPOCAMPUS_CENTRE_RAS_MM) -> tuple[Path, Path]:
    """Write the sample image and its segmentation; returns their paths."""
    out = Path(out_dir)
    crop = crop_around(sitk.ReadImage(str(mni_template_path())), centre_ras_mm, CROP_SIZE_XYZ)
    image = sitk.GetArrayFromImage(crop).astype(np.float32)
    geometry = Geometry.from_sitk(crop)
    labels = predict_labels(load_segmenter(segmenter_dir), image, TTA_FLIPS)
    if not labels.any():
        logger.warning("The segmenter found no hippocampus in the sample crop")
    image_path = write_array(out / IMAGE_NAME, image, geometry)
    seg_path = write_array(out / SEGMENTATION_NAME, labels, geometry)
    return image_path, seg_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.sample_case", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for image.nii.gz and segmentation.nii.gz")
    parser.add_argument("--segmenter", default=str(DEFAULT_SEGMENTER_DIR), help="segmenter folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    image_path, seg_path = make_sample_case(args.out, args.segmenter)
    print(f"sample image: {image_path}\nsample segmentation: {seg_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
