"""Inference: normalisation, crop, resampling, sliding-window blending, device, memory, cancellation."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from synthetic_cases import TINY_ARCHITECTURE

from SegQCLib.errors import CancelledError, InputError, ModelError, ResourceError
from SegQCLib.geometry import Geometry
from SegQCLib.network.config import ModelConfig
from SegQCLib.network.inference import (
    MAX_WINDOW_BATCH_CPU,
    choose_window_batch,
    crop_box_around,
    estimate_window_bytes,
    gaussian_importance,
    normalize_intensity,
    pad_to_shape,
    predict_case,
    resampled_geometry,
    select_device,
    sliding_window_predict,
    window_starts,
)
from SegQCLib.network.qcresunet import QCOutput, build_model, one_hot

CPU = torch.device("cpu")
TINY = dict(TINY_ARCHITECTURE, dropout=0.0, target_spacing_zyx_mm=[1.0, 1.0, 1.0], crop_margin_mm=2.0)


def tiny_model(seed: int = 0, **overrides):
    config = ModelConfig(**{**TINY, **overrides})
    torch.manual_seed(seed)
    return build_model(config).eval(), config


class VoxelwiseModel(torch.nn.Module):
    """Error logit = the first image channel, so the exact whole-volume answer is sigmoid(image).

    The case 'Dice' is 1 for a window that shows mask voxels and 0 otherwise.
    """

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.classes = classes
        self.calls: list[int] = []

    def forward(self, image, mask):
        self.calls.append(image.shape[0])
        logits = image[:, :1].repeat(1, self.classes, 1, 1, 1)
        shows_mask = (mask.sum(dim=(1, 2, 3, 4)) > 0).float()
        return QCOutput(logits, shows_mask, 1.0 - shows_mask)


def blob_case(shape=(30, 40, 36), centre=(15, 20, 18), radius=5, seed=0):
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    seg = np.where(distance < radius, 1, 0).astype(np.uint8)
    seg[(distance < radius) & (grid[0] > centre[0])] = 2
    image = (100 + 50 * seg + rng.normal(0, 5, shape)).astype(np.float32)
    return image, seg


# --- building blocks --------------------------------------------------------------------------
@pytest.mark.parametrize("size, patch, overlap", [(16, 16, 0.5), (37, 16, 0.5), (100, 48, 0.25), (17, 16, 0.0)])
def test_windows_cover_the_axis_with_at_least_the_requested_overlap(size, patch, overlap):
    starts = window_starts(size, patch, overlap)
    covered = np.zeros(size, bool)
    for start in starts:
        covered[start:start + patch] = True
    assert covered.all() and starts[0] == 0 and starts[-1] == size - patch
    steps = np.diff(starts)
    assert np.all(steps <= patch * (1 - overlap))


def test_gaussian_importance_peaks_at_the_centre_and_stays_positive():
    weights = gaussian_importance((8, 12, 10))
    assert weights.max() == pytest.approx(1.0) and weights.min() > 0
    assert torch.allclose(weights, weights.flip(0)) and torch.allclose(weights, weights.flip(1))
    assert weights[4, 6, 5] > weights[0, 6, 5]


def test_padding_reaches_the_patch_and_the_slices_undo_it():
    tensor = torch.arange(2 * 5 * 20 * 7, dtype=torch.float32).reshape(2, 5, 20, 7)
    padded, keep = pad_to_shape(tensor, (8, 16, 16))
    assert padded.shape == (2, 8, 20, 16)
    assert torch.equal(padded[(slice(None),) + keep], tensor)


def test_zscore_over_nonzero_voxels_ignores_the_zero_background():
    image = np.zeros((10, 10, 10), np.float32)
    image[2:8, 2:8, 2:8] = np.random.default_rng(0).normal(300, 40, (6, 6, 6))
    normalized = normalize_intensity(image, "zscore_nonzero")
    inside = normalized[2:8, 2:8, 2:8]
    assert inside.mean() == pytest.approx(0, abs=1e-4) and inside.std() == pytest.approx(1, abs=1e-3)


def test_percentile_normalisation_clips_outliers():
    image = np.random.default_rng(1).normal(0, 1, (20, 20, 20)).astype(np.float32) + 5
    image[0, 0, 0] = 1e6
    normalized = normalize_intensity(image, "percentile_zscore", (1, 99))
    assert normalized.max() < 5


def test_constant_image_normalises_without_nan():
    assert np.isfinite(normalize_intensity(np.full((4, 4, 4), 7, np.float32), "zscore")).all()


def test_crop_box_is_the_foreground_box_grown_by_the_margin_in_mm():
    seg = np.zeros((20, 30, 40), np.uint8)
    seg[5:8, 10:12, 30:39] = 1
    geometry = Geometry((20, 30, 40), spacing_xyz_mm=(0.5, 1.0, 2.0))
    box = crop_box_around(seg, geometry, margin_mm=2.0)
    assert box.start_zyx == (4, 8, 26) and box.stop_zyx == (9, 14, 40)


def test_crop_box_of_an_empty_segmentation_is_none():
    assert crop_box_around(np.zeros((4, 4, 4), np.uint8), Geometry((4, 4, 4)), 5.0) is None


def test_resampled_grid_keeps_the_physical_extent():
    geometry = Geometry((10, 20, 20), spacing_xyz_mm=(0.5, 0.5, 3.0), origin_lps_mm=(10.0, -4.0, 7.0))
    target = resampled_geometry(geometry, [1.0, 1.0, 1.0])
    assert target.shape_zyx == (30, 10, 10)
    first_corner = geometry.index_zyx_to_lps(np.array([-0.5, -0.5, -0.5]))
    assert np.allclose(target.index_zyx_to_lps(np.array([-0.5, -0.5, -0.5])), first_corner)
    assert resampled_geometry(geometry.with_shape((10, 20, 20)), [3.0, 0.51, 0.5]) is None


def test_select_device_cpu_and_unknown_names():
    assert select_device("cpu") == CPU
    with pytest.raises(InputError, match="Unknown device"):
        select_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when no CUDA GPU exists")
def test_requesting_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ResourceError, match="no CUDA GPU"):
        select_device("cuda")
    assert select_device("auto").type in ("cpu", "mps")


# --- sliding window ---------------------------------------------------------------------------
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_sliding_window_blending_reproduces_a_whole_volume_pass(overlap):
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 21, 37, 30, generator=generator)
    mask = one_hot(torch.zeros(21, 37, 30, dtype=torch.long), [1, 2])[0]
    model = VoxelwiseModel()
    result = sliding_window_predict(model, image, mask, (8, 16, 16), overlap, CPU, batch=3)
    assert result.windows > 1 and max(model.calls) == 3
    whole = torch.sigmoid(image[0])
    assert torch.allclose(result.prob[0], whole, atol=1e-5) and torch.allclose(result.prob[1], whole, atol=1e-5)


def test_case_prediction_is_weighted_by_mask_content_of_each_window():
    image = torch.zeros(1, 16, 64, 16)
    seg = torch.zeros(16, 64, 16, dtype=torch.long)
    seg[4:8, 2:6, 4:8] = 1  # only the first windows along y show the structure
    result = sliding_window_predict(VoxelwiseModel(), image, one_hot(seg, [1, 2])[0], (16, 16, 16), 0.5, CPU)
    assert result.windows == 7
    assert result.dice == pytest.approx(1.0) and result.nsd == pytest.approx(0.0)


def test_real_model_on_a_single_window_equals_its_direct_forward_pass():
    model, config = tiny_model(include_background_channel=True)
    image, seg = blob_case(shape=(16, 16, 16), centre=(8, 8, 8), radius=4)
    result = predict_case(model, config, [image], seg, Geometry(seg.shape), CPU, crop_margin_mm=50.0)
    normalized = torch.from_numpy(normalize_intensity(image, config.normalization))[None, None]
    with torch.inference_mode():
        direct = model(normalized, one_hot(torch.from_numpy(seg.astype(np.int64)), config.mask_labels))
    expected = torch.sigmoid(direct.error_logits)[0].numpy()
    assert result.windows == 1
    assert np.allclose(result.error_prob[1], expected[0], atol=1e-6)
    assert np.allclose(result.error_prob[2], expected[1], atol=1e-6)
    assert result.dice_pred == pytest.approx(float(direct.dice[0]))


def test_input_smaller_than_the_patch_is_padded_as_background():
    model, config = tiny_model(include_background_channel=True)
    image, seg = blob_case(shape=(12, 14, 16), centre=(6, 7, 8), radius=4)
    result = predict_case(model, config, [image], seg, Geometry(seg.shape), CPU, crop_margin_mm=50.0)
    normalized = torch.from_numpy(normalize_intensity(image, config.normalization))
    padded_image = torch.zeros(16, 16, 16)
    padded_seg = torch.zeros(16, 16, 16, dtype=torch.long)  # label 0: background, one-hot channel 0 set
    padded_image[2:14, 1:15, :] = normalized
    padded_seg[2:14, 1:15, :] = torch.from_numpy(seg.astype(np.int64))
    with torch.inference_mode():
        direct = model(padded_image[None, None], one_hot(padded_seg, config.mask_labels))
    expected = torch.sigmoid(direct.error_logits)[0, :, 2:14, 1:15, :].numpy()
    assert np.allclose(result.error_prob[1], expected[0], atol=1e-6)


def test_prediction_is_deterministic_on_cpu():
    model, config = tiny_model()
    image, seg = blob_case()
    first = predict_case(model, config, [image], seg, Geometry(seg.shape), CPU)
    second = predict_case(model, config, [image], seg, Geometry(seg.shape), CPU)
    assert all(np.array_equal(first.error_prob[k], second.error_prob[k]) for k in first.error_prob)
    assert first.dice_pred == second.dice_pred and first.nsd_pred == second.nsd_pred


def test_error_probability_is_zero_outside_the_crop_and_a_probability_inside():
    model, config = tiny_model()
    image, seg = blob_case(shape=(40, 48, 44), centre=(20, 24, 22), radius=4)
    result = predict_case(model, config, [image], seg, Geometry(seg.shape), CPU)
    crop = result.crop.slices
    foreground = np.argwhere(seg)
    margin_voxels = 2  # crop_margin_mm 2 at 1 mm spacing
    assert result.crop.start_zyx == tuple(foreground.min(axis=0) - margin_voxels)
    assert result.crop.stop_zyx == tuple(foreground.max(axis=0) + 1 + margin_voxels)
    for prob in result.error_prob.values():
        assert prob.shape == seg.shape and prob.dtype == np.float32
        inside = prob[crop]
        assert np.all((inside > 0) & (inside < 1))
        outside = prob.copy()
        outside[crop] = 0
        assert not outside.any()


def test_empty_segmentation_checks_the_whole_image_for_missed_structure():
    model, config = tiny_model()
    image, _ = blob_case(shape=(20, 24, 20))
    seg = np.zeros(image.shape, np.uint8)
    result = predict_case(model, config, [image], seg, Geometry(seg.shape), CPU)
    assert result.crop.shape == seg.shape
    assert all(np.all(p > 0) for p in result.error_prob.values())
    assert any("empty" in notice for notice in result.notices)
    assert 0 <= result.dice_pred <= 1


def test_thick_slice_input_is_resampled_to_the_model_spacing_and_back():
    model, config = tiny_model()
    image, seg = blob_case(shape=(12, 40, 40), centre=(6, 20, 20), radius=5)
    geometry = Geometry(seg.shape, spacing_xyz_mm=(1.0, 1.0, 2.5))
    result = predict_case(model, config, [image], seg, geometry, CPU)
    assert result.resampled and any("Resampled" in n for n in result.notices)
    for prob in result.error_prob.values():
        assert prob.shape == seg.shape and prob.min() >= 0 and prob.max() <= 1
        assert prob[result.crop.slices].mean() > 0


def test_wrong_modality_count_is_a_model_error():
    model, config = tiny_model()
    image, seg = blob_case()
    with pytest.raises(ModelError, match="expects 1 image modalities.*got 2"):
        predict_case(model, config, [image, image], seg, Geometry(seg.shape), CPU)


def test_labels_unknown_to_the_model_are_a_model_error():
    model, config = tiny_model()
    image, seg = blob_case()
    seg[0, 0, 0] = 3
    with pytest.raises(ModelError, match=r"labels \[3\].*1=anterior, 2=posterior"):
        predict_case(model, config, [image], seg, Geometry(seg.shape), CPU)


def test_missing_classes_are_fine_and_still_get_an_error_map():
    model, config = tiny_model()
    image, seg = blob_case()
    seg[seg == 2] = 0
    result = predict_case(model, config, [image], seg, Geometry(seg.shape), CPU)
    assert sorted(result.error_prob) == [1, 2]


# --- cancellation and memory ------------------------------------------------------------------
def test_window_memory_estimate_scales_with_the_patch_volume():
    model, config = tiny_model()
    small = estimate_window_bytes(model, config, (16, 16, 16))
    large = estimate_window_bytes(model, config, (32, 32, 32))
    assert small > 16**3 * 4 and large == pytest.approx(8 * small, rel=1e-6)


def test_window_batch_fits_free_memory_and_never_drops_below_one():
    assert choose_window_batch(CPU, window_bytes=1) == MAX_WINDOW_BATCH_CPU
    with pytest.raises(ResourceError, match="One window"):  # not even one window fits: said, not attempted
        choose_window_batch(CPU, window_bytes=10**18)



def test_cancelling_after_the_first_window_stops_with_cancelled_error():
    model, config = tiny_model()
    image, seg = blob_case(shape=(40, 48, 44), radius=12, centre=(20, 24, 22))
    cancel = threading.Event()
    windows_seen = []

    def progress(fraction, message):
        if message.startswith("QC network"):
            windows_seen.append(message)
            cancel.set()

    with pytest.raises(CancelledError):
        predict_case(model, config, [image], seg, Geometry(seg.shape), CPU, window_batch=1, progress=progress,
                     cancel=cancel)
    assert len(windows_seen) == 1


def test_out_of_memory_halves_the_window_batch_and_still_gives_the_answer():
    class RunsOutAboveOne(VoxelwiseModel):
        def forward(self, image, mask):
            if image.shape[0] > 1:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().forward(image, mask)

    image = torch.randn(1, 16, 40, 16, generator=torch.Generator().manual_seed(2))
    mask = one_hot(torch.zeros(16, 40, 16, dtype=torch.long), [1, 2])[0]
    result = sliding_window_predict(RunsOutAboveOne(), image, mask, (16, 16, 16), 0.5, CPU, batch=4)
    assert result.batch == 1
    assert torch.allclose(result.prob[0], torch.sigmoid(image[0]), atol=1e-5)


def test_out_of_memory_with_a_single_window_is_a_clear_resource_error():
    class NeverFits(VoxelwiseModel):
        def forward(self, image, mask):
            raise MemoryError()

    image = torch.zeros(1, 16, 16, 16)
    mask = torch.zeros(2, 16, 16, 16)
    with pytest.raises(ResourceError, match="Not enough memory"):
        sliding_window_predict(NeverFits(), image, mask, (16, 16, 16), 0.5, CPU, batch=2)


def test_other_runtime_errors_are_not_mistaken_for_memory_shortage():
    class Broken(VoxelwiseModel):
        def forward(self, image, mask):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        sliding_window_predict(Broken(), torch.zeros(1, 16, 16, 16), torch.zeros(2, 16, 16, 16), (16, 16, 16), 0.5,
                               CPU, batch=2)
