"""QCResUNet-style multi-task QC network (QCResUNet paper §2.3), built from a :class:`ModelConfig`.

Inputs: ``m`` image modalities and the query segmentation given one-hot, one channel per foreground
class (plus a background channel first when ``include_background_channel`` is set).  Outputs: one
error logit map per foreground class (sigmoid -> probability that the query mask is wrong there) and
case-level Dice (and NSD) regressed from the encoder bottleneck (already through a sigmoid).

Layout (all sizes from the config):

* encoder: a strided 3x3x3 stem (stride ``strides[0]``) and one stage of residual blocks per width;
  stage ``i > 0`` downsamples by ``strides[i]`` in its first block.  Instance norm, LeakyReLU and
  spatial dropout in every residual block, as in the paper.
* decoder: starts from stage ``decoder_from_stage`` (the paper uses the third of four stages, whose
  features are less specific to the Dice task than the bottleneck's).  Each step upsamples
  (nearest), applies a 1x1x1 conv, concatenates the encoder skip and the one-hot mask pooled to that
  scale, weighs the channels with ECA attention (mask re-injection) and runs ``decoder_convs`` conv
  blocks.  A last step at full resolution concatenates the image and the full-resolution mask.
* heads: ECA over [decoder features, one-hot mask] then a 1x1x1 conv to one logit per class (the
  paper's attention-based SEM aggregation); global average pooling of the bottleneck then two fully
  connected layers and a sigmoid for Dice / NSD.

The default configuration (widths 16/32/64/128, one residual block per stage, stride 2 from the stem,
decoder from stage 3 with one conv block per scale, 4 channels at full resolution) has 0.98 M
parameters and 64 GFLOPs (2 x conv MACs) at 160x192x160, against 16.35 M and 762 GFLOPs for
:func:`~SegQCLib.network.config.reference_qcresunet_config`, the published size (paper: 16.6 M).
``benchmarks/bench_inference.py`` measures both.  The patch 48x64x48 fits the hippocampus crops (about
40x56x40 at 1 mm); bigger volumes go through the sliding window of :mod:`SegQCLib.network.inference`.

Two output parameterisations (``ModelConfig.output``):

* ``error`` (QCResUNet): one sigmoid error logit per class, learnt directly;
* ``truth``: the head predicts the *estimated truth* as a softmax over background + classes, P, and the
  error probability of class c follows from it and the query mask M (SegQC eq. 4 read backwards):
  Ê_c = M_c (1 − P_c) + (1 − M_c) P_c.  Classes stay mutually consistent (a voxel cannot be "missing"
  from two classes at once), a network that knows the anatomy (trained as a segmenter first) only has
  to learn when to trust the query, and flagging the whole mask is no longer a cheap answer.  The error
  logits are still returned (logit Ê_c), so inference and everything after it are unchanged;
  ``truth_temperature`` (calibrated on tuning cases) divides the truth logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .config import ModelConfig, OutputKind

LEAKY_SLOPE = 0.01


# Ê is clamped away from 0 and 1 before its logit is taken, so the logit stays finite in float32.
ERROR_PROB_EPSILON = 1e-6


class QCOutput(NamedTuple):
    error_logits: torch.Tensor  # (B, C, Z, Y, X)
    dice: torch.Tensor  # (B,) in [0, 1]
    nsd: Optional[torch.Tensor]  # (B,) in [0, 1], None when the config does not predict NSD
    truth_logits: Optional[torch.Tensor] = None  # (B, 1 + C, Z, Y, X) with output "truth", else None


def error_logits_from_truth(truth_logits: torch.Tensor, mask_onehot: torch.Tensor) -> torch.Tensor:
    """logit Ê_c with Ê_c = M_c (1 − P_c) + (1 − M_c) P_c, P = softmax(truth logits) (channel 0 background).

    ``mask_onehot`` holds one channel per foreground class (a background channel, if any, stripped).
    """
    prob = torch.softmax(truth_logits.float(), dim=1)[:, 1:]
    mask = mask_onehot.float()
    error = mask * (1 - prob) + (1 - mask) * prob
    error = error.clamp(ERROR_PROB_EPSILON, 1 - ERROR_PROB_EPSILON)
    return torch.log(error) - torch.log1p(-error)


def one_hot(seg: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
    """One float channel per label: (B, Z, Y, X) or (Z, Y, X) integer -> (B, len(labels), Z, Y, X).

    Labels not listed get no channel (all zeros there); use the model config's ``mask_labels``.
    """
    if seg.is_floating_point():
        raise ValueError("one_hot expects an integer label tensor")
    if seg.dim() == 3:
        seg = seg.unsqueeze(0)
    if seg.dim() != 4:
        raise ValueError(f"one_hot expects (B, Z, Y, X) labels, got shape {tuple(seg.shape)}")
    label_tensor = torch.as_tensor(list(labels), dtype=seg.dtype, device=seg.device).view(1, -1, 1, 1, 1)
    return (seg.unsqueeze(1) == label_tensor).float()


# --- building blocks --------------------------------------------------------------------------
class InstanceNorm(nn.GroupNorm):
    """Instance normalisation with a per-channel affine transform (the paper's choice, for small batches).

    Implemented as GroupNorm with one group per channel: the same function and parameter names as
    ``nn.InstanceNorm3d(affine=True)``, but about three times faster on CPU.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, eps=1e-5, affine=True)


