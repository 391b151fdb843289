"""Model packages: a folder with ``config.json``, the weights and optionally ``MODEL_CARD.md``.

Weights are written as ``weights.safetensors`` (the ``state_dict``'s tensors in the safetensors format:
a JSON header and raw tensor bytes, no pickle, so loading runs no code).  Packages from before that
format, with ``weights.pt`` (a ``state_dict`` written by ``torch.save``), are still read, only with
``torch.load(..., weights_only=True)``, whose restricted unpickler refuses any object other than
tensors and containers, so a hostile file cannot run code either.  A package holds one of the two.

``config.json`` holds ``weights_sha256``, the sha256 of the weights file, written by
:func:`save_model_package` itself (so every package written by SegQC or its training code carries it)
and kept right by ``segqc model convert``.  Loading checks, before anything is unpickled or parsed:
the weights path is a regular file (a FIFO, a device or a link to ``/dev/zero`` is refused, not
read forever), its size fits the network the config describes, and its sha256 is the stored one (a
flipped byte is refused, not silently used).  Packages from before the hash still load, with a
warning; ``segqc model convert`` adds it.  The tensors' names and shapes must then match the network
that ``config.json`` describes.  Problems raise :class:`ModelError` in our words; a refusal never
repeats torch's advice to retry with ``weights_only=False``, which must not be followed for a file
that was refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save as safetensors_bytes

from ..errors import ModelError
from ..files import atomic_write, bytes_verifier, describe_path, fsync_dir, write_bytes_atomic, write_bytes_synced
from ..files import sha256_file as file_sha256  # the name other modules import from here
from .config import CONFIG_FILE, ModelConfig, read_config, read_config_json  # noqa: F401  (also imported from here)
from .domain import DOMAIN_FILE, DomainProfile, read_domain_profile, write_domain_profile
from .model_files import (  # noqa: F401  (also the names other modules import from here)
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_SUBDIR,
    MODEL_ENV,
    PACKAGED_MODEL_DIRS,
    default_model_path,
)
from .package_layout import (  # noqa: F401  (WEIGHTS_FILES: also imported from here)
    CARD_FILE,
    LEGACY_WEIGHTS_FILE,
    WEIGHTS_FILE,
    WEIGHTS_FILES,
    package_dir,
    weights_path,
)
from .qcresunet import QCResUNet, build_model, count_parameters

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

WEIGHTS_SHA256_KEY = "weights_sha256"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# A weights file holds at most 8 bytes per parameter (float64) plus its header; much more is not these weights.
MAX_BYTES_PER_PARAMETER = 8
WEIGHTS_HEADER_SLACK_BYTES = 16 << 20
# Lines of torch.load's refusals that are advice for its own users (retry with weights_only=False, file an issue):
# never shown, since following them for a refused file would run whatever it holds.
_TORCH_ADVICE = ("weights_only", "weights only", "trusted source", "torch.load", "file an issue", "documentation",
                 "safe_globals", "pytorch.org")


@dataclass
class ModelPackage:
    """A loaded model package: the network (CPU, eval mode), its config and provenance."""

    path: Path
    config: ModelConfig
    model: QCResUNet
    sha256: str
    card: str = ""
    domain: Optional[DomainProfile] = None  # domain.json: what the model was trained on (None: no domain check)
    sha256_checked: bool = False  # config.json stored the weights' sha256 and the file matched it

    @property
    def notices(self) -> list[str]:
        """What every report made with this package should say about the package itself."""
        unknown = self.config.unknown_keys
        if not unknown:
            return []
        return [f"The model's {CONFIG_FILE} has setting(s) this SegQC version does not know ({', '.join(unknown)}): "
                "they have no effect here; the model may need a newer SegQC"]

    @property
    def info(self) -> dict[str, Any]:
        return {"name": self.config.name, "version": self.config.version, "sha256": self.sha256,
                "path": str(self.path), "trained": self.config.trained,
                "parameters": count_parameters(self.model), "domain_profile": self.domain is not None}


def check_weights_file(path: PathLike) -> int:
    """The size of the weights file at ``path``; ModelError when it is missing, empty or not a regular file (a FIFO
    would block the reader forever, a device such as /dev/zero never ends). A link to a regular file is fine."""
    path = Path(path)
    if not os.path.lexists(path):
        raise ModelError(f"Model weights not found: {path}")
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ModelError(f"Model weights {path} are {describe_path(path)}; refused") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ModelError(f"Model weights {path} are {describe_path(path)}, not a regular file; refused. A model "
                         f"package's {WEIGHTS_FILE} must be a file.")
    if info.st_size == 0:
        raise ModelError(f"Model weights {path} are empty (0 bytes): the file is truncated; reinstall the model")
    return info.st_size


def load_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Load tensors only (``.safetensors``, or a legacy ``.pt`` with the restricted unpickler); refuse pickled
    code and corrupt, truncated or non-state-dict files."""
    path = Path(path)
    check_weights_file(path)
    state = _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch_pickle(path)
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ModelError(f"Model weights {path} are not a state_dict (a mapping of names to tensors)")
    return state


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(str(path), device="cpu")
    except (SafetensorError, ValueError, OSError) as exc:  # bad header, truncated data, not a safetensors file
        raise ModelError(f"Model weights {path} are corrupt or truncated and cannot be read ({_reason(exc)}). "
                         "Re-download or re-export the model package.") from exc


