"""From image(s) + segmentation arrays to per-class error probabilities with the QC network.

Steps of :func:`predict_case`:

1. check the input against the model (modality count, labels known to the model);
2. per-case intensity normalisation of each modality over the whole image (``config.normalization``);
3. crop to the bounding box of the segmentation plus ``crop_margin_mm``.  An **empty segmentation is
   checked over the whole image** (a notice says so): the error the QC should find is then a missed
   structure, which may be anywhere;
4. optional resampling of the crop to ``config.target_spacing_zyx_mm`` (image linear, mask nearest),
   skipped when every axis is within :data:`RESAMPLE_RELATIVE_TOLERANCE` of the target;
5. zero padding (after normalisation) to at least the patch size;
6. sliding-window prediction (each window also flipped and averaged when ``config.tta_flips`` asks for
   test-time augmentation) with Gaussian importance blending, windows batched on the device,
   autocast (float16) on CUDA only, ``torch.inference_mode``, progress and cancellation between
   batches; out-of-memory halves the batch and retries, then raises :class:`ResourceError`;
7. back to the crop grid (linear) and into full-size maps: the error probability outside the crop is 0.

Case-level Dice / NSD of several windows: mean of the window predictions weighted by the number of
foreground mask voxels in each window (windows showing more of the structure say more about its
quality); plain mean when the segmentation is empty.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Callable, Optional, Union

import numpy as np
import SimpleITK as sitk
import torch

from ..errors import CancelledError, InputError, ModelError, ResourceError
from ..geometry import Geometry
from ..memory import available_memory_bytes as host_available_memory_bytes
from ..memory import format_bytes, require_memory
from .config import ModelConfig
from .crop import CropBox, crop_box_around
from .normalization import normalize_intensity
from .qcresunet import with_test_time_augmentation
from .uncertainty import FlipProbe, FlipUncertainty, flip_uncertainty, left_right_axis, mirror

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
CancelCheck = Union[Callable[[], bool], threading.Event, None]

# Spacing within 5 % of the model's is used as is: resampling would cost time and blur for nothing.
RESAMPLE_RELATIVE_TOLERANCE = 0.05
# nnU-Net's choice: Gaussian sigma of 1/8 of the patch, so window borders weigh little.
GAUSSIAN_SIGMA_FRACTION = 1.0 / 8.0
MIN_IMPORTANCE = 1e-6
# Share of free memory the window batch may use (activations are estimated, not measured).
MEMORY_SAFETY_FRACTION = 0.5
MAX_WINDOW_BATCH_CUDA = 8
MAX_WINDOW_BATCH_CPU = 2  # larger CPU batches are not faster and multiply peak memory
# Progress fractions of the stages inside predict_case.
PROGRESS_PREPARED = 0.1
PROGRESS_WINDOWS_DONE = 0.9


@dataclass
class InferenceResult:
    error_prob: dict[int, np.ndarray]  # label -> float32 (z, y, x) on the input grid, 0 outside the crop
    dice_pred: float
    nsd_pred: Optional[float]
    device: str
    crop: CropBox
    windows: int
    window_batch: int
    resampled: bool
    timing_s: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    uncertainty: Optional[FlipUncertainty] = None  # with predict_case(..., flip_check=True)


# --- device, cancellation ---------------------------------------------------------------------
def select_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then Apple MPS, then CPU.  An explicitly requested device must exist."""
    name = (name or "auto").strip().lower()
    mps_available = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ResourceError(f"Device {name!r} requested but PyTorch {torch.__version__} sees no CUDA GPU; "
                                "use --device cpu (or auto)")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ResourceError(f"Device {name!r} requested but only {torch.cuda.device_count()} CUDA GPU(s) exist")
        return device
    if name == "mps":
        if not mps_available:
            raise ResourceError("Device 'mps' requested but Apple MPS is not available; use --device cpu (or auto)")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"Unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")


def is_cancelled(cancel: CancelCheck) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def check_cancelled(cancel: CancelCheck) -> None:
    if is_cancelled(cancel):
        raise CancelledError("QC run cancelled")


