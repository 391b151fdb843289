"""The optional OpenVINO runtime computes what PyTorch computes (same weights, float32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SegQCLib.geometry import Geometry
from SegQCLib.network.config import ModelConfig
from SegQCLib.network.inference import predict_case
from SegQCLib.network.qcresunet import build_model
from SegQCLib.network.runtime import Runtime, make_runner

LOGIT_TOLERANCE = 1e-3
PROBABILITY_TOLERANCE = 1e-4


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return build_model(ModelConfig(widths=[8, 16, 32, 64], full_res_width=8)).eval()


def test_torch_runtime_is_the_model_itself(model):
    assert make_runner(model, Runtime.TORCH, torch.device("cpu"), "sha") is model


def test_openvino_windows_match_torch_within_tolerance(model, tmp_path, monkeypatch):
    pytest.importorskip("openvino", reason="openvino is an optional dependency")
    monkeypatch.setenv("SEGQC_CACHE_DIR", str(tmp_path))
    runner = make_runner(model, Runtime.OPENVINO, torch.device("cpu"), "test-weights")
    assert runner is not model and runner.config is model.config
    image = torch.randn(2, 1, 48, 64, 48)
    mask = (torch.rand(2, 2, 48, 64, 48) > 0.5).float()
    with torch.inference_mode():
        expected = model(image, mask)
    got = runner(image, mask)
    assert (got.error_logits - expected.error_logits).abs().max() < LOGIT_TOLERANCE
    assert torch.allclose(got.dice, expected.dice, atol=PROBABILITY_TOLERANCE)
    assert list((tmp_path / "openvino").glob("test-weights-*.onnx"))


def test_a_whole_case_through_openvino_matches_torch(model, tmp_path, monkeypatch):
    pytest.importorskip("openvino", reason="openvino is an optional dependency")
    monkeypatch.setenv("SEGQC_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(0)
    seg = np.zeros((40, 90, 50), np.uint8)
    seg[10:30, 20:70, 10:40] = 1
    seg[15:25, 30:50, 20:30] = 2
    image = (100 + 40 * seg + rng.normal(0, 5, seg.shape)).astype(np.float32)
    geometry = Geometry(seg.shape, (1.0, 1.0, 1.0))
    runner = make_runner(model, Runtime.OPENVINO, torch.device("cpu"), "case-weights")
    expected = predict_case(model, model.config, [image], seg, geometry, torch.device("cpu"))
    got = predict_case(model, model.config, [image], seg, geometry, torch.device("cpu"), runner=runner)
    assert got.windows == expected.windows > 1
    for label in (1, 2):
        assert np.abs(got.error_prob[label] - expected.error_prob[label]).max() < PROBABILITY_TOLERANCE
    assert got.dice_pred == pytest.approx(expected.dice_pred, abs=PROBABILITY_TOLERANCE)


def test_without_openvino_the_network_runs_with_torch(model, monkeypatch, caplog):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)
    assert make_runner(model, Runtime.OPENVINO, torch.device("cpu"), "sha") is model
    assert "not installed" in caplog.text