def _reason(exc: BaseException) -> str:
    """What went wrong, from an exception's text without torch's advice (one line, ours to show)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kept = [line for line in lines if not any(advice in line.lower() for advice in _TORCH_ADVICE)]
    return (kept[-1] if kept else type(exc).__name__)[:300]


def _read_torch_pickle(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only=True raises this both for pickles naming Python callables (a hostile file: code
        # execution on an unrestricted load, or one saved with whole objects) and for bytes that are
        # not a pickle at all.  Both are refused; the message says which, in our words only.
        named = re.findall(r"GLOBAL ([\w.]+)", str(exc))
        if named:
            raise ModelError(
                f"Refused to load model weights {path}: the file contains Python objects other than tensors "
                f"({', '.join(sorted(set(named)))}), which could execute code when loaded. Do not load it by other "
                "means: use model packages only from people you trust; weights must be a plain state_dict."
            ) from exc
        raise ModelError(f"Model weights {path} are corrupt or not a plain tensor file and were refused "
                         f"({_reason(exc)}). Re-download or re-export the model package.") from exc
    except Exception as exc:  # torch.load raises RuntimeError, EOFError, KeyError, ... on damaged archives
        raise ModelError(f"Model weights {path} are corrupt or truncated and cannot be read ({_reason(exc)}). "
                         "Re-download or re-export the model package.") from exc


def state_dict_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    """Tensors as ``.safetensors`` bytes (CPU, contiguous, each with its own memory, as the format requires)."""
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state_dict.items()}
    return safetensors_bytes(tensors, metadata={"format": "pt"})


def save_state_dict(path: PathLike, state_dict: dict[str, torch.Tensor]) -> Path:
    """Write tensors as ``.safetensors``, read back before it counts as written."""
    path = Path(path)
    # Written by us rather than safetensors' save_file, which makes the file private (0600) whatever the umask.
    write_bytes_synced(path, state_dict_bytes(state_dict))
    return path


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} tensors of the wrong shape (e.g. {'; '.join(wrong[:3])})")
    if problems:
        raise ModelError(f"Model weights {source} do not match the network in config.json: " + "; ".join(problems)
                         + ". The config and weights come from different models.")
    floating = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if floating:
        raise ModelError(f"Model weights {source} contain NaN or infinite values (e.g. {floating[0]})")


def read_package_config(folder: Path) -> tuple[ModelConfig, Optional[str]]:
    """A package's configuration and the weights' sha256 stored with it (None in packages from before the hash)."""
    data, path = read_config_json(folder / CONFIG_FILE)
    stored = data.get(WEIGHTS_SHA256_KEY) if isinstance(data, dict) else None
    if stored is not None and not (isinstance(stored, str) and _SHA256_RE.match(stored)):
        raise ModelError(f"{path}: {WEIGHTS_SHA256_KEY} must be 64 lowercase hexadecimal digits (a sha256), got "
                         f"{str(stored)[:80]!r}")
    try:
        return ModelConfig.from_dict(data), stored
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc


def _check_weights_hash(weights: Path, stored: Optional[str], size: int, model: torch.nn.Module) -> str:
    """The weights file's sha256, checked against the stored one and its size against the network's."""
    limit = count_parameters(model) * MAX_BYTES_PER_PARAMETER + WEIGHTS_HEADER_SLACK_BYTES
    if size > limit:
        raise ModelError(f"Model weights {weights} are {size:,} bytes, far more than the network in config.json can "
                         f"hold ({limit:,} at most): the config and weights come from different models, or the file "
                         "is not a weights file")
    digest = file_sha256(weights)
    if stored is None:
        logger.warning("Model package %s stores no %s in config.json: its weights cannot be checked for damage. "
                       "`segqc model convert %s` adds it.", weights.parent, WEIGHTS_SHA256_KEY, weights.parent)
    elif digest != stored:
        raise ModelError(f"Model weights {weights} do not match the sha256 stored in config.json (stored "
                         f"{stored[:16]}..., file {digest[:16]}...): the file was changed or damaged after the package "
                         "was written. Re-download or re-export the model package.")
    return digest


def load_model_package(path: PathLike) -> ModelPackage:
    """Load config, verify and load weights; the model is on CPU in eval mode."""
    folder = package_dir(path)
    config, stored = read_package_config(folder)
    weights = weights_path(folder)
    size = check_weights_file(weights)
    model = build_model(config)
    digest = _check_weights_hash(weights, stored, size, model)
    state = load_state_dict(weights)
    check_state_dict(model, state, str(weights))
    model.load_state_dict(state)
    model.eval()
    card_path = folder / CARD_FILE
    card = card_path.read_text(encoding="utf-8", errors="replace") if _is_regular(card_path) else ""
    for notice in ModelPackage(folder, config, model, "").notices:
        logger.warning(notice)
    domain = read_domain_profile(folder)
    if domain is None:
        logger.warning("Model %s has no domain profile (%s): no domain check is possible; add one with `segqc model "
                       "profile %s --data DIR`", config.name, DOMAIN_FILE, folder)
    else:
        check_profile_matches(domain, config, folder)
    package = ModelPackage(folder.resolve(), config, model, digest, card, domain, sha256_checked=stored is not None)
    logger.info("Loaded model %s %s from %s (sha256 %s)", config.name, config.version, folder, package.sha256[:12])
    return package


def check_profile_matches(profile: DomainProfile, config: ModelConfig, folder: Path) -> None:
    """A domain.json made for another model (other modalities or classes) is refused, not silently used."""
    problems = []
    if [m.name for m in profile.modalities] != list(config.modalities):
        problems.append(f"modalities {[m.name for m in profile.modalities]} vs {list(config.modalities)}")
    unknown = sorted(set(profile.classes) - set(config.classes))
    if unknown:
        problems.append(f"classes {unknown} that the model does not have")
    if problems:
        raise ModelError(f"{folder / DOMAIN_FILE} does not belong to this model ({'; '.join(problems)}): rebuild it "
                         f"with `segqc model profile {folder} --data DIR`")
def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def _write_config(folder: Path, config: ModelConfig, weights_sha256: str) -> None:
    """config.json with the weights' sha256 (atomic and read back)."""
    data = {**config.to_dict(), WEIGHTS_SHA256_KEY: weights_sha256}
    write_bytes_atomic(folder / CONFIG_FILE, (json.dumps(data, indent=2) + "\n").encode("utf-8"), sync_dir=True)


