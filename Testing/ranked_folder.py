"""A real ``segqc rank`` output folder for the case-queue tests: three real cases whose segmentations are perturbed
(so they have errors to review), checked by the bundled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_ranked_folder(root: Path, cases, count: int = 3) -> Path:
    """Run ``run_batch`` (what ``segqc rank`` runs) over ``count`` shared cases; returns the output folder."""
    from scipy import ndimage

    from SegQCLib.batch.cases import BatchCase
    from SegQCLib.batch.runner import run_batch
    from SegQCLib.engine import QCEngine
    from SegQCLib.io.image_files import read_labelmap, write_array

    batch = []
    for index, case in enumerate(cases[:count]):
        truth = read_labelmap(case.label)
        wrong = truth.array.copy()
        wrong[ndimage.binary_dilation(truth.array == 1, iterations=1 + index) & (truth.array == 0)] = 1
        wrong[np.roll(truth.array == 2, 2 + index, axis=2) & (wrong == 0)] = 2
        wrong[(truth.array == 2) & ~np.roll(truth.array == 2, 2 + index, axis=2)] = 0
        seg = write_array(root / "segs" / f"{case.case_id}.nii.gz", wrong, truth.geometry)
        batch.append(BatchCase(case.case_id, (case.images[0],), seg))
    run_batch(batch, root / "out", QCEngine(None, "cpu"), thumbnails_per_case=1)
    return root / "out"
