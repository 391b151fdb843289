"""Benchmark: what reading every written file back costs (issue 11) -- one 300x512x512 error map.

``write_array`` writes a map to a temporary file, fsyncs it, reads it back (for NIfTI: every voxel byte in
one pass through the gzip stream, whose CRC is checked, and the header's grid) and only then renames it
into place.  The reference is the same file written by SimpleITK alone, fsynced and renamed, in the same run,
so the printed ratio means the same on any machine.  The map is made like the post-processing benchmark's
(``bench_postprocess.make_case``: a smooth probability band along the class boundary, error blobs and a small
floor), so it compresses like a real one.

Run: ``python benchmarks/bench_write_verify.py [--shape 300 512 512] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_postprocess import make_case  # noqa: E402

from SegQCLib.files import fsync_file  # noqa: E402
from SegQCLib.io.image_files import write_array  # noqa: E402


def _plain_write(path: Path, array: np.ndarray, geometry) -> None:
    image = sitk.GetImageFromArray(array)
    geometry.apply_to(image)
    temporary = path.with_name(f".{path.name}.tmp.nii.gz")
    sitk.WriteImage(image, str(temporary), True)
    fsync_file(temporary)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    segmentation, error_prob = make_case(tuple(args.shape))
    array = error_prob[min(error_prob)].astype(np.float32)
    geometry = segmentation.geometry
    plain, verified = [], []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):  # interleaved, so load changes hit both alike
            started = time.perf_counter()
            _plain_write(Path(folder) / "plain.nii.gz", array, geometry)
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            write_array(Path(folder) / "verified.nii.gz", array, geometry)
            verified.append(time.perf_counter() - started)
        size = (Path(folder) / "verified.nii.gz").stat().st_size
    plain_s, verified_s = statistics.median(plain), statistics.median(verified)
    print(f"{'x'.join(map(str, args.shape))} float32 map ({array.nbytes / 2**20:.0f} MiB, {size / 2**20:.0f} MiB "
          f"compressed), medians of {args.repeats}:")
    print(f"  SimpleITK write + fsync + rename   {plain_s:7.2f} s   (reference)")
    print(f"  write_array (read back, verified)  {verified_s:7.2f} s   = {verified_s / plain_s:.2f} x reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