def convert_weights_to_safetensors(path: PathLike) -> Path:
    """Rewrite an older package's ``weights.pt`` as ``weights.safetensors`` in place: the same tensors, names
    and dtypes (float16 stays float16); ``config.json`` gets the new file's sha256, nothing else changes.

    The legacy file is checked against the stored sha256 first (a damaged file is not blessed by converting it).
    The new file is written atomically and read back, config.json updated, and ``weights.pt`` removed only once
    both hold identical tensors, so a conversion interrupted at any point leaves the old package loadable or one
    that converting again completes.  A package already converted whose config.json lacks the sha256 gets it.
    Returns the weights file.
    """
    folder = package_dir(path)
    legacy, current = folder / LEGACY_WEIGHTS_FILE, folder / WEIGHTS_FILE
    config, stored = read_package_config(folder)
    model = build_model(config)
    if not os.path.lexists(legacy):
        if not os.path.lexists(current):
            raise ModelError(f"Model weights not found in {folder} (expected {WEIGHTS_FILE} or {LEGACY_WEIGHTS_FILE})")
        digest = _check_weights_hash(current, stored, check_weights_file(current), model)
        if stored is None:  # an older safetensors package: check the tensors, then record their hash
            check_state_dict(model, load_state_dict(current), str(current))
            _write_config(folder, config, digest)
        return current
    converted_before = os.path.lexists(current) and stored is not None and file_sha256(current) == stored
    if not converted_before:
        _check_weights_hash(legacy, stored, check_weights_file(legacy), model)
    state = load_state_dict(legacy)
    check_state_dict(model, state, str(legacy))
    if not os.path.lexists(current):
        data = state_dict_bytes(state)
        atomic_write(current, lambda temporary: temporary.write_bytes(data), suffix=".tmp.safetensors",
                     verify=bytes_verifier(data))
    if not _same_tensors(load_state_dict(current), state):
        raise ModelError(f"{current} and {legacy} hold different tensors; nothing was removed. Keep the file that "
                         "belongs to config.json and delete the other.")
    _write_config(folder, config, file_sha256(current))
    legacy.unlink()
    fsync_dir(folder)
    logger.info("Converted %s to %s", legacy, current)
    return current


