"""Model configurations are checked for types and sane ranges before anything is built from them: in a package's
config.json and in ``segqc model init --config`` alike, a hostile or mistaken value gets one line in our words --
no traceback, no Python internals, no gigabytes allocated, no hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from SegQCLib.errors import ModelError, ResourceError
from SegQCLib.network import inference
from SegQCLib.network.config import ModelConfig, reference_qcresunet_config

REPO = Path(__file__).resolve().parents[1]
HANG_S = 900

# (override of the default configuration, what the message must say)
HOSTILE = {
    "huge widths": ({"widths": [4096, 8192, 16384, 32768]}, "widths[0] must be between 1 and 1024, got 4096"),
    "a million blocks": ({"blocks_per_stage": [1000000, 1, 1, 1]}, "blocks_per_stage[0] must be between 1 and 16"),
    "a billion decoder convs": ({"decoder_convs": 1000000000}, "decoder_convs must be between 1 and 8"),
    "negative margin": ({"crop_margin_mm": -1e9}, "crop_margin_mm must be in [0, 1000], got -1e+09"),
    "NaN margin": ("{\"crop_margin_mm\": NaN}", "crop_margin_mm must be a finite number"),
    "infinite margin": ("{\"crop_margin_mm\": 1e309}", "crop_margin_mm must be a finite number"),
    "dropout as text": ({"dropout": "high"}, "dropout must be a number, got the text 'high'"),
    "dropout of 5": ({"dropout": 5}, "dropout must be in [0, 1), got 5"),
    "tiny spacing": ({"target_spacing_zyx_mm": [0.001, 1, 1]}, "target_spacing_zyx_mm[0] must be in [0.05, 50]"),
    "huge patch": ({"patch_size_zyx": [2048, 2048, 2048]}, "patch_size_zyx[0] must be between 4 and 512"),
    "patch as text": ({"patch_size_zyx": "48"}, "patch_size_zyx must be a list, got the text '48'"),
    "strides as a number": ({"strides": 2}, "strides must be a list, got the number 2"),
    "width as text": ({"widths": ["16", 32, 64, 128]}, "widths[0] must be a whole number, got the text '16'"),
    "100k classes": ({"classes": {str(i): f"c{i}" for i in range(1, 100001)}}, "classes must name 1 to 255 classes"),
    "classes as a list": ({"classes": ["a", "b"]}, "classes must be an object mapping labels to names"),
    "overlap near 1": ({"window_overlap": 0.999}, "window_overlap must be in [0, 0.9]"),
    "trained as text": ({"trained": "yes"}, "trained must be true or false"),
}
PYTHON_INTERNALS = ("object is not iterable", "invalid literal", "Traceback", "TypeError", "ValueError",
                    "unsupported operand")

# One subprocess tries every configuration with `segqc model init --config` under an address-space limit, so a
# configuration that allocates gigabytes fails there (and on a machine without the fix, the test fails, not the host).
DRIVER = r"""
import contextlib, io, json, resource, sys
from SegQCLib.commands.cli import main
import SegQCLib.commands.model  # torch and the network, imported before the limit
with open("/proc/self/status") as status:
    vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), resource.RLIM_INFINITY))
results = {}
for name, config_path, out in json.loads(sys.argv[1]):
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            code = main(["model", "init", "--config", config_path, "--out", out])
    except BaseException as exc:  # a crash is what the test looks for
        code, stderr = 99, io.StringIO(f"Traceback: {type(exc).__name__}: {exc}")
    results[name] = [code, stderr.getvalue()]
print(json.dumps(results))
"""


def write_config(path: Path, override) -> Path:
    path.write_text(override if isinstance(override, str) else json.dumps(override))
    return path


@pytest.fixture(scope="module")
def init_results(tmp_path_factory) -> dict[str, tuple[int, str]]:
    folder = tmp_path_factory.mktemp("configs")
    jobs = [(name, str(write_config(folder / f"{i}.json", override)), str(folder / f"package{i}"))
            for i, (name, (override, _)) in enumerate(HOSTILE.items())]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    try:
        result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(jobs)], capture_output=True, text=True,
                                timeout=HANG_S, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        pytest.fail(f"segqc model init did not finish the hostile configurations within {HANG_S} s (hangs)")
    assert result.returncode == 0, result.stderr[-3000:]
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "_folder": str(folder)}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_model_init_refuses_a_hostile_configuration_in_our_words(init_results, name):
    code, message = init_results[name]
    assert code == 1, message
    assert "Invalid model configuration" in message and HOSTILE[name][1] in message, message
    assert not any(internal in message for internal in PYTHON_INTERNALS), message
    index = list(HOSTILE).index(name)
    assert not (Path(init_results["_folder"]) / f"package{index}").exists()


@pytest.mark.parametrize("name", ["negative margin", "patch as text", "tiny spacing", "dropout of 5"])
def test_a_package_with_a_hostile_config_is_refused_on_load(tmp_path, name, capsys):
    from SegQCLib.commands.cli import main

    package = tmp_path / "package"
    assert main(["model", "init", "--out", str(package)]) == 0
    config = json.loads((package / "config.json").read_text())
    override = HOSTILE[name][0]
    config.update(override)
    (package / "config.json").write_text(json.dumps(config))
    assert main(["model", "info", str(package)]) == 1
    message = capsys.readouterr().err
    assert "Invalid model configuration" in message and HOSTILE[name][1] in message


def test_the_published_size_and_the_default_are_inside_every_range():
    ModelConfig.from_dict(reference_qcresunet_config().to_dict())
    ModelConfig.from_dict(ModelConfig().to_dict())


def test_a_network_beyond_the_parameter_budget_is_refused_before_its_weights_exist():
    from SegQCLib.network.qcresunet import build_model

    config = ModelConfig(widths=[1024] * 8, blocks_per_stage=[16] * 8, strides=[[1, 1, 1]] * 8, decoder_convs=8)
    with pytest.raises(ModelError, match=r"would have [\d,]+ parameters .* more than the 200,000,000 allowed"):
        build_model(config)


def test_a_window_larger_than_the_free_memory_is_refused_instead_of_run(monkeypatch):
    import torch

    monkeypatch.setattr(inference, "available_memory_bytes", lambda device: 1 << 30)
    with pytest.raises(ResourceError, match="One window of the QC network needs about 2.0 GB"):
        inference.choose_window_batch(torch.device("cpu"), 2 << 30)


def test_segqc_run_refuses_an_overlap_that_would_make_the_window_count_explode(capsys):
    from SegQCLib.commands.cli import main

    assert main(["run", "--image", "i.nii.gz", "--seg", "s.nii.gz", "--out", "o", "--overlap", "0.99"]) == 2
    assert "--overlap: must be a number in [0, 0.9]" in capsys.readouterr().err
