"""The network's own uncertainty: one extra window, mirrored, and how much the prediction changes."""

from __future__ import annotations

import numpy as np
import torch

from SegQCLib.geometry import Geometry
from SegQCLib.network.inference import sliding_window_predict
from SegQCLib.network.qcresunet import QCOutput
from SegQCLib.network.uncertainty import FlipUncertainty, left_right_axis

PATCH = (8, 8, 8)


class FakeNetwork:
    """Error logits from the image (``mirror_invariant``: a function of the voxel's own value, so mirroring the
    input mirrors the output; else it also depends on the x position); records every batch size."""

    def __init__(self, mirror_invariant: bool) -> None:
        self.mirror_invariant = mirror_invariant
        self.batches: list[int] = []

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> QCOutput:
        self.batches.append(image.shape[0])
        logits = image[:, :1].repeat(1, mask.shape[1], 1, 1, 1)
        if not self.mirror_invariant:
            logits = logits + torch.linspace(-3, 3, image.shape[-1])
        return QCOutput(logits, torch.full((image.shape[0],), 0.5), None)


def inputs(shape=(8, 16, 16)) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.normal(size=(1, *shape)).astype(np.float32))
    mask = torch.zeros((2, *shape))
    mask[0, 2:6, 3:9, 4:10] = 1
    return image, mask


def predict(network: FakeNetwork, flip_axis=2):
    image, mask = inputs()
    return sliding_window_predict(network, image, mask, PATCH, 0.5, torch.device("cpu"), batch=2,
                                  flip_axis=flip_axis)


def test_a_mirror_invariant_network_does_not_disagree_with_itself():
    probe = predict(FakeNetwork(mirror_invariant=True)).flip_probe
    assert FlipUncertainty.of(probe).disagreement == 0.0


def test_a_network_that_depends_on_the_side_disagrees_under_mirroring():
    probe = predict(FakeNetwork(mirror_invariant=False)).flip_probe
    assert FlipUncertainty.of(probe).disagreement > 0.1


def test_the_mirror_costs_exactly_one_extra_window():
    with_mirror, without = FakeNetwork(True), FakeNetwork(True)
    windows = predict(with_mirror).windows
    predict(without, flip_axis=None)
    assert sum(without.batches) == windows and sum(with_mirror.batches) == windows + 1


def test_the_mirrored_window_is_the_one_holding_most_of_the_segmentation():
    probe = predict(FakeNetwork(True)).flip_probe
    # The 4x6x6 block (z 2:6, y 3:9, x 4:10): 8-voxel windows start every 4 voxels, so the best ones hold 4x5x6.
    assert probe.foreground_voxels == 4 * 5 * 6


def test_the_mirror_does_not_change_the_blended_prediction():
    plain = predict(FakeNetwork(False), flip_axis=None)
    mirrored = predict(FakeNetwork(False))
    assert torch.equal(plain.prob, mirrored.prob) and plain.dice == mirrored.dice


def test_left_right_is_the_array_axis_along_the_patients_x():
    assert left_right_axis(Geometry((4, 5, 6))) == 2
    transposed = Geometry((4, 5, 6), direction=(0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0))  # index z runs along x
    assert left_right_axis(transposed) == 0
