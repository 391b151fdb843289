"""The ranking page and the pictures: each class's error, outline and boxes in its own colour; the page loads,
sorts and filters in a real browser without errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from browser import probe_page
from PIL import Image

from SegQCLib.batch.cases import BatchCase
from SegQCLib.batch.index_page import write_index_html
from SegQCLib.batch.results import CaseStatus, RankRow
from SegQCLib.batch.runner import run_batch
from SegQCLib.engine import QCEngine
from SegQCLib.io.volumes import LabelMap
from SegQCLib.network.config import ModelConfig
from SegQCLib.network.package import init_model_package
from SegQCLib.quality.postprocess import build_report
from SegQCLib.review.orientation import Orientation
from SegQCLib.review.pictures import (
    SLICE_LONG_SIDE_PX,
    PlaneBox,
    class_color,
    compose_plane,
    render_case_pictures,
    worst_slices,
)

SMALL_MODEL = dict(widths=[4, 8], blocks_per_stage=[1, 1], strides=[[2, 2, 2], [2, 2, 2]], decoder_from_stage=1,
                   full_res_width=4, case_head_hidden=8, patch_size_zyx=[32, 32, 32])


def case_with_known_error(hippocampus_case):
    """A real image and segmentation, with an error probability of 0.9 in a block on slice 15 of class 1."""
    image, truth = hippocampus_case
    error = {label: np.zeros(truth.array.shape, np.float32) for label in (1, 2)}
    zs, ys, xs = np.nonzero(truth.array == 1)
    centre = int(np.median(zs)), int(np.median(ys)), int(np.median(xs))
    error[1][centre[0], centre[1] - 4:centre[1] + 4, centre[2] - 4:centre[2] + 4] = 0.9
    segmentation = LabelMap(truth.array, truth.geometry)
    return image, segmentation, error, centre


def color_pixels(picture: np.ndarray, color: np.ndarray, tolerance: float = 0.02) -> np.ndarray:
    return np.all(np.abs(picture.astype(float) / 255 - color) < tolerance, axis=2)


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


def test_worst_slice_picture_shows_the_error_box_and_outlines_in_their_class_colours(tmp_path, hippocampus_case):
    image, segmentation, error, centre = case_with_known_error(hippocampus_case)
    report = build_report(segmentation, error)
    assert any(b.slice == centre[0] and b.label == 1 for b in report.boxes)
    pictures = render_case_pictures(image.array, segmentation.array, error, report, image.geometry, tmp_path, 1)
    worst = next(p for p in pictures if p.slice_index is not None)
    assert worst.slice_index == centre[0] and worst.path.name == f"slice{centre[0]}.png"
    picture = np.asarray(Image.open(worst.path).convert("RGB"))
    assert max(picture.shape[:2]) == SLICE_LONG_SIDE_PX
    assert color_pixels(picture, class_color(1)).sum() > 40  # class 1 outline and its error box
    assert color_pixels(picture, class_color(2)).sum() > 10  # class 2 outline
    # Inside the error block the fill is class 1's colour (sky blue) over the grey image: blue beats red.
    orientation = Orientation.from_geometry(image.geometry)
    view, plane = orientation.plane_of_slice(report.slice_axis, centre[0])
    row, col = orientation.plane_position(view, orientation.canonical_index(centre))
    shape = orientation.plane(orientation.canonical(segmentation.array), view, plane).shape
    r, c = int((row + 0.5) * picture.shape[0] / shape[0]), int((col + 0.5) * picture.shape[1] / shape[1])
    patch = picture[r - 1:r + 2, c - 1:c + 2].reshape(-1, 3).astype(int)
    assert np.all(patch[:, 2] > patch[:, 0] + 60)


def test_three_views_are_drawn_through_the_worst_box(tmp_path, hippocampus_case):
    image, segmentation, error, centre = case_with_known_error(hippocampus_case)
    report = build_report(segmentation, error)
    pictures = render_case_pictures(image.array, segmentation.array, error, report, image.geometry, tmp_path, 2)
    views = {p.view.value: p for p in pictures if p.slice_index is None}
    assert sorted(views) == ["axial", "coronal", "sagittal"]
    start, end = report.boxes[0].bbox_zyx
    focus = Orientation.from_geometry(image.geometry).canonical_index([(s + e - 1) // 2 for s, e in zip(start, end)])
    assert [views[name].plane for name in ("axial", "coronal", "sagittal")] == list(focus)
    for picture in views.values():
        assert picture.path.name == f"view_{picture.view.value}_{picture.plane}.png"


def test_compose_plane_keeps_the_physical_aspect_ratio():
    picture = compose_plane(np.zeros((10, 40), np.float32), np.zeros((10, 40), np.uint8), {1: np.ones((10, 40))},
                            (0.0, 1.0), [], (4.0, 1.0))
    assert picture.shape == (SLICE_LONG_SIDE_PX, SLICE_LONG_SIDE_PX, 3)  # 10*4 mm = 40*1 mm
    expected = (class_color(1) * 0.7 * 255).astype(int)
    assert np.all(np.abs(picture[5, 5].astype(int) - expected) <= 1)


def test_boxes_of_two_classes_at_the_same_place_are_both_visible():
    boxes = [PlaneBox(1, (10, 10, 30, 30)), PlaneBox(2, (10, 10, 30, 30))]
    picture = compose_plane(np.zeros((40, 40), np.float32), np.zeros((40, 40), np.uint8), {}, (0.0, 1.0), boxes,
                            (1.0, 1.0), 160)
    assert color_pixels(picture, class_color(1)).sum() > 100
    assert color_pixels(picture, class_color(2)).sum() > 100


def test_page_escapes_names_and_links_case_pages(tmp_path):
    rows = [RankRow("<script>alert(1)</script>", CaseStatus.DONE, 0.5, 0.6, 0.9, 2, 3, "cases/x/report.json",
                    [("thumbnails/x/slice3.png", 3)], page="cases/x/review.html"),
            RankRow("bad&case", CaseStatus.FAILED, error="cannot read <file>")]
    page = write_index_html(rows, tmp_path).read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="cases/x/review.html"' in page and 'src="thumbnails/x/slice3.png"' in page
    assert "bad&amp;case" in page and "cannot read &lt;file&gt;" in page


def test_page_numbers_checked_cases_in_order_and_leaves_failed_ones_unnumbered(tmp_path):
    rows = [RankRow("worst", CaseStatus.DONE, 0.2, n_boxes=1), RankRow("broken", CaseStatus.FAILED, error="x"),
            RankRow("better", CaseStatus.RESUMED, 0.8, n_boxes=0)]
    page = write_index_html(rows, tmp_path).read_text()
    numbered = re.findall(r'<tr class="(\w+)"[^>]*>(?:<td class="num">)?<td(?: class="num")?>(\d*)</td><td>(\w+)</td>',
                          page)
    assert numbered == [("done", "1", "worst"), ("failed", "", "broken"), ("resumed", "2", "better")]


# Runs in the page after load: every image rendered, then the filters and the sort driven as a user would.
RANKING_PROBE = """
window.__segqcProbe = () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const visible = () => Array.from(document.querySelectorAll('#ranking tbody tr'))
    .filter(r => !r.hidden).map(r => r.dataset.case);
  const set = (id, value) => { const c = document.getElementById(id); c.value = value;
                               c.dispatchEvent(new Event('input')); };
  const all = visible();
  set('filter-dice', String(THRESHOLD));
  const belowThreshold = visible();
  set('filter-dice', '');
  set('filter-class', '2');
  set('filter-dice', String(CLASS2_THRESHOLD));
  const class2Below = visible();
  set('filter-class', 'case'); set('filter-dice', '');
  set('filter-flag', 'failed');
  const failed = visible();
  set('filter-flag', 'any');
  const header = document.querySelector('th[data-sort="diceEst"]');
  header.click(); header.click();
  const descending = visible();
  return {images: images.length, broken: broken, all: all, below: belowThreshold, class2: class2Below,
          failed: failed, descending: descending, legend: document.getElementById('legend').offsetHeight > 0,
          shown: document.getElementById('shown').textContent};
};
"""


@pytest.fixture(scope="module")
def ranked(tmp_path_factory, hippocampus_cases):
    root = tmp_path_factory.mktemp("ranking")
    model = init_model_package(root / "model", ModelConfig(**SMALL_MODEL), seed=1)
    cases = [BatchCase(c.case_id, c.images, c.label) for c in hippocampus_cases[:3]]
    cases.append(BatchCase("unreadable", cases[0].images, root / "missing.nii.gz"))
    out = root / "ranking page"  # a space in the path: links must still resolve
    return out, run_batch(cases, out, QCEngine(model, "cpu"), thumbnails_per_case=2)


def test_ranking_page_loads_sorts_and_filters_in_headless_chromium(tmp_path, ranked):
    out, result = ranked
    checked = [r for r in result.rows if r.status is not CaseStatus.FAILED]
    dice = sorted(r.dice_est for r in checked)
    threshold = (dice[0] + dice[1]) / 2  # between the worst and the second worst
    class2 = sorted(r.class_dice[2] for r in checked)
    class2_threshold = (class2[1] + class2[2]) / 2
    probe = RANKING_PROBE.replace("CLASS2_THRESHOLD", repr(class2_threshold)).replace("THRESHOLD", repr(threshold))
    found = probe_page(out / "index.html", probe, tmp_path / "profile")
    assert found["errors"] == []
    check = found["result"]
    assert check["images"] == sum(len(r.thumbnails) for r in result.rows) == 6 and check["broken"] == []
    assert check["legend"]
    assert check["all"] == [r.case_id for r in result.rows]
    assert check["below"] == [checked[0].case_id]
    assert sorted(check["class2"]) == sorted(r.case_id for r in checked if r.class_dice[2] <= class2_threshold)
    assert check["failed"] == ["unreadable"]
    assert check["descending"][:3] == [r.case_id for r in sorted(checked, key=lambda r: -r.dice_est)]
    assert check["shown"] == f"{len(result.rows)} of {len(result.rows)} case(s) shown"
