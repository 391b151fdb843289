"""Which suggested edits are offered: the expected-gain threshold, and where it comes from.

An edit is *offered* when its expected gain (estimated Dice of its class after the edit minus before, see
:mod:`.edit_gains`) is at least ``min_gain_dice``.  The threshold is a property of the QC model: how far its
error maps can be trusted decides how large an estimated gain must be before accepting it helps on average.
``python -m training.calibrate_suggestions`` measures it on tuning cases and writes it into the model package
as ``suggestions.json``::

    {"format": "segqc-suggestions", "format_version": 1, "min_gain_dice": 0.004,
     "weights_sha256": "<sha256 of the weights it was calibrated with>", "calibrated_utc": "...",
     "calibration": {...how it was measured...}}

The threshold is used in this order: the one given by the caller (``--suggest-min-gain``), the package's
calibrated one when its ``weights_sha256`` matches the package's weights, else :data:`DEFAULT_MIN_GAIN_DICE`
with a notice.  Reading needs no torch (``segqc estimate --model PKG`` reads the package's file only).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import InputError
from ..files import sha256_file, write_json_atomic

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

SUGGESTION_SETTINGS_FILE = "suggestions.json"
SETTINGS_FORMAT = "segqc-suggestions"
SETTINGS_FORMAT_VERSION = 1
# Without calibration: offer every edit that its own estimate does not call harmful.
DEFAULT_MIN_GAIN_DICE = 0.0
# Weights file names of a model package, newest format first (the same as SegQCLib.network.package.WEIGHTS_FILES,
# repeated here because that module needs torch; a test keeps the two equal).
PACKAGE_WEIGHTS_FILES = ("weights.safetensors", "weights.pt")


class GainSource:
    """Where a threshold came from (the text written to report.json's ``suggestion.min_gain_source``)."""

    DEFAULT = "default"
    CALIBRATED = "model package (calibrated)"
    GIVEN = "given (--suggest-min-gain)"


@dataclass(frozen=True)
class SuggestionParams:
    """The expected-gain threshold of offered edits and where it came from."""

    min_gain_dice: float = DEFAULT_MIN_GAIN_DICE
    min_gain_source: str = GainSource.DEFAULT

    def __post_init__(self) -> None:
        if not math.isfinite(self.min_gain_dice):
            raise InputError(f"The minimum expected Dice gain must be a finite number, got {self.min_gain_dice}")


def package_weights_sha256(package_dir: PathLike) -> Optional[str]:
    """sha256 of the package's weights file, or None when it has none."""
    for name in PACKAGE_WEIGHTS_FILES:
        path = Path(package_dir) / name
        if path.is_file():
            return sha256_file(path)
    return None


def read_suggestion_settings(package_dir: PathLike, weights_sha256: Optional[str] = None
                             ) -> tuple[SuggestionParams, list[str]]:
    """The package's calibrated threshold, or the default with a notice saying why.

    ``weights_sha256`` is the hash of the weights in use (the engine knows it); when not given it is computed
    from the package's weights file.  A calibration made for other weights is not used.
    """
    path = Path(package_dir) / SUGGESTION_SETTINGS_FILE
    default = SuggestionParams()
    if not path.is_file():
        return default, [f"Model package has no {SUGGESTION_SETTINGS_FILE}: suggested edits are offered from an "
                         f"expected Dice gain of {DEFAULT_MIN_GAIN_DICE} (not calibrated for this model)"]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        gain = float(data["min_gain_dice"])
        if data.get("format") != SETTINGS_FORMAT or not math.isfinite(gain):
            raise ValueError("not a SegQC suggestion settings file")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return default, [f"{path} is unreadable ({exc}): suggested edits are offered from the default expected "
                         f"Dice gain {DEFAULT_MIN_GAIN_DICE}"]
    expected = weights_sha256 if weights_sha256 is not None else package_weights_sha256(path.parent)
    if data.get("weights_sha256") != expected:
        return default, [f"{path} was calibrated for other weights (sha256 {str(data.get('weights_sha256'))[:12]}, "
                         f"these are {str(expected)[:12]}): suggested edits are offered from the default expected "
                         f"Dice gain {DEFAULT_MIN_GAIN_DICE}; run python -m training.calibrate_suggestions again"]
    return SuggestionParams(gain, GainSource.CALIBRATED), []


def resolve_suggestion_params(given_min_gain: Optional[float], package_dir: Optional[PathLike],
                              weights_sha256: Optional[str] = None) -> tuple[SuggestionParams, list[str]]:
    """The threshold a run uses: given on the command line, else the package's, else the default."""
    if given_min_gain is not None:
        return SuggestionParams(float(given_min_gain), GainSource.GIVEN), []
    if package_dir is None:
        return SuggestionParams(), []
    return read_suggestion_settings(package_dir, weights_sha256)


def write_suggestion_settings(package_dir: PathLike, min_gain_dice: float, calibration: dict[str, Any],
                              weights_sha256: Optional[str] = None) -> Path:
    """Write the package's ``suggestions.json`` atomically (the calibration script's output)."""
    package_dir = Path(package_dir)
    sha = weights_sha256 or package_weights_sha256(package_dir)
    if sha is None:
        raise InputError(f"{package_dir} holds no model weights ({' or '.join(PACKAGE_WEIGHTS_FILES)})")
    data = {"format": SETTINGS_FORMAT, "format_version": SETTINGS_FORMAT_VERSION,
            "min_gain_dice": float(min_gain_dice), "weights_sha256": sha,
            "calibrated_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "calibration": calibration}
    path = write_json_atomic(package_dir / SUGGESTION_SETTINGS_FILE, data)
    logger.info("Wrote %s (min_gain_dice %.4f)", path, min_gain_dice)
    return path