# --- preprocessing (normalize_intensity: .normalization) ---------------------------------------
def resampled_geometry(geometry: Geometry, target_spacing_zyx_mm: Optional[Sequence[float]]) -> Optional[Geometry]:
    """Grid covering ``geometry``'s extent at the target spacing, or None when no resampling is needed."""
    if target_spacing_zyx_mm is None:
        return None
    current = np.asarray(geometry.spacing_zyx_mm)
    target = np.asarray(target_spacing_zyx_mm, dtype=float)
    if np.all(np.abs(current - target) <= RESAMPLE_RELATIVE_TOLERANCE * target):
        return None
    shape = np.maximum(1, np.round(np.asarray(geometry.shape_zyx) * current / target)).astype(int)
    spacing_xyz = tuple(float(v) for v in target[::-1])
    # Keep the physical centre of the first voxel's corner: origin shifts by half the spacing change.
    shift_zyx = (target - current) / 2.0 / current
    origin = geometry.index_zyx_to_lps(shift_zyx)
    return Geometry(tuple(int(s) for s in shape), spacing_xyz, tuple(float(v) for v in origin), geometry.direction)


def resample_array(array: np.ndarray, source: Geometry, target: Geometry, linear: bool) -> np.ndarray:
    """Resample a (z, y, x) array from one grid onto another (linear or nearest neighbour, 0 outside)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    source.apply_to(image)
    reference = sitk.Image(int(target.shape_zyx[2]), int(target.shape_zyx[1]), int(target.shape_zyx[0]),
                           image.GetPixelID())
    target.apply_to(reference)
    interpolator = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    resampled = sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0, image.GetPixelID())
    return sitk.GetArrayFromImage(resampled)


def pad_to_shape(tensor: torch.Tensor, min_shape_zyx: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad the last three axes symmetrically to at least ``min_shape_zyx``; return the unpad slices."""
    spatial = tensor.shape[-3:]
    before = [max(0, m - s) // 2 for s, m in zip(spatial, min_shape_zyx)]
    after = [max(0, m - s) - b for s, m, b in zip(spatial, min_shape_zyx, before)]
    if any(before) or any(after):
        pad = []
        for b, a in zip(reversed(before), reversed(after)):  # F.pad wants the last axis first
            pad += [b, a]
        tensor = torch.nn.functional.pad(tensor, pad)
    keep = tuple(slice(b, b + s) for b, s in zip(before, spatial))
    return tensor, keep


def mask_channels(seg: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
    """One bool channel per label of ``labels`` for a (Z, Y, X) integer label tensor: (len(labels), Z, Y, X)."""
    return torch.stack([seg == int(label) for label in labels])


# --- sliding window ---------------------------------------------------------------------------
def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Evenly spaced window starts covering ``size`` with windows of ``patch`` overlapping by >= ``overlap``."""
    if size < patch:
        raise ValueError(f"Axis of {size} voxels is smaller than the patch ({patch}); pad first")
    if size == patch:
        return [0]
    step = max(1, int(patch * (1.0 - overlap)))
    count = int(math.ceil((size - patch) / step)) + 1
    return [int(round(v)) for v in np.linspace(0, size - patch, count)]


def gaussian_importance(patch_zyx: Sequence[int]) -> torch.Tensor:
    """Separable Gaussian weight map of the patch, max 1, floored at MIN_IMPORTANCE."""
    weights = torch.ones(1)
    for size in patch_zyx:
        centre = (size - 1) / 2.0
        sigma = size * GAUSSIAN_SIGMA_FRACTION
        axis = torch.exp(-0.5 * ((torch.arange(size, dtype=torch.float64) - centre) / sigma) ** 2)
        weights = weights.unsqueeze(-1) * axis
    weights = weights.reshape(*patch_zyx)
    return (weights / weights.max()).clamp_min(MIN_IMPORTANCE).float()


def estimate_window_bytes(model: torch.nn.Module, config: ModelConfig, patch_zyx: Sequence[int],
                          bytes_per_value: int = 4) -> int:
    """Rough peak activation memory of one window: stage outputs kept for the skips + a few live layers.

    Measured once per model and patch on a small probe input with forward hooks, scaled to the patch volume.
    """
    cache: dict = model.__dict__.setdefault("_segqc_window_bytes", {})
    key = (tuple(patch_zyx), bytes_per_value)
    if key not in cache:
        cache[key] = _measure_window_bytes(model, config, patch_zyx, bytes_per_value)
    return cache[key]


def _measure_window_bytes(model: torch.nn.Module, config: ModelConfig, patch_zyx: Sequence[int],
                          bytes_per_value: int) -> int:
    probe = [2 * t for t in config.total_stride_zyx]
    kept, largest = 0, 0

    def hook(module: torch.nn.Module, _inputs: object, output: object) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel())

    def stage_hook(_module: torch.nn.Module, _inputs: object, output: object) -> None:
        nonlocal kept
        if isinstance(output, torch.Tensor):
            kept += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    handles += [m.register_forward_hook(stage_hook) for m in getattr(model, "stages", [])]
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            model(torch.zeros(1, len(config.modalities), *probe, device=device),
                  torch.zeros(1, len(config.mask_labels), *probe, device=device))
    finally:
        for handle in handles:
            handle.remove()
    scale = math.prod(patch_zyx) / math.prod(probe)
    return int((kept + 4 * largest) * scale * bytes_per_value)


def available_memory_bytes(device: torch.device) -> Optional[int]:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    # MemAvailable (reclaimable page cache included), the cgroup limit and ulimit -v, whichever is least.
    return host_available_memory_bytes()


def choose_window_batch(device: torch.device, window_bytes: int) -> int:
    """Windows per forward pass that fit in a safe share of the free memory of ``device``."""
    limit = MAX_WINDOW_BATCH_CUDA if device.type == "cuda" else MAX_WINDOW_BATCH_CPU
    free = available_memory_bytes(device)
    if free is None:
        return 1
    if window_bytes > free:
        raise ResourceError(f"One window of the QC network needs about {format_bytes(window_bytes)} on {device}, but "
                            f"only {format_bytes(free)} is free: the model's patch_size_zyx or widths are too large "
                            "for this machine; close other programs or use a machine with more memory")
    fitting = int(free * MEMORY_SAFETY_FRACTION // max(window_bytes, 1))
    if fitting < 1:
        logger.warning("One window needs about %.0f MiB, more than the safe share of %.0f MiB free on %s",
                       window_bytes / 2**20, free / 2**20, device)
    return max(1, min(limit, fitting))


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message
                                              or "failed to allocate" in message)


@dataclass
class WindowPrediction:
    prob: torch.Tensor  # (C, Z, Y, X) float32 on CPU
    dice: float
    nsd: Optional[float]
    windows: int
    batch: int
    flip_probe: Optional[FlipProbe] = None


def sliding_window_predict(
    model: Callable[[torch.Tensor, torch.Tensor], object],
    image: torch.Tensor,
    mask: torch.Tensor,
    patch_zyx: Sequence[int],
    overlap: float,
    device: torch.device,
    batch: int = 1,
    foreground_channels: Optional[Sequence[int]] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: CancelCheck = None,
    flip_axis: Optional[int] = None,
) -> WindowPrediction:
    """Blend window predictions of ``model`` over ``image`` (m, Z, Y, X) and one-hot ``mask`` (Cm, Z, Y, X).

    Every axis must be at least the patch size.  ``model(image_batch, mask_batch)`` returns a
    :class:`~SegQCLib.network.qcresunet.QCOutput`.  ``foreground_channels`` are the mask channels counted as
    foreground for weighting the case-level predictions (default: all).  With ``flip_axis`` (0, 1 or 2 of z, y, x)
    the window holding the most foreground is also predicted mirrored along that axis, in the same batch (one
    extra window), for :mod:`.uncertainty`.
    """
    spatial = tuple(image.shape[1:])
    starts = list(product(*(window_starts(s, p, overlap) for s, p in zip(spatial, patch_zyx))))
    importance = gaussian_importance(patch_zyx)
    channels = list(range(mask.shape[0])) if foreground_channels is None else list(foreground_channels)
    slabs = [tuple(slice(s, s + p) for s, p in zip(start, patch_zyx)) for start in starts]
    contents = [float(mask[(channels,) + w].sum()) if channels else 0.0 for w in slabs]
    probe = int(np.argmax(contents)) if flip_axis is not None else None
    flip_probe: Optional[FlipProbe] = None
    accumulated: Optional[torch.Tensor] = None
    weight_sum = torch.zeros(spatial, dtype=torch.float32)
    case_values: list[tuple[float, float, Optional[float]]] = []
    use_amp = device.type == "cuda"
    done = 0
    with torch.inference_mode():
        while done < len(starts):
            check_cancelled(cancel)
            windows = slabs[done:done + batch]
            mirrored = probe is not None and done <= probe < done + len(windows)
            try:
                extra = [slabs[probe]] if mirrored else []
                image_batch = torch.stack([image[(slice(None),) + w] for w in windows]
                                          + [mirror(image[(slice(None),) + w], flip_axis) for w in extra]).to(device)
                mask_batch = torch.stack([mask[(slice(None),) + w] for w in windows]
                                         + [mirror(mask[(slice(None),) + w], flip_axis) for w in extra]).to(device)
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                    output = model(image_batch, mask_batch)
                probs = torch.sigmoid(output.error_logits.float()).cpu()
                dice = output.dice.float().cpu()
                nsd = output.nsd.float().cpu() if output.nsd is not None else None
            except Exception as exc:
                if not _is_out_of_memory(exc):
                    raise
                del exc
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if batch > 1:
                    batch = max(1, batch // 2)
                    logger.warning("Out of memory on %s: retrying with %d window(s) per batch", device, batch)
                    continue
                raise ResourceError(
                    f"Not enough memory on {device} for one {tuple(patch_zyx)} window of the QC network. Close other "
                    "programs" + (" or use --device cpu" if device.type != "cpu" else "") + " and try again."
                ) from None
            if accumulated is None:
                accumulated = torch.zeros((probs.shape[1],) + spatial, dtype=torch.float32)
            if mirrored:
                index = probe - done
                flip_probe = FlipProbe(probs[index], mirror(probs[-1], flip_axis), float(dice[index]), float(dice[-1]),
                                       contents[probe], flip_axis)
            for index, window in enumerate(windows):
                accumulated[(slice(None),) + window] += probs[index] * importance
                weight_sum[window] += importance
                case_values.append((contents[done + index], float(dice[index]),
                                    float(nsd[index]) if nsd is not None else None))
            done += len(windows)
            if progress is not None:
                progress(done / len(starts), f"QC network: window {done}/{len(starts)}")
    assert accumulated is not None
    prob = accumulated / weight_sum
    weights = np.array([c[0] for c in case_values])
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    dice_value = float(np.average([c[1] for c in case_values], weights=weights))
    nsd_value = None
    if case_values[0][2] is not None:
        nsd_value = float(np.average([c[2] for c in case_values], weights=weights))
    return WindowPrediction(prob, dice_value, nsd_value, len(starts), batch, flip_probe)


# --- whole case -------------------------------------------------------------------------------
def check_input_matches_model(config: ModelConfig, modality_count: int, seg: np.ndarray) -> None:
    if modality_count != len(config.modalities):
        raise ModelError(
            f"Model {config.name} expects {len(config.modalities)} image modalities ({', '.join(config.modalities)}), "
            f"got {modality_count} image(s); pass one --image per modality in that order"
        )
    present = {int(v) for v in np.unique(seg)} - {0}
    unknown = sorted(present - set(config.labels))
    if unknown:
        raise ModelError(
            f"Segmentation has labels {unknown} that model {config.name} does not know (its classes: "
            + ", ".join(f"{k}={v}" for k, v in sorted(config.classes.items()))
            + f"; {len(present)} foreground label(s) in the segmentation vs {len(config.labels)} in the model). "
            "Use a model trained for these classes or relabel the segmentation."
        )


def _require_working_memory(config: ModelConfig, shape_zyx: Sequence[int], patch_zyx: Sequence[int],
                            modalities: int) -> None:
    """ResourceError before allocating when the network's input and outputs at ``shape_zyx`` (padded to the patch)
    cannot fit: images, one-hot masks, labels, blended probabilities and their weights, as float32 (labels int64)."""
    voxels = math.prod(max(int(s), int(p)) for s, p in zip(shape_zyx, patch_zyx))
    per_voxel = 4 * (modalities + len(config.mask_labels) + 2 * len(config.labels) + 1) + 8
    require_memory(voxels * per_voxel, f"QC of a {'×'.join(str(int(v)) for v in shape_zyx)} voxel grid (the model "
                   f"{config.name} at spacing {config.target_spacing_zyx_mm} mm)")


def _stage_progress(progress: Optional[ProgressCallback], start: float, end: float) -> Optional[ProgressCallback]:
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (end - start) * fraction, message)


def predict_case(
    model: torch.nn.Module,
    config: ModelConfig,
    images: Sequence[np.ndarray],
    seg: np.ndarray,
    geometry: Geometry,
    device: torch.device,
    overlap: Optional[float] = None,
    window_batch: Optional[int] = None,
    crop_margin_mm: Optional[float] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: CancelCheck = None,
    flip_check: bool = False,
    runner: Optional[Callable[[torch.Tensor, torch.Tensor], object]] = None,
) -> InferenceResult:
    """Run the QC network over one case; see the module docstring for the steps.

    ``flip_check``: also predict the most segmented window mirrored left-right (one extra window) and return
    how much the prediction changed (:mod:`.uncertainty`).  ``runner`` runs the windows instead of ``model``
    (:mod:`SegQCLib.network.runtime`: OpenVINO); ``model`` still sizes the window batch."""
    try:
        return _predict_case(model, config, images, seg, geometry, device, overlap, window_batch, crop_margin_mm,
                             progress, cancel, flip_check, runner)
    except MemoryError:
        raise ResourceError(f"Not enough memory to run QC on a {tuple(seg.shape)} volume; close other programs "
                            "or run on a machine with more memory") from None


def _predict_case(model, config, images, seg, geometry, device, overlap, window_batch, crop_margin_mm, progress,
                  cancel, flip_check=False, runner=None) -> InferenceResult:
    timing: dict[str, float] = {}
    notices: list[str] = []
    started = time.perf_counter()
    report = progress or (lambda _f, _m: None)
    check_input_matches_model(config, len(images), seg)
    for index, image in enumerate(images):
        if tuple(image.shape) != tuple(seg.shape):
            raise InputError(f"Image {index + 1} has shape {tuple(image.shape)}, segmentation {tuple(seg.shape)}")
    check_cancelled(cancel)
    report(0.0, "Preparing input")
    margin_mm = config.crop_margin_mm if crop_margin_mm is None else crop_margin_mm
    crop = crop_box_around(seg, geometry, margin_mm)
    if crop is None:
        crop = CropBox((0, 0, 0), tuple(int(s) for s in seg.shape))  # type: ignore[arg-type]
        notices.append("The segmentation is empty: the whole image was checked for missed structures")
    normalized = [normalize_intensity(image, config.normalization, config.clip_percentiles)[crop.slices]
                  for image in images]
    seg_crop = seg[crop.slices]
    crop_geometry = geometry.with_shape(crop.shape, crop.start_zyx)
    target = resampled_geometry(crop_geometry, config.target_spacing_zyx_mm)
    if target is not None:
        _require_working_memory(config, target.shape_zyx, config.patch_size_zyx, len(images))
        notices.append(f"Resampled from spacing (z,y,x) {tuple(round(v, 3) for v in geometry.spacing_zyx_mm)} mm to "
                       f"the model's {tuple(config.target_spacing_zyx_mm)} mm and back")
        normalized = [resample_array(a, crop_geometry, target, linear=True) for a in normalized]
        seg_crop = resample_array(seg_crop, crop_geometry, target, linear=False)
    patch = list(config.patch_size_zyx)
    _require_working_memory(config, target.shape_zyx if target is not None else crop.shape, patch, len(images))
    image_tensor = torch.from_numpy(np.stack(normalized).astype(np.float32, copy=False))
    image_tensor, keep = pad_to_shape(image_tensor, patch)
    # Pad the labels, not the one-hot: padding is background (matters with a background channel).
    # The one-hot mask is kept as bool (1 byte per voxel and channel, not float32's 4; the network casts each
    # window), and built from the labels in their own small integer type, not int64: on a large volume these
    # were the biggest arrays after the image.
    label_dtype = np.int16 if seg_crop.size == 0 or int(seg_crop.max()) <= np.iinfo(np.int16).max else np.int32
    seg_tensor, _ = pad_to_shape(torch.from_numpy(seg_crop.astype(label_dtype, copy=False))[None], patch)
    mask_tensor = mask_channels(seg_tensor[0], config.mask_labels)
    del seg_tensor
    timing["preprocess"] = time.perf_counter() - started
    check_cancelled(cancel)
    report(PROGRESS_PREPARED, "Input prepared")

    started = time.perf_counter()
    if window_batch is None:
        window_batch = choose_window_batch(device, estimate_window_bytes(model, config, patch))
    foreground = [i for i, label in enumerate(config.mask_labels) if label != 0]
    prediction = sliding_window_predict(
        # Test-time flips wrap the PyTorch model; an OpenVINO runner runs the plain network (no flips).
        with_test_time_augmentation(model) if runner is None or runner is model else runner,
        image_tensor, mask_tensor, patch, config.window_overlap if overlap is None else overlap, device,
        window_batch, foreground, _stage_progress(progress, PROGRESS_PREPARED, PROGRESS_WINDOWS_DONE), cancel,
        left_right_axis(geometry) if flip_check else None)
    timing["network"] = time.perf_counter() - started

    started = time.perf_counter()
    report(PROGRESS_WINDOWS_DONE, "Mapping error probabilities to the image grid")
    prob = prediction.prob[(slice(None),) + keep].numpy()
    error_prob: dict[int, np.ndarray] = {}
    for channel, label in enumerate(config.labels):
        class_prob = prob[channel]
        if target is not None:
            class_prob = np.clip(resample_array(class_prob, target, crop_geometry, linear=True), 0.0, 1.0)
        full = np.zeros(seg.shape, dtype=np.float32)
        full[crop.slices] = class_prob
        error_prob[label] = full
    timing["postprocess_maps"] = time.perf_counter() - started
    return InferenceResult(error_prob, prediction.dice, prediction.nsd, str(device), crop, prediction.windows,
                           prediction.batch, target is not None, {k: round(v, 4) for k, v in timing.items()}, notices,
                           flip_uncertainty(prediction.flip_probe))
