"""One case's review page, as ``segqc run --html`` and ``segqc rank`` write it: it loads in a real browser without
errors, shows the legend, the pictures with orientation labels and every estimate explained, flags and a domain
verdict when the report has one, and tells exactly how to open the case in 3D Slicer."""

from __future__ import annotations

import json
import py_compile
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from browser import probe_page, screenshot
from PIL import Image

from SegQCLib.commands.cli import main
from SegQCLib.geometry import Geometry
from SegQCLib.network.config import ModelConfig
from SegQCLib.network.package import init_model_package
from SegQCLib.quality.report import Report
from SegQCLib.review import explanations
from SegQCLib.review.case_page import PageContext, case_page_html
from SegQCLib.review.flags import CaseFlag, report_flags
from SegQCLib.review.orientation import Orientation
from SegQCLib.review.pictures import class_color
from SegQCLib.review.slicer_script import SCRIPT_FILE

pytestmark = pytest.mark.realdata

SMALL_MODEL = dict(widths=[4, 8], blocks_per_stage=[1, 1], strides=[[2, 2, 2], [2, 2, 2]], decoder_from_stage=1,
                   full_res_width=4, case_head_hidden=8, patch_size_zyx=[32, 32, 32])
SLICER_CHECK = Path(__file__).resolve().parents[2] / "shared" / "tools" / "slicer_api" / "check_module.py"


@pytest.fixture(scope="module")
def checked_case(tmp_path_factory, hippocampus_cases) -> tuple[Path, Path]:
    """``segqc run --html`` on a real case with a small untrained model: (output folder, segmentation file)."""
    root = tmp_path_factory.mktemp("review")
    model = init_model_package(root / "model", ModelConfig(**SMALL_MODEL), seed=2)
    case = hippocampus_cases[0]
    out = root / "qc out"  # a space: links and the Slicer command must still work
    assert main(["run", "--image", str(case.images[0]), "--seg", str(case.label), "--out", str(out), "--model",
                 str(model), "--device", "cpu", "--html", "--progress", "none"]) == 0
    return out, case.label


PAGE_PROBE = """
window.__segqcProbe = () => {
  const images = Array.from(document.images);
  const legend = document.getElementById('legend');
  return {
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    figures: document.querySelectorAll('figure.view').length,
    labels: Array.from(document.querySelectorAll('figure.view')).map(
      f => Array.from(f.querySelectorAll('.orient')).filter(l => l.offsetWidth > 0).map(l => l.textContent).join('')),
    legend: legend ? legend.offsetHeight : 0,
    swatches: legend ? legend.querySelectorAll('.swatch').length : 0,
    sections: Array.from(document.querySelectorAll('section')).map(s => s.id),
  };
};
"""


def test_run_html_page_loads_with_every_picture_and_orientation_label(tmp_path, checked_case):
    out, _ = checked_case
    found = probe_page(out / "review.html", PAGE_PROBE, tmp_path / "profile")
    assert found["errors"] == []
    check = found["result"]
    assert check["broken"] == [] and check["images"] == check["figures"] == 6  # 3 views + 3 worst slices
    assert sorted(check["labels"][:3]) == sorted(["APRL", "SIRL", "SIAP"])  # axial, coronal, sagittal edges
    assert all(len(labels) == 4 for labels in check["labels"])
    assert check["legend"] > 0 and check["swatches"] == 2
    assert check["sections"] == ["domain", "estimates", "classes", "pictures", "boxes", "notices", "slicer"]


def test_the_screenshot_shows_the_legend_colours_and_the_pictures(tmp_path, checked_case):
    out, _ = checked_case
    shot = np.asarray(Image.open(screenshot(out / "review.html", tmp_path / "page.png", tmp_path / "profile",
                                            height=2600)).convert("RGB")).astype(float) / 255
    for label in (1, 2):  # the legend's and tables' swatches, the outlines and boxes: each class colour is seen
        assert np.all(np.abs(shot - class_color(label)) < 0.03, axis=2).sum() > 150
    dark_frames = np.all(shot < 0.1, axis=2).sum()  # the pictures sit on dark frames
    assert dark_frames > 20_000


def test_every_estimate_is_explained_with_what_to_trust_it_for(checked_case):
    out, _ = checked_case
    page = (out / "review.html").read_text()
    for text in (explanations.DICE_EST, explanations.DICE_PRED, explanations.QI, explanations.WORST_SLICE,
                 explanations.BOXES, explanations.CAVEAT):
        assert text.replace("'", "&#x27;") in page
    assert "Slices are ranked along array axis" in page and "report.json" in page


def test_the_slicer_script_names_the_case_files_and_uses_only_existing_slicer_names(checked_case):
    out, segmentation = checked_case
    script = out / SCRIPT_FILE
    py_compile.compile(str(script), doraise=True)
    text = script.read_text()
    report = Report.load(out)
    assert str(Path(segmentation).resolve()) in text
    for entry in report.classes:
        assert str((out / f"error_prob_{entry.label}.nii.gz").resolve()) in text
    page = (out / "review.html").read_text()
    assert f"Slicer --python-script &quot;{script.resolve()}&quot;" in page
    if not SLICER_CHECK.is_file():
        pytest.skip(f"Slicer API index not found at {SLICER_CHECK}: names not checked")
    checked = subprocess.run([sys.executable, str(SLICER_CHECK), "--no-warnings", str(script)], capture_output=True,
                             text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_json_progress_of_run_html_names_the_page(tmp_path, checked_case, capsys):
    out, segmentation = checked_case
    image = Report.load(out).inputs["images"][0]
    target = tmp_path / "again"
    code = main(["run", "--image", image, "--seg", str(segmentation), "--out", str(target), "--model",
                 str(Path(out).parent / "model"), "--device", "cpu", "--html", "--progress", "json"])
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["page"] == str((target / "review.html").resolve())
    assert (target / "review.html").is_file() and len(list((target / "review_images").glob("*.png"))) == 6


def test_out_of_domain_reports_get_a_banner_with_reasons_and_a_domain_section(checked_case):
    out, _ = checked_case
    report = Report.load(out)
    report.domain = {"in_domain": False, "score": 0.12, "reasons": ["image intensities unlike the T1 training data"]}
    assert CaseFlag.OUT_OF_DOMAIN in report_flags(report)
    orientation = Orientation.from_geometry(Geometry.from_dict(report.geometry))
    page = case_page_html("x", report, orientation, [], out, PageContext(flags=report_flags(report)))
    assert 'id="out-of-domain"' in page and "image intensities unlike the T1 training data" in page
    assert 'id="domain"' in page and "out of the model&#x27;s domain" in page
    report.domain = None
    plain = case_page_html("x", report, orientation, [], out, PageContext(flags=report_flags(report)))
    assert 'id="out-of-domain"' not in plain and 'id="domain"' not in plain
