"""Benchmark: full post-processing (estimates, regions, ranking, report) of a 512x512x300 volume, 3 classes.

The volume and its error probabilities are made by code: three ellipsoid classes, and per class a
smooth error probability map with a moderate band along the class boundary (observer variability),
a few high-probability error blobs (missed or extra parts) and a small floor everywhere (a network's
sigmoid is never exactly 0).  Time is printed as a ratio to one ``scipy.ndimage.label`` pass over the
same volume measured in the same run, so the number means the same on any machine.  Target: <= 20x.

Run: ``python benchmarks/bench_postprocess.py [--shape 300 512 512] [--repeats 3] [--speckle]``.
Exit status 1 when the full post-processing is slower than the target.

Measured 2026-11-22 on the shared 2-core development VM (numpy 2.4, scipy 1.17, other jobs running, so
single numbers vary by ~±30 %; medians of 3), 300x512x512, 3 classes, 2309 error boxes:
    scipy.ndimage.label pass            0.46 s   (reference)
    regions + ranking (this issue)      0.69 s   =  1.5 x label
    full build_report                   3.62 s   =  7.8 x label   (target <= 20 x)
        estimates 2.37 s, ranking 0.21 s, regions 0.43 s, the rest input checks and report records
    peak traced allocations in build_report 375 MiB (find_error_boxes alone: 93 MiB), process max RSS
        1.8 GiB (inputs are 975 MiB; the rest is mostly the synthetic-case generation)
    --speckle: 2 % isolated error voxels, extraction off: boxes in 6.5 s = 14 x label of the case
        (4 x a label pass over the speckle map itself: ~1.6 M error voxels)
    A second run under heavier load (label 0.84 s): regions + ranking 1.3 x, build_report 7.7 x
    (estimates 6.2 s of 6.5 s), speckle 11.7 x.
    After estimates were computed from one pass of per-slice sums per class (same day, 1 repeat):
    label 0.43 s; regions + ranking 0.59 s = 1.4 x; build_report 1.92 s = 4.4 x (estimates 1.23 s,
    ranking 0.22 s, regions 0.47 s); traced peak 300 MiB, max RSS 1.75 GiB.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from SegQCLib.geometry import Geometry
from SegQCLib.io.volumes import LabelMap
from SegQCLib.quality.postprocess import build_report
from SegQCLib.quality.ranking import rank_boxes, rank_slices, slice_error_scores
from SegQCLib.quality.regions import RegionParams, find_error_boxes

TARGET_RATIO = 20.0
LOW_RES_FACTOR = 4  # error maps are drawn on a 4x coarser grid and interpolated: smooth like a network's output
PROBABILITY_FLOOR = 0.002
BOUNDARY_PROBABILITY_RANGE = (0.3, 1.0)  # the network is unsure along the boundary, above 0.5 on parts of it
ERROR_BLOB_PROBABILITY = 0.95
ERROR_BLOBS_PER_CLASS = 6
SPECKLE_DENSITY = 0.02


def _ellipsoid(shape: tuple[int, int, int], centre, radii) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def make_case(shape: tuple[int, int, int], seed: int = 0) -> tuple[LabelMap, dict[int, np.ndarray]]:
    """Segmentation with classes 1-3 and smooth per-class error probabilities (float32)."""
    rng = np.random.default_rng(seed)
    depth, height, width = shape
    seg = np.zeros(shape, dtype=np.uint8)
    seg[_ellipsoid(shape, (depth * 0.5, height * 0.5, width * 0.45), (depth * 0.35, height * 0.3, width * 0.25))] = 1
    seg[_ellipsoid(shape, (depth * 0.5, height * 0.45, width * 0.45), (depth * 0.15, height * 0.12, width * 0.1))] = 2
    seg[_ellipsoid(shape, (depth * 0.4, height * 0.5, width * 0.8), (depth * 0.2, height * 0.15, width * 0.1))] = 3

    low_shape = tuple(max(4, s // LOW_RES_FACTOR) for s in shape)
    low_seg = seg[tuple(slice(0, s * LOW_RES_FACTOR, LOW_RES_FACTOR) for s in low_shape)]
    error_prob: dict[int, np.ndarray] = {}
    for label in (1, 2, 3):
        mask = low_seg == label
        boundary = ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)
        uncertainty = ndimage.gaussian_filter(rng.random(low_shape), 3.0)
        uncertainty = (uncertainty - uncertainty.min()) / (uncertainty.max() - uncertainty.min())
        low_p, high_p = BOUNDARY_PROBABILITY_RANGE
        low = np.where(boundary, low_p + (high_p - low_p) * uncertainty, 0.0)
        inside = np.argwhere(ndimage.binary_dilation(mask, iterations=3))
        for centre in inside[rng.choice(len(inside), ERROR_BLOBS_PER_CLASS, replace=False)]:
            radii = rng.uniform(1.5, 5.0, 3)
            low[_ellipsoid(low_shape, centre, radii)] = ERROR_BLOB_PROBABILITY
        low = ndimage.gaussian_filter(low, 0.5)
        zoom = [s / ls for s, ls in zip(shape, low_shape)]
        full = ndimage.zoom(low.astype(np.float32), zoom, order=1, grid_mode=True, mode="nearest")
        error_prob[label] = np.clip(full + PROBABILITY_FLOOR, 0.0, 1.0).astype(np.float32)
    geometry = Geometry(shape, spacing_xyz_mm=(0.8, 0.8, 1.5))
    return LabelMap(seg, geometry, names={1: "body", 2: "core", 3: "side"}), error_prob


def _timed(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def _peak_traced_mib(function: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _speckle_stress(geometry: Geometry, reference_s: float, repeats: int) -> None:
    """Worst case for box unification: hundreds of thousands of specks, none removed by extraction."""
    rng = np.random.default_rng(1)
    speckle = (rng.random(geometry.shape_zyx, dtype=np.float32) < SPECKLE_DENSITY).astype(np.float32)
    params = RegionParams(extract_errors=False)
    speckle_label_s, _ = _timed(lambda: ndimage.label(speckle > 0.5), 1)
    boxes_s, _ = _timed(lambda: find_error_boxes({1: speckle}, geometry, 0, params), repeats)
    print(f"speckle stress (extraction off)          {boxes_s:8.3f} s  = {boxes_s / reference_s:5.1f} x label "
          f"of the case, {boxes_s / speckle_label_s:5.1f} x label of the speckle map")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--speckle", action="store_true",
                        help="also time error boxes on a speckled map (2%% isolated voxels) without error extraction")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    shape = tuple(args.shape)
    started = time.perf_counter()
    segmentation, error_prob = make_case(shape)
    print(f"volume {shape} (z,y,x), 3 classes, made in {time.perf_counter() - started:.1f} s; inputs "
          f"{(segmentation.array.nbytes + sum(p.nbytes for p in error_prob.values())) / 2**20:.0f} MiB")

    foreground = segmentation.array > 0
    reference_s, _ = _timed(lambda: ndimage.label(foreground), args.repeats)
    slice_axis = segmentation.geometry.default_slice_axis()

    def regions_and_ranking():
        boxes = rank_boxes(find_error_boxes(error_prob, segmentation.geometry, slice_axis))
        order = rank_slices(slice_error_scores(error_prob, slice_axis))
        return boxes, order

    parts_s, (boxes, _) = _timed(regions_and_ranking, args.repeats)
    full_s, report = _timed(lambda: build_report(segmentation, error_prob), args.repeats)
    peak_mib = _peak_traced_mib(lambda: build_report(segmentation, error_prob))
    max_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

    print(f"reference: scipy.ndimage.label pass      {reference_s:8.3f} s")
    print(f"regions + ranking                        {parts_s:8.3f} s  = {parts_s / reference_s:5.1f} x label "
          f"({len(boxes)} boxes)")
    print(f"full post-processing (build_report)      {full_s:8.3f} s  = {full_s / reference_s:5.1f} x label "
          f"(target <= {TARGET_RATIO:.0f} x)")
    print(f"  report timing_s: {report.timing_s}")
    print(f"peak memory: traced allocations during build_report {peak_mib:.0f} MiB; process max RSS "
          f"{max_rss_mib:.0f} MiB")
    if args.speckle:
        _speckle_stress(segmentation.geometry, reference_s, args.repeats)
    return 0 if full_s / reference_s <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
