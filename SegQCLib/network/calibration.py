"""Calibrate the network's mirror disagreement (:mod:`.uncertainty`) on cases it knows: the spread that
``report.domain.uncertainty`` is compared with, stored in the domain profile."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Union

import numpy as np
import torch

from ..errors import ModelError
from .config import ModelConfig
from .domain import DomainCase, Spread, UncertaintyProfile
from .inference import predict_case
from .uncertainty import FlipUncertainty

logger = logging.getLogger(__name__)


def calibrate_uncertainty(model: torch.nn.Module, config: ModelConfig, cases: Iterable[Union[DomainCase, tuple]],
                          device: Union[str, torch.device] = "cpu", source: str = "") -> UncertaintyProfile:
    """Mirror disagreement of ``model`` on each (images, labels, geometry) case, summarised.

    Give the training cases with their ground truth (as for :func:`~.domain.build_domain_profile`): the
    network checks the truth, one sliding window plus its mirror image per case.
    """
    device = torch.device(device)
    values: list[float] = []
    axes: list[int] = []
    for images, labels, geometry in cases:
        images = [images] if isinstance(images, np.ndarray) else list(images)
        result = predict_case(model, config, images, np.asarray(labels), geometry, device, flip_check=True)
        flip: FlipUncertainty = result.uncertainty  # type: ignore[assignment]
        values.append(flip.disagreement)
        axes.append(flip.axis_zyx)
        if len(values) % 25 == 0:
            logger.info("Mirror disagreement measured on %d cases", len(values))
    if not values:
        raise ModelError("Calibrating the mirror disagreement needs at least one case")
    return UncertaintyProfile(max(set(axes), key=axes.count), len(values), Spread.of(values), source)
