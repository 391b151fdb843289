"""Where model packages are (the bundled default, ``$SEGQC_MODEL``), without importing torch (the files inside a
package: :mod:`.package_layout`).

The Slicer module finds the default model to read its classes (``config.read_config``) for its panel; importing
torch for that took 2.2 s in Slicer's GUI process, and torch may not be installed yet.  :mod:`.package` (weights,
the network) imports torch and builds on this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from ..errors import ModelError
from .config import CONFIG_FILE
from .package_layout import WEIGHTS_FILES

PathLike = Union[str, os.PathLike]

MODEL_ENV = "SEGQC_MODEL"
DEFAULT_MODEL_SUBDIR = ("Resources", "Models", "hippocampus")
# Wheel installs carry the default model inside the package.
PACKAGED_MODEL_DIRS = ("_models", "models")
DEFAULT_MODEL_NAME = "hippocampus"


def _repository_default_dirs() -> list[Path]:
    package_root = Path(__file__).resolve().parents[1]  # SegQCLib/ (this file: SegQCLib/network/model_files.py)
    candidates = [package_root.parent.joinpath(*DEFAULT_MODEL_SUBDIR)]
    candidates += [package_root / sub / DEFAULT_MODEL_NAME for sub in PACKAGED_MODEL_DIRS]
    return candidates


def default_model_path() -> Path:
    """``$SEGQC_MODEL`` if set, else the bundled hippocampus model; ModelError when none is installed."""
    env = os.environ.get(MODEL_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise ModelError(f"${MODEL_ENV} points to {path}, which does not exist")
        return path
    candidates = _repository_default_dirs()
    for candidate in candidates:
        if (candidate / CONFIG_FILE).is_file() and any((candidate / name).is_file() for name in WEIGHTS_FILES):
            return candidate
    raise ModelError(
        "No default QC model is installed (looked in " + ", ".join(str(c) for c in candidates) + "). "
        f"Pass a model package with --model PATH (or set ${MODEL_ENV}); `segqc model init --out PATH` writes an "
        "untrained one for testing."
    )
