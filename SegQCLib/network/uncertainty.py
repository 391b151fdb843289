"""The network's own uncertainty: how much its prediction changes when the input is mirrored.

On cases like its training data the QC network predicts nearly the same errors for an image and its mirror
image (mirroring a left hippocampus gives something like a right one); far from its training data its
answers are arbitrary, and arbitrary answers rarely survive a mirror.  One extra window is enough to see it:
the window holding the most segmented voxels is also predicted mirrored along the left-right axis, in the same
batch (:func:`~SegQCLib.network.inference.sliding_window_predict`), so the cost is one window per case.

Two numbers come out (:class:`FlipUncertainty`):

* ``disagreement``: Σ|Ê − Ê_mirrored| over the window's voxels and classes, divided by the window's
  segmented voxels -- the share of the structure's volume whose predicted error changes on mirroring;
* ``dice_change``: |Dice − Dice_mirrored| of the network's Dice regression head.

Their spread on the training data (``UncertaintyProfile`` of the domain profile, measured by
:func:`calibrate_uncertainty`) says what is normal for the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..geometry import Geometry

# Below this many segmented voxels in the window the ratio would be noise: the denominator is at least this.
MIN_PROBE_VOXELS = 64.0


def mirror(tensor: torch.Tensor, axis_zyx: int) -> torch.Tensor:
    """Mirror a (C, Z, Y, X) window along spatial axis ``axis_zyx``."""
    return torch.flip(tensor, [tensor.dim() - 3 + axis_zyx])


def left_right_axis(geometry: Geometry) -> int:
    """Numpy axis (of the (z, y, x) array) that runs closest to the patient's left-right direction."""
    direction = geometry.direction_matrix  # columns: physical directions of the x, y, z index axes (LPS)
    index_axis_xyz = int(np.argmax(np.abs(direction[0, :])))
    return 2 - index_axis_xyz


@dataclass
class FlipProbe:
    """One window's prediction and that of its mirror image (mirrored back), from the sliding window."""

    prob: torch.Tensor  # (C, Z, Y, X)
    mirrored_prob: torch.Tensor  # (C, Z, Y, X), already mirrored back onto ``prob``'s voxels
    dice: float
    mirrored_dice: float
    foreground_voxels: float
    axis_zyx: int


@dataclass
class FlipUncertainty:
    disagreement: float
    dice_change: float
    axis_zyx: int

    @classmethod
    def of(cls, probe: FlipProbe) -> FlipUncertainty:
        changed = float((probe.prob - probe.mirrored_prob).abs().sum())
        return cls(changed / max(probe.foreground_voxels, MIN_PROBE_VOXELS), abs(probe.dice - probe.mirrored_dice),
                   probe.axis_zyx)


def flip_uncertainty(probe: Optional[FlipProbe]) -> Optional[FlipUncertainty]:
    return FlipUncertainty.of(probe) if probe is not None else None
