"""Which library runs the QC network's windows: PyTorch, or OpenVINO on CPU (optional dependency).

OpenVINO (``pip install openvino``) runs the same weights, exported once per model through ONNX and cached
(``$SEGQC_CACHE_DIR``, else ``~/.cache/segqc``, keyed by the weights' sha256 and the OpenVINO version), in
float32 (its bfloat16 default on CPUs with AMX is refused: probabilities moved by up to 0.09).  Measured on
the bundled model's 48x64x48 windows it needed half of PyTorch's CPU time per window (249 vs 504 ns per
voxel, logits within 1e-4); see the README's speed table.  When OpenVINO is missing or fails to load the
model, PyTorch runs the windows and the log says why.

A runner is called like the network, ``runner(image_batch, mask_batch) -> QCOutput``, and carries the
model's ``config``, so anything that wraps the network (test-time augmentation) wraps a runner alike.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import torch

from ..files import atomic_write
from .qcresunet import QCOutput

logger = logging.getLogger(__name__)

CACHE_ENV = "SEGQC_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/segqc")
ONNX_OPSET = 17
OUTPUT_NAMES = ("error_logits", "dice", "nsd")
# OpenVINO's version string holds slashes ("2026.4.1-22982-e213a147257-releases/2026/4"): not in a file name.
UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


class Runtime(str, Enum):
    TORCH = "torch"
    OPENVINO = "openvino"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


class _FlatOutputs(torch.nn.Module):
    """The network with plain tensor outputs, as exporters want them (NSD as zeros when not predicted)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        output = self.model(image, mask)
        nsd = output.nsd if output.nsd is not None else torch.zeros_like(output.dice)
        return output.error_logits, output.dice, nsd


def export_onnx(model: torch.nn.Module, path: Path) -> Path:
    """Export ``model`` (eval mode, CPU, float32) to ONNX with free batch and spatial sizes, atomically."""
    config = model.config
    probe = [2 * t for t in config.total_stride_zyx]
    inputs = (torch.zeros(1, len(config.modalities), *probe), torch.zeros(1, len(config.mask_labels), *probe))
    dynamic = {0: "batch", 2: "z", 3: "y", 4: "x"}
    flat = _FlatOutputs(model).eval()

    def write(temporary: Path) -> None:
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(flat, inputs, str(temporary), input_names=["image", "mask"],
                              output_names=list(OUTPUT_NAMES), dynamic_axes={"image": dynamic, "mask": dynamic},
                              opset_version=ONNX_OPSET, dynamo=False)

    return atomic_write(path, write, suffix=".tmp.onnx")


class OpenVinoRunner:
    """The network compiled by OpenVINO for CPU, float32, for one window batch shape at a time."""

    def __init__(self, model: torch.nn.Module, sha256: str, threads: Optional[int] = None) -> None:
        import openvino

        self.config = model.config
        self._predict_nsd = bool(self.config.predict_nsd)
        version = UNSAFE_NAME_CHARACTERS.sub("_", openvino.__version__)
        path = cache_dir() / "openvino" / f"{UNSAFE_NAME_CHARACTERS.sub('_', sha256)}-{version}.onnx"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            export_onnx(model.float().cpu().eval(), path)
            logger.info("Exported the QC network for OpenVINO to %s", path)
        self._core = openvino.Core()
        self._source = self._core.read_model(str(path))
        self._properties = {"INFERENCE_PRECISION_HINT": "f32",
                            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
        self._compiled: dict[tuple[tuple[int, ...], tuple[int, ...]], Any] = {}

    def _request(self, image_shape: Sequence[int], mask_shape: Sequence[int]) -> Any:
        key = (tuple(image_shape), tuple(mask_shape))
        if key not in self._compiled:
            model = self._source.clone()
            model.reshape({"image": list(image_shape), "mask": list(mask_shape)})
            self._compiled[key] = self._core.compile_model(model, "CPU", self._properties).create_infer_request()
        return self._compiled[key]

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> QCOutput:
        request = self._request(image.shape, mask.shape)
        outputs = request.infer([image.float().contiguous().numpy(), mask.float().contiguous().numpy()])
        error, dice, nsd = (torch.from_numpy(outputs[index].copy()) for index in range(len(OUTPUT_NAMES)))
        return QCOutput(error, dice, nsd if self._predict_nsd else None)


def make_runner(model: torch.nn.Module, runtime: Runtime, device: torch.device, sha256: str) -> Any:
    """The callable that runs windows: ``model`` itself for PyTorch, else an :class:`OpenVinoRunner` (CPU only;
    PyTorch with a logged reason when OpenVINO is missing or cannot load the model)."""
    runtime = Runtime(runtime)
    if runtime is Runtime.TORCH:
        return model
    if device.type != "cpu":
        logger.info("OpenVINO runs on the CPU only: the %s device uses PyTorch", device)
        return model
    try:
        return OpenVinoRunner(model, sha256)
    except ImportError:
        logger.warning("OpenVINO is not installed (pip install openvino): the QC network runs with PyTorch")
    except Exception as exc:  # an exporter or runtime failure must not stop QC: PyTorch computes the same
        logger.warning("OpenVINO could not load the QC network (%s): it runs with PyTorch", exc)
    return model
