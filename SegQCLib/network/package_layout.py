"""Where things are in a model package folder (no torch): the folder itself, its weights file and card.

:mod:`SegQCLib.network.package` loads and writes packages with torch; this module is what the torch-free
commands (``segqc model info``) need to find the files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from ..errors import ModelError
from .config import CONFIG_FILE

PathLike = Union[str, os.PathLike]

WEIGHTS_FILE = "weights.safetensors"
# Weights of packages written before safetensors: read (restricted unpickler), never written.
LEGACY_WEIGHTS_FILE = "weights.pt"
WEIGHTS_FILES = (WEIGHTS_FILE, LEGACY_WEIGHTS_FILE)
CARD_FILE = "MODEL_CARD.md"


def package_dir(path: PathLike) -> Path:
    """Accept the package folder or a file inside it (config.json, the weights, the card)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"Model package not found: {path}")
    if path.is_file() and path.name in (CONFIG_FILE, CARD_FILE, *WEIGHTS_FILES):
        path = path.parent
    if not path.is_dir():
        raise ModelError(f"Model package {path} is not a folder; expected a folder with {CONFIG_FILE} and "
                         f"{WEIGHTS_FILE}")
    return path


def weights_path(folder: Path) -> Path:
    """The package's weights file: ``weights.safetensors``, or ``weights.pt`` in an older package."""
    present = [folder / name for name in WEIGHTS_FILES if os.path.lexists(folder / name)]  # links too: refused later
    if len(present) > 1:
        raise ModelError(f"Model package {folder} has both {WEIGHTS_FILE} and {LEGACY_WEIGHTS_FILE}: which one "
                         "the config belongs to is unclear. If a conversion was interrupted, `segqc model convert "
                         "PATH` finishes it; otherwise remove the file that does not belong to the config.")
    return present[0] if present else folder / WEIGHTS_FILE
