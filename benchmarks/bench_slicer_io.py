"""Benchmark: the files the Slicer module writes for its QC process and reads back, gzip vs uncompressed.

The module writes the image(s) and the segmentation for ``segqc run`` and reads the error maps back; with
gzip (the default of ``.nii.gz``) a 300x512x512 float volume took 19 s to write, with Slicer's GUI frozen
meanwhile.  Now the files are plain ``.nii`` and written and read on a worker thread.  This prints the
time of each way as a ratio to copying the same array in memory (measured in the same run, so the ratios
mean the same on any machine): write and read of one float32 volume and of one uint8 label map.

Run: ``python benchmarks/bench_slicer_io.py [--shape 300 512 512] [--repeats 3]``.

Measured 2026-11-30 on the shared 2-core development VM (a training run beside it; medians of 3), 300x512x512,
reference copy 0.134 s:
    data             file      write s  x copy   read s  x copy     MiB
    image float32    .nii.gz     33.34   249.5     6.09    45.6   268.5
    image float32    .nii         0.66     5.0     1.43    10.7   300.0
    label map uint8  .nii.gz      0.18     1.3     0.15     1.1     0.1
    label map uint8  .nii         0.17     1.3     0.18     1.4    75.0
Uncompressed, the image is written 50x faster and an error map read 4x faster; both now run off the GUI thread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from SegQCLib.geometry import Geometry
from SegQCLib.io.image_files import read_image, read_labelmap, write_array


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shape = tuple(args.shape)
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    # A CT-like float image (smooth with noise) and a label map of two blobs: realistic compressibility.
    image = (np.sin(z / 17.0) + np.cos(y / 23.0) * np.sin(x / 31.0)).astype(np.float32) * 400.0
    image += rng.normal(0.0, 20.0, shape).astype(np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    cz, cy = shape[0] / 2, shape[1] / 2
    labels[((z - cz) ** 2 / 2000 + (y - cy) ** 2 / 8000 + (x - shape[2] / 3) ** 2 / 6000) < 1] = 1
    labels[((z - cz) ** 2 / 1500 + (y - cy) ** 2 / 6000 + (x - 2 * shape[2] / 3) ** 2 / 5000) < 1] = 2
    geometry = Geometry(shape, (0.8, 0.8, 1.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    reference = median_seconds(lambda: np.array(image, copy=True), args.repeats)
    print(f"volume {shape} float32 ({image.nbytes / 2**20:.0f} MiB); reference: one in-memory copy "
          f"{reference:.3f} s")
    with tempfile.TemporaryDirectory() as folder:
        rows = []
        for what, array, reader in (("image float32", image, read_image), ("label map uint8", labels, read_labelmap)):
            for suffix, compress in ((".nii.gz", True), (".nii", False)):
                path = Path(folder) / f"volume{suffix}"
                write_s = median_seconds(lambda a=array, p=path, c=compress: write_array(p, a, geometry, compress=c),
                                         args.repeats)
                read_s = median_seconds(lambda p=path, r=reader: r(p), args.repeats)
                rows.append((what, suffix, write_s, read_s, path.stat().st_size))
        print(f"{'data':16} {'file':8} {'write s':>8} {'x copy':>7} {'read s':>8} {'x copy':>7} {'MiB':>7}")
        for what, suffix, write_s, read_s, size in rows:
            print(f"{what:16} {suffix:8} {write_s:8.2f} {write_s / reference:7.1f} {read_s:8.2f} "
                  f"{read_s / reference:7.1f} {size / 2**20:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
