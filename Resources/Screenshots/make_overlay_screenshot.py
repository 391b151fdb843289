"""Render ``overlay.png``: what the Slicer module shows (error overlay, segmentation, top box).

With the bundled models and nilearn installed the case is the README's sample case (an MNI152 T1
hippocampus crop segmented by the bundled segmenter) and the overlay is the default QC model's
prediction.  Otherwise:

A synthetic two-class case (no shared data, so the picture can ship with the repository) gets a wrong
segmentation: one class under-segmented, the other shifted.  With a trained default model installed the
overlay is the model's predicted error probability; otherwise it is the true error of the wrong
segmentation, and the title says so.  Run from the repository root:
``python Resources/Screenshots/make_overlay_screenshot.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from scipy import ndimage  # noqa: E402

from SegQCLib.errors import ModelError  # noqa: E402
from SegQCLib.geometry import Geometry  # noqa: E402
from SegQCLib.io.case import Case  # noqa: E402
from SegQCLib.io.volumes import LabelMap, Volume  # noqa: E402
from SegQCLib.quality.postprocess import build_report  # noqa: E402

OUTPUT = Path(__file__).with_name("overlay.png")
SHAPE_ZYX = (36, 56, 48)
SPACING_XYZ_MM = (1.0, 1.0, 1.0)
CLASS_NAMES = {1: "anterior", 2: "posterior"}
OVERLAY_THRESHOLD = 0.3
SEED = 7


def synthetic_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, truth, wrong segmentation) of two touching ellipsoids in a smooth noisy background."""
    rng = np.random.default_rng(SEED)
    z, y, x = np.indices(SHAPE_ZYX, dtype=float)
    truth = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    truth[((z - 18) / 9) ** 2 + ((y - 20) / 11) ** 2 + ((x - 24) / 8) ** 2 <= 1] = 1
    truth[(((z - 18) / 8) ** 2 + ((y - 36) / 10) ** 2 + ((x - 25) / 7) ** 2 <= 1) & (truth == 0)] = 2
    image = 40.0 + 60.0 * (truth > 0) + 25.0 * (truth == 2)
    image = ndimage.gaussian_filter(image, 1.2) + ndimage.gaussian_filter(rng.normal(0, 12, SHAPE_ZYX), 0.7)
    wrong = truth.copy()
    wrong[(truth == 1) & (y < 15) & (x > 22)] = 0  # anterior: a missed lobe
    shifted = np.roll(truth == 2, 3, axis=2)  # posterior: drawn three voxels to the side
    wrong[wrong == 2] = 0
    wrong[shifted & (wrong == 0)] = 2
    return image.astype(np.float32), truth, wrong


def error_maps(image: np.ndarray, truth: np.ndarray, wrong: np.ndarray, geometry: Geometry) -> tuple[dict, str]:
    try:
        from SegQCLib.engine import QCEngine

        engine = QCEngine(device="cpu")
        if engine.config.trained:
            case = Case([Volume(image, geometry)], LabelMap(wrong, geometry, dict(CLASS_NAMES)))
            return engine.run_case(case).error_prob, "predicted error probability (default model)"
    except (ImportError, ModelError) as exc:
        logging.info("No trained default model (%s): showing the true error", exc)
    error = {label: ((wrong == label) != (truth == label)).astype(np.float32) for label in CLASS_NAMES}
    return error, "true error of the wrong segmentation (no trained model installed)"


def sample_case_with_prediction() -> tuple[np.ndarray, np.ndarray, Geometry, dict, str] | None:
    """The README's sample case and the default model's error maps, or None when either is unavailable."""
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    try:
        from SegQCLib.engine import QCEngine
        from SegQCLib.io.case import load_case
        from training.sample_case import make_sample_case

        with tempfile.TemporaryDirectory() as folder:
            image_path, seg_path = make_sample_case(folder)
            case = load_case([image_path], seg_path)
        engine = QCEngine(device="cpu")
        if not engine.config.trained:
            return None
        error = engine.run_case(case).error_prob
    except Exception as exc:  # any missing piece (nilearn, models, torch) falls back to the synthetic case
        logging.info("Sample case unavailable (%s): using a synthetic case", exc)
        return None
    return (case.images[0].array, case.segmentation.array, case.geometry, error,
            "predicted error probability (default model), MNI152 sample case")


def main() -> None:
    sample = sample_case_with_prediction()
    if sample is not None:
        image, wrong, geometry, error, source = sample
    else:
        image, truth, wrong = synthetic_case()
        geometry = Geometry(SHAPE_ZYX, SPACING_XYZ_MM)
        error, source = error_maps(image, truth, wrong, geometry)
    report = build_report(LabelMap(wrong, geometry, dict(CLASS_NAMES)), error, class_names=CLASS_NAMES)
    box = report.boxes[0]
    z = box.slice
    total = np.clip(sum(error.values()), 0.0, 1.0)[z]
    overlay = np.ma.masked_less(total, OVERLAY_THRESHOLD)
    colours = LinearSegmentedColormap.from_list("segqc", [(1.0, 1.0, 0.0), (1.0, 0.0, 0.0)])

    figure, axis = plt.subplots(figsize=(6.4, 5.2), dpi=100)
    axis.imshow(image[z], cmap="gray", origin="lower")
    axis.imshow(overlay, cmap=colours, vmin=0.0, vmax=1.0, alpha=0.6, origin="lower")
    for label, colour in ((1, "#3cb371"), (2, "#4f8fe6")):
        axis.contour(wrong[z] == label, levels=[0.5], colors=colour, linewidths=1.5, origin="lower")
    (y0, x0), (y1, x1) = box.bbox_zyx[0][1:], box.bbox_zyx[1][1:]
    axis.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=2))
    classes = ", ".join(f"{c.name} {c.dice_est:.2f}" for c in report.classes)
    axis.set_title(f"Slice {z} (rank 1 box: {CLASS_NAMES[box.label]})\nEstimated Dice: case "
                   f"{report.case.dice_est:.2f}; {classes}", fontsize=10)
    axis.set_xlabel(f"Overlay: {source}; contours: segmentation", fontsize=8)
    axis.set_xticks([])
    axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(OUTPUT)
    logging.info("wrote %s", OUTPUT)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
