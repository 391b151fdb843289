"""What ``segqc model info`` prints, read without torch: config, weights checksum and tensor count, card.

The weights' tensor names and shapes come from the safetensors header (an 8-byte little-endian length, then
that many bytes of JSON), so the parameter count needs neither torch nor reading the tensors themselves.
Packages with the older ``weights.pt`` give no count here (reading a torch pickle needs torch).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import ModelError
from ..files import sha256_file
from .config import CONFIG_FILE, ModelConfig, read_config
from .package_layout import CARD_FILE, WEIGHTS_FILE, PathLike, package_dir, weights_path

HEADER_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit
METADATA_KEY = "__metadata__"


@dataclass(frozen=True)
class PackageSummary:
    path: Path
    config: ModelConfig
    weights: Path
    sha256: str
    tensors: Optional[int]  # None for a legacy weights.pt
    parameters: Optional[int]
    card: str


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a ``.safetensors`` header; ModelError when the header is not readable."""
    with open(path, "rb") as stream:
        prefix = stream.read(HEADER_LENGTH_BYTES)
        if len(prefix) != HEADER_LENGTH_BYTES:
            raise ModelError(f"Model weights {path} are truncated (no safetensors header)")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise ModelError(f"Model weights {path} are not a safetensors file (header of {length} bytes)")
        raw = stream.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
        return {name: [int(v) for v in entry["shape"]] for name, entry in header.items() if name != METADATA_KEY}
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"Model weights {path} have a corrupt safetensors header ({exc})") from exc


def read_package_summary(path: PathLike) -> PackageSummary:
    folder = package_dir(path)
    config = read_config(folder / CONFIG_FILE)
    weights = weights_path(folder)
    if not weights.is_file():
        raise ModelError(f"Model weights not found: {weights}")
    tensors = parameters = None
    if weights.name == WEIGHTS_FILE:
        shapes = safetensors_shapes(weights)
        tensors, parameters = len(shapes), sum(math.prod(shape) for shape in shapes.values())
    card_path = folder / CARD_FILE
    card = card_path.read_text(encoding="utf-8", errors="replace") if card_path.is_file() else ""
    return PackageSummary(folder.resolve(), config, weights, sha256_file(weights), tensors, parameters, card)
