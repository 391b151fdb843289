#!/usr/bin/env bash
# The README's main job: QC of the built-in sample case with the bundled default model.
# The sample is made by code: a hippocampus crop of the MNI152 T1 template shipped by nilearn,
# segmented by the bundled small segmenter (a real model output, with real model errors).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-demo_out}
.venv/bin/python -m training.sample_case --out "$OUT/sample"
.venv/bin/segqc run --image "$OUT/sample/image.nii.gz" --seg "$OUT/sample/segmentation.nii.gz" --out "$OUT/qc" --html
echo "report: $OUT/qc/report.json"
echo "review page (open it in a browser): $OUT/qc/review.html"
