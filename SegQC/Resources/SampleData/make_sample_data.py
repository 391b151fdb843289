"""Write the module's sample case (SegQCModuleLib/sample_data.py explains it) and print the files' SHA-256 for
SAMPLE_FILES.  Run from the repository root: ``python SegQC/Resources/SampleData/make_sample_data.py``
(needs torch, nilearn and the bundled segmenter; the thumbnail is drawn by
``Resources/Screenshots/make_screenshots.py``)."""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "SegQC")]

from SegQCModuleLib.sample_data import SAMPLE_DIR, SAMPLE_FILES, SEGMENT_NAMES  # noqa: E402

from SegQCLib.io.image_files import read_image, read_labelmap, write_array, write_labelmap  # noqa: E402
from SegQCLib.io.volumes import LabelMap, SegmentStyle  # noqa: E402

# Slicer's DICOM master list: Anatomical Structure / Hippocampus (SCT 5366008), modifier Left (SCT 7771000).
LEFT_HIPPOCAMPUS = ("Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure"
                    "~SCT^5366008^Hippocampus~SCT^7771000^Left~Anatomic codes - DICOM master list~^^~^^")
SEGMENT_STYLES = {1: SegmentStyle((0.30, 0.85, 0.35), LEFT_HIPPOCAMPUS),
                  2: SegmentStyle((0.25, 0.55, 1.00), LEFT_HIPPOCAMPUS)}


def make_sample(out_dir: Path) -> tuple[Path, Path]:
    """The sample's image (uint8: the template's values are whole numbers 0..255) and .seg.nrrd in ``out_dir``."""
    from training.sample_case import make_sample_case

    with tempfile.TemporaryDirectory() as work:
        image_path, seg_path = make_sample_case(work)
        image, labels = read_image(image_path), read_labelmap(seg_path)
    if not (np.all(np.mod(image.array, 1) == 0) and image.array.min() >= 0 and image.array.max() <= 255):
        raise ValueError("The template crop is not whole numbers in 0..255; store it as float")
    image_file = write_array(out_dir / SAMPLE_FILES[0].fileName, image.array.astype(np.uint8), image.geometry)
    segmentation = LabelMap(labels.array, labels.geometry, dict(SEGMENT_NAMES), styles=dict(SEGMENT_STYLES))
    return image_file, write_labelmap(out_dir / SAMPLE_FILES[1].fileName, segmentation)


def main() -> int:
    for path in make_sample(SAMPLE_DIR):
        print(f"{path.relative_to(ROOT)}  sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