def _conv_norm_act(in_ch: int, out_ch: int, stride: Sequence[int] = (1, 1, 1), kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, kernel, stride=tuple(stride), padding=kernel // 2, bias=False),
        InstanceNorm(out_ch),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


class ResidualBlock(nn.Module):
    """Basic ResNet block (paper Fig. 2b): two 3x3x3 convs with instance norm, spatial dropout, skip."""

    def __init__(self, in_ch: int, out_ch: int, stride: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_ch, out_ch, 3, stride=tuple(stride), padding=1, bias=False)
        self.norm1 = InstanceNorm(out_ch)
        self.conv2 = nn.Conv3d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = InstanceNorm(out_ch)
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if in_ch != out_ch or any(s != 1 for s in stride):
            self.shortcut = nn.Sequential(nn.Conv3d(in_ch, out_ch, 1, stride=tuple(stride), bias=False),
                                          InstanceNorm(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.dropout(self.norm2(self.conv2(out)))
        return self.act(out + self.shortcut(x))


class ECA(nn.Module):
    """Efficient channel attention (paper Fig. 2d): global average pool, 1D conv over channels, sigmoid."""

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = x.mean(dim=(2, 3, 4)).unsqueeze(1)  # (B, 1, channels)
        weights = torch.sigmoid(self.conv(weights)).transpose(1, 2)  # (B, channels, 1)
        return x * weights.unsqueeze(-1).unsqueeze(-1)


class DecoderStep(nn.Module):
    """Upsample + 1x1x1 conv, concatenate skip + mask at this scale, ECA, conv blocks (paper Fig. 2c).

    The 1x1x1 conv runs before the nearest-neighbour upsampling: the two commute (a pointwise map of
    replicated voxels is the replicated pointwise map), and reducing channels first costs a fraction.
    """

    def __init__(self, in_ch: int, skip_ch: int, mask_ch: int, out_ch: int, scale: Sequence[int],
                 convs: int, eca_kernel: int, kernel: int = 3) -> None:
        super().__init__()
        self.scale = tuple(int(s) for s in scale)
        self.reduce = nn.Conv3d(in_ch, out_ch, 1, bias=False)
        self.eca = ECA(eca_kernel)
        concat = out_ch + skip_ch + mask_ch
        self.blocks = nn.Sequential(*[_conv_norm_act(concat if i == 0 else out_ch, out_ch, kernel=kernel)
                                      for i in range(convs)])

    def forward(self, x: torch.Tensor, skip: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        if any(s != 1 for s in self.scale):
            x = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        x = torch.cat([x, skip, mask], dim=1)
        return self.blocks(self.eca(x))


class QCResUNet(nn.Module):
    """Multi-task QC network; see the module docstring for the layout."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        widths, strides = config.widths, config.strides
        modalities, mask_ch, classes = len(config.modalities), len(config.mask_labels), len(config.labels)
        self.stem = _conv_norm_act(config.in_channels, widths[0], strides[0])
        stages = []
        for index, (width, blocks) in enumerate(zip(widths, config.blocks_per_stage)):
            in_ch = widths[max(index - 1, 0)]
            stride = strides[index] if index > 0 else (1, 1, 1)  # stage 0's stride is the stem's
            stage = [ResidualBlock(in_ch, width, stride, config.dropout)]
            stage += [ResidualBlock(width, width, (1, 1, 1), config.dropout) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
        self.stages = nn.ModuleList(stages)
        # Cumulative downsampling of each stage's output relative to the input, per axis.
        self._level_strides = []
        cumulative = [1, 1, 1]
        for stride in strides:
            cumulative = [c * s for c, s in zip(cumulative, stride)]
            self._level_strides.append(tuple(cumulative))
        start = config.decoder_from_stage
        self.decoder = nn.ModuleList(
            DecoderStep(widths[level + 1], widths[level], mask_ch, widths[level], strides[level + 1],
                        config.decoder_convs, config.eca_kernel_size)
            for level in range(start - 1, -1, -1)
        )
        self.full_res = DecoderStep(widths[0], modalities, mask_ch, config.full_res_width, strides[0],
                                    config.decoder_convs, config.eca_kernel_size, config.full_res_kernel)
        self.head_eca = ECA(config.eca_kernel_size)
        head_channels = classes + 1 if config.output == OutputKind.TRUTH.value else classes
        self.error_head = nn.Conv3d(config.full_res_width + mask_ch, head_channels, 1)
        outputs = 2 if config.predict_nsd else 1
        self.case_head = nn.Sequential(nn.Linear(widths[-1], config.case_head_hidden),
                                       nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
                                       nn.Linear(config.case_head_hidden, outputs))

    def forward(self, image: torch.Tensor, mask_onehot: torch.Tensor) -> QCOutput:
        config = self.config
        if image.dim() != 5 or mask_onehot.dim() != 5:
            raise ValueError(f"Expected (B, channels, Z, Y, X) inputs, got {tuple(image.shape)} and "
                             f"{tuple(mask_onehot.shape)}")
        if image.shape[1] != len(config.modalities) or mask_onehot.shape[1] != len(config.mask_labels):
            raise ValueError(f"Model expects {len(config.modalities)} image and {len(config.mask_labels)} mask "
                             f"channels, got {image.shape[1]} and {mask_onehot.shape[1]}")
        total = self._level_strides[-1]
        if any(size % t for size, t in zip(image.shape[2:], total)):
            raise ValueError(f"Spatial size {tuple(image.shape[2:])} is not divisible by the total stride {total}")
        mask_onehot = mask_onehot.to(image.dtype)
        x = self.stem(torch.cat([image, mask_onehot], dim=1))
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        bottleneck = features[-1]
        x = features[config.decoder_from_stage]
        for step, level in zip(self.decoder, range(config.decoder_from_stage - 1, -1, -1)):
            scale = self._level_strides[level]
            x = step(x, features[level], F.avg_pool3d(mask_onehot, scale, scale) if max(scale) > 1 else mask_onehot)
        x = self.full_res(x, image, mask_onehot)
        logits = self.error_head(self.head_eca(torch.cat([x, mask_onehot], dim=1)))
        case = torch.sigmoid(self.case_head(bottleneck.mean(dim=(2, 3, 4))).float())
        nsd = case[:, 1] if config.predict_nsd else None
        if config.output == OutputKind.TRUTH.value:
            truth_logits = logits.float() / config.truth_temperature
            foreground_mask = mask_onehot[:, 1:] if config.include_background_channel else mask_onehot
            return QCOutput(error_logits_from_truth(truth_logits, foreground_mask), case[:, 0], nsd, truth_logits)
        return QCOutput(logits, case[:, 0], nsd)


class FlipAveraged(nn.Module):
    """A QC network run on the input and on flipped copies of it, outputs flipped back and averaged.

    Error probabilities are averaged (and returned as logits), as are the case Dice and NSD; the truth
    logits, when present, become the log of the averaged truth probabilities.
    """

    def __init__(self, model: QCResUNet, flips: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.flips = [tuple(int(a) + 2 for a in f) for f in flips]  # spatial axes of (B, C, Z, Y, X)

    def forward(self, image: torch.Tensor, mask_onehot: torch.Tensor) -> QCOutput:
        outputs = [self.model(image, mask_onehot)]
        for dims in self.flips:
            flipped = self.model(torch.flip(image, dims), torch.flip(mask_onehot, dims))
            outputs.append(QCOutput(torch.flip(flipped.error_logits, dims), flipped.dice, flipped.nsd,
                                    torch.flip(flipped.truth_logits, dims) if flipped.truth_logits is not None
                                    else None))
        error = torch.stack([torch.sigmoid(o.error_logits.float()) for o in outputs]).mean(0)
        error = error.clamp(ERROR_PROB_EPSILON, 1 - ERROR_PROB_EPSILON)
        dice = torch.stack([o.dice.float() for o in outputs]).mean(0)
        nsd = torch.stack([o.nsd.float() for o in outputs]).mean(0) if outputs[0].nsd is not None else None
        truth = None
        if outputs[0].truth_logits is not None:
            truth = torch.log(torch.stack([torch.softmax(o.truth_logits.float(), 1) for o in outputs]).mean(0))
        return QCOutput(torch.log(error) - torch.log1p(-error), dice, nsd, truth)


def with_test_time_augmentation(model: nn.Module) -> nn.Module:
    """``model`` wrapped in :class:`FlipAveraged` when its config asks for flips, else ``model`` itself."""
    flips = getattr(model.config, "tta_flips", None)
    return FlipAveraged(model, flips) if flips else model
# The published QCResUNet has 16.6 M parameters; a configuration far above it is a mistake or an attack.
MAX_PARAMETERS = 200_000_000


def build_model(config: ModelConfig) -> QCResUNet:
    """The network of ``config``; ModelError (before any weight is allocated) when it would exceed MAX_PARAMETERS."""
    with torch.device("meta"):  # shapes only: counts the parameters without allocating them
        parameters = count_parameters(QCResUNet(config))
    if parameters > MAX_PARAMETERS:
        raise ModelError(f"Invalid model configuration: the network would have {parameters:,} parameters "
                         f"({parameters * 4 / 2**30:.1f} GB as float32), more than the {MAX_PARAMETERS:,} allowed "
                         "(the published QCResUNet has 16.6 M): check widths, blocks_per_stage and decoder_convs")
    return QCResUNet(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_conv_macs(model: nn.Module, spatial_zyx: Sequence[int], batch: int = 1) -> int:
    """Multiply-accumulates of all conv/linear layers for one forward pass at ``spatial_zyx`` (forward hooks).

    Runs the model on a zero input on the model's device; the result is exact for conv and linear
    layers, which dominate the cost (norms and activations are ignored).
    """
    config: ModelConfig = model.config  # type: ignore[assignment]
    total = 0

    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv3d):
            kernel = math.prod(module.kernel_size) * module.in_channels // module.groups
            total += output.numel() * kernel
        elif isinstance(module, nn.Conv1d):
            total += output.numel() * module.kernel_size[0] * module.in_channels
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv3d, nn.Conv1d,
                                                                                          nn.Linear))]
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            image = torch.zeros(batch, len(config.modalities), *spatial_zyx, device=device)
            mask = torch.zeros(batch, len(config.mask_labels), *spatial_zyx, device=device)
            model(image, mask)
    finally:
        for handle in handles:
            handle.remove()
    return total
