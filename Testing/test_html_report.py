"""The ranking page: thumbnails show error overlay, outlines and boxes; the page loads in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from SegQCLib.batch.cases import BatchCase
from SegQCLib.batch.index_page import write_index_html
from SegQCLib.batch.results import CaseStatus, RankRow
from SegQCLib.batch.runner import run_batch
from SegQCLib.batch.thumbnails import (
    BOX_COLOR,
    ERROR_COLOR,
    THUMBNAIL_LONG_SIDE_PX,
    compose_slice,
    render_thumbnails,
    worst_slices,
)
from SegQCLib.engine import QCEngine
from SegQCLib.io.volumes import LabelMap
from SegQCLib.network.config import ModelConfig
from SegQCLib.network.package import init_model_package
from SegQCLib.quality.postprocess import build_report

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=10000"]
SMALL_MODEL = dict(widths=[4, 8], blocks_per_stage=[1, 1], strides=[[2, 2, 2], [2, 2, 2]], decoder_from_stage=1,
                   full_res_width=4, case_head_hidden=8, patch_size_zyx=[32, 32, 32])

# Appended to a copy of index.html: after load, records how many images rendered (naturalWidth > 0).
CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const out = document.createElement('pre');
  out.id = 'segqc-check';
  const rows = document.querySelectorAll('tbody tr').length;
  out.textContent = JSON.stringify({images: images.length, broken: broken, rows: rows});
  document.body.appendChild(out);
});
</script>"""


def case_with_known_error(hippocampus_case):
    """A real image and segmentation, with an error probability of 0.9 in a block on slice 15 of class 1."""
    image, truth = hippocampus_case
    error = {label: np.zeros(truth.array.shape, np.float32) for label in (1, 2)}
    zs, ys, xs = np.nonzero(truth.array == 1)
    centre = int(np.median(zs)), int(np.median(ys)), int(np.median(xs))
    error[1][centre[0], centre[1] - 4:centre[1] + 4, centre[2] - 4:centre[2] + 4] = 0.9
    segmentation = LabelMap(truth.array, truth.geometry)
    return image, segmentation, error, centre


def test_worst_slices_follow_the_report_ranking(hippocampus_case):
    image, segmentation, error, centre = case_with_known_error(hippocampus_case)
    report = build_report(segmentation, error)
    assert report.slice_axis == 0
    assert worst_slices(report, segmentation.array, 3)[0][0] == centre[0]


def test_a_case_without_predicted_errors_shows_its_largest_slice(hippocampus_case):
    _, truth = hippocampus_case
    segmentation = LabelMap(truth.array, truth.geometry)
    report = build_report(segmentation, {c: np.zeros(truth.array.shape, np.float32) for c in (1, 2)})
    area = np.count_nonzero(truth.array, axis=(1, 2))
    assert worst_slices(report, truth.array, 3) == [(int(np.argmax(area)), 0.0)]


def test_thumbnail_shows_error_in_red_and_boxes_in_yellow(tmp_path, hippocampus_case):
    image, segmentation, error, centre = case_with_known_error(hippocampus_case)
    report = build_report(segmentation, error)
    assert any(b.slice == centre[0] for b in report.boxes)
    thumbnails = render_thumbnails(image.array, segmentation.array, error, report, image.geometry, tmp_path, "s", 1)
    assert [t.slice_index for t in thumbnails] == [centre[0]]
    import matplotlib.image

    picture = matplotlib.image.imread(thumbnails[0].path)[..., :3]
    assert max(picture.shape[:2]) == THUMBNAIL_LONG_SIDE_PX
    yellow = np.all(np.abs(picture - BOX_COLOR) < 0.02, axis=2)
    assert yellow.sum() > 20
    # Red dominates inside the error block (centre of the picture region mapped from the block).
    rows, cols = image.array.shape[1:]
    r = int(centre[1] * picture.shape[0] / rows)
    c = int(centre[2] * picture.shape[1] / cols)
    patch = picture[r - 2:r + 2, c - 2:c + 2].reshape(-1, 3)
    assert np.all(patch[:, 0] > patch[:, 1] + 0.3)


def test_compose_slice_keeps_the_physical_aspect_ratio():
    image = np.zeros((10, 40), np.float32)
    picture = compose_slice(image, np.zeros((10, 40), np.uint8), np.ones((10, 40)), (0.0, 1.0), [], (4.0, 1.0))
    assert picture.shape == (THUMBNAIL_LONG_SIDE_PX, THUMBNAIL_LONG_SIDE_PX, 3)  # 10*4 mm = 40*1 mm
    expected = (ERROR_COLOR * 0.75 * 255).astype(np.uint8)
    assert np.all(np.abs(picture[5, 5].astype(int) - expected) <= 1)


def test_page_escapes_names_and_links_reports(tmp_path):
    rows = [RankRow("<script>alert(1)</script>", CaseStatus.DONE, 0.5, 0.6, 0.9, 2, 3, "cases/x/report.json",
                    [("thumbnails/x/slice3.png", 3)]),
            RankRow("bad&case", CaseStatus.FAILED, error="cannot read <file>")]
    page = write_index_html(rows, tmp_path).read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="cases/x/report.json"' in page and 'src="thumbnails/x/slice3.png"' in page
    assert "bad&amp;case" in page and "cannot read &lt;file&gt;" in page


def test_page_numbers_checked_cases_in_order_and_leaves_failed_ones_unnumbered(tmp_path):
    rows = [RankRow("worst", CaseStatus.DONE, 0.2, n_boxes=1), RankRow("broken", CaseStatus.FAILED, error="x"),
            RankRow("better", CaseStatus.RESUMED, 0.8, n_boxes=0)]
    page = write_index_html(rows, tmp_path).read_text()
    numbered = re.findall(r'<tr class="(\w+)"><td>(\d*)</td><td>(\w+)</td>', page)
    assert numbered == [("done", "1", "worst"), ("failed", "", "broken"), ("resumed", "2", "better")]


def find_chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium not installed (Debian: apt-get install -y chromium); the page was not "
                "checked in a browser")


def test_ranking_page_loads_in_headless_chromium_with_every_thumbnail_rendered(tmp_path, hippocampus_cases):
    browser = find_chromium()
    model = init_model_package(tmp_path / "model", ModelConfig(**SMALL_MODEL), seed=1)
    cases = [BatchCase(c.case_id, c.images, c.label) for c in hippocampus_cases[:2]]
    cases.append(BatchCase("unreadable", cases[0].images, tmp_path / "missing.nii.gz"))
    out = tmp_path / "ranking page"  # a space in the path: links must still resolve
    result = run_batch(cases, out, QCEngine(model, "cpu"), thumbnails_per_case=2)
    expected_images = sum(len(r.thumbnails) for r in result.rows)
    assert expected_images == 4 and result.failed[0].status is CaseStatus.FAILED

    page = (out / "index.html").read_text()
    probe = out / "probe.html"
    probe.write_text(page.replace("</body>", CHECK_SCRIPT + "\n</body>"))
    profile = tmp_path / "profile"
    command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", probe.as_uri()]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="segqc-check">(.*?)</pre>', completed.stdout, re.S)
    assert match, f"page did not load in Chromium: {completed.stderr[-2000:]}"
    check = json.loads(match.group(1).replace("&quot;", '"'))
    assert check == {"images": expected_images, "broken": [], "rows": len(cases)}

    screenshot = tmp_path / "page.png"
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={screenshot}",
                    "--window-size=1200,800", (out / "index.html").as_uri()], capture_output=True, timeout=120)
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
