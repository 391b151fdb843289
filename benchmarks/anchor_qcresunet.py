"""The anchor of ``bench_inference.py``: a QCResUNet-size network as a command, as its published pipeline runs.

Start Python, import torch and SimpleITK, read the image, resample it to 1 mm (linear, as QCResUNet's
nnU-Net-style preprocessing does), z-score it over its nonzero voxels, run ONE forward pass of the
published-size network (:func:`SegQCLib.network.config.reference_qcresunet_config`, seeded random weights:
the cost does not depend on the values) on the whole volume padded to the network's stride, take the first
class's error probability, resample it back onto the image's grid and write it as one float32 ``.nii.gz``.
The resampling back is one step more than the issue lists; it is cheaper than writing the map on the twice
larger 1 mm grid, so it makes the anchor faster, not slower.  On CUDA the forward pass runs under float16
autocast, as SegQC's does.

Usage: python benchmarks/anchor_qcresunet.py --image IMG --out MAP.nii.gz [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `segqc run` sets it

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

TARGET_SPACING_MM = 1.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from SegQCLib.network.config import reference_qcresunet_config
    from SegQCLib.network.qcresunet import build_model

    device = torch.device(args.device)
    image = sitk.ReadImage(args.image, sitk.sitkFloat32)
    spacing = np.array(image.GetSpacing())
    size = np.maximum(1, np.round(np.array(image.GetSize()) * spacing / TARGET_SPACING_MM)).astype(int)
    resampled = sitk.Resample(image, [int(v) for v in size], sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                              (TARGET_SPACING_MM,) * 3, image.GetDirection(), 0.0, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(resampled)
    values = array[array != 0]
    array = (array - values.mean()) / max(float(values.std()), 1e-8)

    config = reference_qcresunet_config()
    torch.manual_seed(0)
    model = build_model(config).eval().to(device)
    stride = config.total_stride_zyx
    padded = [int(np.ceil(s / t) * t) for s, t in zip(array.shape, stride)]
    volume = torch.zeros(1, 1, *padded)
    volume[0, 0, :array.shape[0], :array.shape[1], :array.shape[2]] = torch.from_numpy(array)
    mask = torch.zeros(1, len(config.mask_labels), *padded)
    mask[:, 0] = 1.0
    with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=device.type == "cuda"):
        output = model(volume.to(device), mask.to(device))
        prob = torch.sigmoid(output.error_logits[0, 0].float()).cpu().numpy()
    prob_image = sitk.GetImageFromArray(np.ascontiguousarray(prob[:array.shape[0], :array.shape[1], :array.shape[2]]))
    prob_image.CopyInformation(resampled)
    back = sitk.Resample(prob_image, image, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    sitk.WriteImage(back, args.out, True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
