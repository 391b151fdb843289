"""Render the README's screenshots and the sample's thumbnail with Slicer's own display pipeline, off-screen.

The module's sample case (SegQC/Resources/SampleData: an MNI152 T1 crop of the left hippocampus and the bundled
segmenter's segmentation of it) is loaded with Slicer's readers (volumes logic, segmentation storage node),
``SegQCLogic.runQC`` checks it with the bundled QC model, and the Red, Yellow and Green slice views are rendered
by slicer-core's slice logics and displayable managers (``Testing/offscreen_views.py``), moved to the top error
box as the module does after a run.  No matplotlib: what is drawn is what Slicer draws.

Run from the repository root (needs slicer-core, torch and off-screen OpenGL: EGL or OSMesa):
``python Resources/Screenshots/make_screenshots.py``.  Writes ``Resources/Screenshots/overlay.png`` (the three
views after QC) and ``SegQC/Resources/SampleData/SegQCHippocampus.png`` (Sample Data's thumbnail, a sagittal view).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "SegQC"), str(ROOT / "Testing")]

from offscreen_views import OffscreenSliceViews, offscreen_rendering_problem  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from SegQCModuleLib.logic import SegQCLogic  # noqa: E402
from SegQCModuleLib.sample_data import SAMPLE_FILES, THUMBNAIL_FILE  # noqa: E402
from slicer_scene import SlicerApp  # noqa: E402

SCREENSHOT = ROOT / "Resources" / "Screenshots" / "overlay.png"
THUMBNAIL = SAMPLE_FILES[0].path.parent / THUMBNAIL_FILE
VIEW_SIZE_PX = 420
THUMBNAIL_SIZE_PX = 128
OVERLAY_OPACITY = 0.6
OVERLAY_THRESHOLD = 0.3
VIEW_ORDER = ("Red", "Yellow", "Green")
CAPTION_HEIGHT_PX = 26
VIEW_COLOURS = {"Red": (243, 74, 51), "Yellow": (237, 213, 76), "Green": (110, 176, 75)}  # Slicer's view colours


def load_sample(app: SlicerApp):
    """The sample's image and segmentation, read by Slicer's own readers."""
    import slicer

    image_file, segmentation_file = SAMPLE_FILES
    volume = app.volumes_logic.AddArchetypeVolume(str(image_file.path), image_file.nodeName)
    segmentation = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", segmentation_file.nodeName)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    app.scene.AddNode(storage)
    storage.SetFileName(str(segmentation_file.path))
    if not storage.ReadData(segmentation):
        raise RuntimeError(f"Slicer could not read {segmentation_file.path}")
    segmentation.SetAndObserveStorageNodeID(storage.GetID())
    segmentation.CreateDefaultDisplayNodes()
    for composite_index in range(app.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        app.scene.GetNthNodeByClass(composite_index, "vtkMRMLSliceCompositeNode").SetBackgroundVolumeID(volume.GetID())
    return volume, segmentation


def captioned(pixels: np.ndarray, text: str, colour: tuple[int, int, int]) -> Image.Image:
    """A view with a caption bar in its Slicer view colour (as the slice controller shows it)."""
    height, width, _ = pixels.shape
    picture = Image.new("RGB", (width, height + CAPTION_HEIGHT_PX), colour)
    picture.paste(Image.fromarray(pixels), (0, CAPTION_HEIGHT_PX))
    ImageDraw.Draw(picture).text((8, 7), text, fill=(0, 0, 0))
    return picture


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    problem = offscreen_rendering_problem()
    if problem:
        print(f"cannot render: {problem}", file=sys.stderr)
        return 1
    app = SlicerApp()
    volume, segmentation = load_sample(app)
    views = OffscreenSliceViews(app, VIEW_SIZE_PX)
    views.fit()

    thumbnail_views = OffscreenSliceViews(app, THUMBNAIL_SIZE_PX)
    thumbnail_views.fit()
    Image.fromarray(thumbnail_views["Yellow"].render()).save(THUMBNAIL)  # sagittal: both segments in view

    logic = SegQCLogic(app.scene)
    result = logic.runQC([volume], segmentation, device="cpu")
    report = result.report
    top = report["boxes"][0]
    logic.showOverlay(top["label"], OVERLAY_OPACITY, OVERLAY_THRESHOLD)
    logic.jumpToBox(0)
    names = {c["label"]: c["name"] for c in report["classes"]}
    captions = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}
    pictures = [captioned(views[name].render(), f"{name}: {captions[name]}", VIEW_COLOURS[name])
                for name in VIEW_ORDER]
    sheet = Image.new("RGB", (sum(p.width for p in pictures) + 4 * (len(pictures) - 1), pictures[0].height),
                      (40, 40, 40))
    for index, picture in enumerate(pictures):
        sheet.paste(picture, (index * (picture.width + 4), 0))
    sheet.save(SCREENSHOT)
    print(f"{SCREENSHOT.relative_to(ROOT)}: top box {names[top['label']]} on slice {top['slice']}, "
          f"score {top['score']:.1f}; case Dice est {report['case']['dice_est']:.3f}; "
          f"overlay p >= {OVERLAY_THRESHOLD}, opacity {OVERLAY_OPACITY}")
    print(f"{THUMBNAIL.relative_to(ROOT)}: {THUMBNAIL_SIZE_PX} px sagittal view of the sample")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