def untrained_card(config: ModelConfig, parameters: int) -> str:
    return (
        f"# {config.name} {config.version} (untrained)\n\n"
        "Randomly initialised weights written by `segqc model init`. Its predictions are meaningless: train it\n"
        "(see `training/`) before using it for quality control.\n\n"
        f"- Classes: {', '.join(f'{k}={v}' for k, v in sorted(config.classes.items()))}\n"
        f"- Modalities: {', '.join(config.modalities)}\n"
        f"- Parameters: {parameters:,}\n"
        f"- Patch size (z, y, x): {config.patch_size_zyx}\n"
        f"- Target spacing (z, y, x) mm: {config.target_spacing_zyx_mm}\n"
    )


def save_model_package(path: PathLike, config: ModelConfig, state_dict: dict[str, torch.Tensor],
                       card: Optional[str] = None, overwrite: bool = False,
                       domain: Optional[DomainProfile] = None) -> Path:
    """Write a package folder atomically: built beside the target (weights, then config.json with their sha256,
    every file read back), then renamed into place.

    ``domain``: the training data's profile (:func:`~.domain.build_domain_profile`), written as ``domain.json``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ModelError(f"{path} already exists; choose another folder or overwrite explicitly")
    model = build_model(config)
    check_state_dict(model, state_dict, "being saved")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=str(path.parent)))
    try:
        weights = state_dict_bytes(state_dict)
        write_bytes_synced(staging / WEIGHTS_FILE, weights)
        data = {**config.to_dict(), WEIGHTS_SHA256_KEY: hashlib.sha256(weights).hexdigest()}
        write_bytes_synced(staging / CONFIG_FILE, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
        if card:
            write_bytes_synced(staging / CARD_FILE, card.encode("utf-8"))
        if domain is not None:
            check_profile_matches(domain, config, staging)
            write_domain_profile(staging, domain)
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def init_model_package(path: PathLike, config: Optional[ModelConfig] = None, seed: int = 0,
                       overwrite: bool = False) -> Path:
    """Write an untrained (randomly initialised, seeded) package of ``config`` (default: ModelConfig())."""
    config = config or ModelConfig()
    config.trained = False
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = build_model(config)
    finally:
        torch.random.set_rng_state(generator_state)
    return save_model_package(path, config, model.state_dict(), untrained_card(config, count_parameters(model)),
                              overwrite=overwrite)


