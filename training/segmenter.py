"""A small 3D U-Net segmenter: the source of real model errors, the TTA baseline and the sample case.

QCResUNet (§2.2) and SegQC (§4.1) make realistic bad segmentations by sampling segmentation networks
along their training: early weights give poor masks, late weights good ones.  Here a small U-Net is
trained on part of the training split and snapshots are kept at chosen iterations; their predictions
(plain and test-time augmented) on cases the segmenter never saw become QC queries.  The same network
with flip TTA gives SegQC's TTA-agreement baseline, and a bundled copy segments the README's sample case.

Two architectures: the 3D U-Net (``unet3d``) makes the training queries; a *slice-wise 2D* U-Net
(``unet2d``, every axial slice segmented on its own) makes a second kind of model error, never seen in
training (slice-to-slice inconsistency), for the evaluation on a second segmenter architecture.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .volumes import DEFAULT_CROP_ZYX, crop_offsets, crop_or_pad, normalize_intensity, uncrop

logger = logging.getLogger(__name__)

SEGMENTER_WEIGHTS_FILE = "segmenter.pt"
SEGMENTER_CONFIG_FILE = "segmenter.json"
# The flip axes of test-time augmentation: identity and the three single-axis flips of (z, y, x).
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (0,), (1,), (2,))
SOFT_DICE_SMOOTH = 1.0
ARCHITECTURES = ("unet3d", "unet2d")


@dataclass(frozen=True)
class SegmenterConfig:
    in_channels: int = 1
    num_classes: int = 3  # background + foreground labels
    base_channels: int = 8
    levels: int = 3
    crop_zyx: tuple[int, int, int] = DEFAULT_CROP_ZYX
    architecture: str = "unet3d"

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"Unknown segmenter architecture {self.architecture!r}; use one of {ARCHITECTURES}")

    @classmethod
    def from_dict(cls, data: dict) -> SegmenterConfig:
        data = dict(data)
        data["crop_zyx"] = tuple(data.get("crop_zyx", DEFAULT_CROP_ZYX))
        return cls(**data)


def _block(in_ch: int, out_ch: int, dims: int = 3) -> nn.Sequential:
    conv, norm = (nn.Conv3d, nn.InstanceNorm3d) if dims == 3 else (nn.Conv2d, nn.InstanceNorm2d)
    return nn.Sequential(
        conv(in_ch, out_ch, 3, padding=1, bias=False), norm(out_ch, affine=True), nn.LeakyReLU(0.01),
        conv(out_ch, out_ch, 3, padding=1, bias=False), norm(out_ch, affine=True), nn.LeakyReLU(0.01),
    )


class UNet3D(nn.Module):
    """Plain U-Net: ``levels`` resolutions, channels doubling, transposed-convolution upsampling.

    Takes and returns (B, channels, Z, Y, X).  With ``architecture == "unet2d"`` the same layout is built
    from 2D layers and applied to every z slice independently (slices folded into the batch).
    """

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        self.config = config
        self.dims = 2 if config.architecture == "unet2d" else 3
        up_conv = nn.ConvTranspose3d if self.dims == 3 else nn.ConvTranspose2d
        channels = [config.base_channels * 2**i for i in range(config.levels)]
        self.down = nn.ModuleList()
        previous = config.in_channels
        for ch in channels:
            self.down.append(_block(previous, ch, self.dims))
            previous = ch
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        for ch in reversed(channels[:-1]):
            self.up.append(up_conv(previous, ch, 2, stride=2))
            self.decode.append(_block(2 * ch, ch, self.dims))
            previous = ch
        self.head = (nn.Conv3d if self.dims == 3 else nn.Conv2d)(previous, config.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 2:
            batch, channels, depth = x.shape[:3]
            slices = x.permute(0, 2, 1, 3, 4).reshape(batch * depth, channels, *x.shape[3:])
            out = self._unet(slices)
            return out.reshape(batch, depth, out.shape[1], *out.shape[2:]).permute(0, 2, 1, 3, 4)
        return self._unet(x)

    def _unet(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.max_pool3d if self.dims == 3 else F.max_pool2d
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = pool(x, 2)
        for up, decode in zip(self.up, self.decode):
            x = decode(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


@dataclass
class SegmenterTraining:
    iterations: int = 600
    batch_size: int = 4
    learning_rate: float = 2e-3
    seed: int = 0
    snapshot_iterations: tuple[int, ...] = (25, 60, 120, 250, 600)
    # Training crops are smaller than the inference window (a third of the voxels, three times faster on
    # CPU) yet still hold most of a hippocampus; the network is fully convolutional.
    train_crop_zyx: tuple[int, int, int] = (32, 48, 32)


@dataclass
class TrainedSegmenter:
    """Snapshots (iteration -> state dict) of one training run, the config and the time it took."""

    config: SegmenterConfig
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    seconds: float = 0.0

    def model(self, iteration: int | None = None) -> UNet3D:
        key = max(self.snapshots) if iteration is None else iteration
        net = UNet3D(self.config)
        net.load_state_dict(self.snapshots[key])
        net.eval()
        return net


def _soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probs = torch.softmax(logits, dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].float()
    dims = (0, 2, 3, 4)
    intersection = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * intersection + SOFT_DICE_SMOOTH) / (total + SOFT_DICE_SMOOTH)).mean()


def _training_batch(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], crop: Sequence[int],
                    batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for index in rng.integers(0, len(images), size=batch_size):
        offsets = crop_offsets(images[index].shape, crop, rng)
        image = crop_or_pad(images[index], crop, offsets)
        label = crop_or_pad(labels[index], crop, offsets)
        flips = tuple(a for a in range(3) if rng.random() < 0.5)
        if flips:
            image, label = np.flip(image, flips), np.flip(label, flips)
        image = image * rng.uniform(0.9, 1.1) + rng.normal(0, 0.1)
        xs.append(np.ascontiguousarray(image))
        ys.append(np.ascontiguousarray(label))
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys).astype(np.int64))


def train_segmenter(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    settings: SegmenterTraining,
    config: SegmenterConfig | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> TrainedSegmenter:
    """Train on (raw image, label map) pairs; keep a snapshot at each of ``settings.snapshot_iterations``.

    Images are normalised here; labels must use 0..num_classes-1.
    """
    config = config or SegmenterConfig()
    if not images or len(images) != len(labels):
        raise ValueError("train_segmenter needs the same non-zero number of images and label maps")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    normalised = [normalize_intensity(im) for im in images]
    net = UNet3D(config)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, settings.iterations))
    wanted = {int(i) for i in settings.snapshot_iterations if 0 < i <= settings.iterations} | {settings.iterations}
    result = TrainedSegmenter(config)
    start = time.perf_counter()
    net.train()
    for iteration in range(1, settings.iterations + 1):
        x, y = _training_batch(normalised, labels, settings.train_crop_zyx, settings.batch_size, rng)
        logits = net(x)
        loss = F.cross_entropy(logits, y) + _soft_dice_loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if iteration in wanted:
            result.snapshots[iteration] = copy.deepcopy(net.state_dict())
        if progress is not None:
            progress(iteration, float(loss.detach()))
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def predict_probabilities(net: UNet3D, image: np.ndarray, flips: Sequence[tuple[int, ...]] = ((),)) -> np.ndarray:
    """Class probabilities (K, Z, Y, X) of a raw image, averaged over the given flip augmentations.

    The image is normalised; where it is larger than the network's crop it is cropped at the centre, and
    the window is padded by reflection only to the next size the U-Net's pooling divides.  Zero padding to
    a fixed large window would change the instance-norm statistics the network was trained with (it
    trains on crops inside images) and cost it about 0.2 Dice.  Voxels outside the crop get background
    probability 1.
    """
    net.eval()
    multiple = 2 ** (net.config.levels - 1)
    window = [min(size, crop) for size, crop in zip(image.shape, net.config.crop_zyx)]
    offsets = crop_offsets(image.shape, window)
    cropped = crop_or_pad(normalize_intensity(image), window, offsets)
    pad = [(0, (-size) % multiple) for size in window]
    padded = np.pad(cropped, pad, mode="reflect" if all(s > 1 for s in window) else "edge")
    x = torch.from_numpy(np.ascontiguousarray(padded)[None, None])
    batch = torch.cat([torch.flip(x, [a + 2 for a in f]) if f else x for f in flips])
    probs = torch.softmax(net(batch), dim=1)
    probs = torch.stack([torch.flip(p, [a + 1 for a in f]) if f else p for p, f in zip(probs, flips)]).mean(0)
    probs = probs.numpy()[:, : window[0], : window[1], : window[2]]
    background = np.zeros((probs.shape[0], 1, 1, 1), dtype=np.float32)
    background[0] = 1.0
    out = np.broadcast_to(background, (probs.shape[0], *image.shape)).copy()
    for k in range(probs.shape[0]):  # K classes (3), not voxels
        out[k] = uncrop(probs[k], image.shape, offsets, fill=float(background[k, 0, 0, 0]))
    return out


def predict_labels(net: UNet3D, image: np.ndarray, flips: Sequence[tuple[int, ...]] = ((),)) -> np.ndarray:
    return np.argmax(predict_probabilities(net, image, flips), axis=0).astype(np.uint8)


def save_segmenter(net: UNet3D, folder: str | os.PathLike) -> Path:
    """Write ``segmenter.json`` + ``segmenter.pt`` (a plain state dict, loadable with weights_only=True)."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = asdict(net.config)
    config["crop_zyx"] = list(net.config.crop_zyx)
    (folder / SEGMENTER_CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
    state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype) for k, v in net.state_dict().items()}
    tmp = folder / (SEGMENTER_WEIGHTS_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, folder / SEGMENTER_WEIGHTS_FILE)
    return folder


def load_segmenter(folder: str | os.PathLike) -> UNet3D:
    import json

    from SegQCLib.errors import ModelError

    folder = Path(folder)
    try:
        config = SegmenterConfig.from_dict(json.loads((folder / SEGMENTER_CONFIG_FILE).read_text()))
        state = torch.load(folder / SEGMENTER_WEIGHTS_FILE, map_location="cpu", weights_only=True)
        net = UNet3D(config)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except FileNotFoundError as exc:
        raise ModelError(f"Segmenter files missing in {folder}: {exc.filename}") from exc
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise ModelError(f"Cannot load the segmenter in {folder}: {exc}") from exc
    net.eval()
    return net
