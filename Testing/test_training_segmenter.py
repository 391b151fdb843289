"""The small segmenter: snapshots along training, predictions on the image grid, TTA, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SegQCLib.errors import ModelError
from training.segmenter import (
    TTA_FLIPS,
    SegmenterConfig,
    SegmenterTraining,
    UNet3D,
    load_segmenter,
    predict_labels,
    predict_probabilities,
    save_segmenter,
    train_segmenter,
)

TINY = SegmenterConfig(base_channels=4, levels=2)


@pytest.fixture(scope="module")
def trained(hippocampus_sample):
    torch.set_num_threads(2)
    images = [image.array for _, image, _ in hippocampus_sample[:3]]
    labels = [label.array for _, _, label in hippocampus_sample[:3]]
    settings = SegmenterTraining(iterations=4, batch_size=1, snapshot_iterations=(1, 3), train_crop_zyx=(16, 24, 16))
    return train_segmenter(images, labels, settings, TINY)


def test_snapshots_are_kept_at_the_requested_iterations_and_the_last(trained):
    assert sorted(trained.snapshots) == [1, 3, 4]
    early, late = trained.snapshots[1], trained.snapshots[4]
    assert any(not torch.equal(early[k], late[k]) for k in early), "weights did not change during training"


def test_predictions_are_label_maps_on_the_image_grid(trained, hippocampus_sample):
    image = hippocampus_sample[4][1].array
    labels = predict_labels(trained.model(), image)
    assert labels.shape == image.shape
    assert set(np.unique(labels)) <= {0, 1, 2}


def test_tta_probabilities_are_distributions_that_differ_from_a_single_pass(trained, hippocampus_sample):
    image = hippocampus_sample[4][1].array
    net = trained.model(1)
    single = predict_probabilities(net, image)
    tta = predict_probabilities(net, image, TTA_FLIPS)
    np.testing.assert_allclose(tta.sum(axis=0), 1.0, atol=1e-4)
    assert not np.allclose(single, tta)


def test_saved_segmenter_predicts_like_the_original(trained, hippocampus_sample, tmp_path):
    image = hippocampus_sample[3][1].array
    net = trained.model()
    save_segmenter(net, tmp_path / "seg")
    loaded = load_segmenter(tmp_path / "seg")
    # Weights are stored in float16 (half the size); probabilities agree to that precision.
    np.testing.assert_allclose(predict_probabilities(loaded, image), predict_probabilities(net, image), atol=2e-2)


def test_missing_segmenter_files_raise_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="missing"):
        load_segmenter(tmp_path)


def test_the_slice_wise_2d_segmenter_segments_every_slice_on_its_own(hippocampus_sample):
    config = SegmenterConfig(base_channels=4, levels=2, architecture="unet2d")
    net = UNet3D(config).eval()
    x = torch.randn(1, 1, 4, 16, 16)
    with torch.no_grad():
        whole = net(x)
        alone = net(x[:, :, 2:3])
    assert whole.shape == (1, 3, 4, 16, 16)
    torch.testing.assert_close(whole[:, :, 2:3], alone)


def test_an_unknown_segmenter_architecture_is_refused():
    with pytest.raises(ValueError, match="architecture"):
        SegmenterConfig(architecture="vnet")
