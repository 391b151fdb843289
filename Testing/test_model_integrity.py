"""A model package's weights are checked against the sha256 its config.json stores, before they are parsed; a weights
path that is not a regular file is refused at once; refusals are in our words and never advise a user to load a
refused file another way (torch's "retry with weights_only=False")."""

from __future__ import annotations

import json
import os
import pickle
import stat

import pytest
import torch
from safetensors.torch import load_file
from synthetic_cases import TINY_ARCHITECTURE

from SegQCLib.commands.cli import main as segqc
from SegQCLib.errors import ModelError
from SegQCLib.network.config import CONFIG_FILE, ModelConfig
from SegQCLib.network.package import (
    LEGACY_WEIGHTS_FILE,
    WEIGHTS_FILE,
    convert_weights_to_safetensors,
    default_model_path,
    file_sha256,
    init_model_package,
    load_model_package,
    save_model_package,
)

TINY = TINY_ARCHITECTURE
TORCH_ADVICE = ("weights_only", "trusted source", "Re-running", "will likely succeed", "file an issue")


@pytest.fixture
def package(tmp_path):
    return init_model_package(tmp_path / "pkg", ModelConfig(**TINY), seed=3)


def stored_hash(folder) -> str:
    return json.loads((folder / CONFIG_FILE).read_text())["weights_sha256"]


def flip_bytes(path, count: int = 64) -> None:
    """Flip ``count`` bytes in the middle of the file (tensor data, not the header)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def legacy(folder, with_hash: bool):
    """The package as an older one: its tensors in weights.pt, the config with (or without) that file's sha256."""
    torch.save(load_file(folder / WEIGHTS_FILE), folder / LEGACY_WEIGHTS_FILE)
    (folder / WEIGHTS_FILE).unlink()
    data = json.loads((folder / CONFIG_FILE).read_text())
    data.pop("weights_sha256")
    if with_hash:
        data["weights_sha256"] = file_sha256(folder / LEGACY_WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(data))
    return folder


def test_save_model_package_stores_the_weights_sha256_in_the_config(tmp_path):
    model_state = load_file(init_model_package(tmp_path / "a", ModelConfig(**TINY)) / WEIGHTS_FILE)
    folder = save_model_package(tmp_path / "trained", ModelConfig(**TINY), model_state)  # what training calls
    assert stored_hash(folder) == file_sha256(folder / WEIGHTS_FILE)
    loaded = load_model_package(folder)
    assert loaded.sha256 == stored_hash(folder) and loaded.sha256_checked


@pytest.mark.parametrize("with_legacy", [False, True], ids=["safetensors", "weights.pt"])
def test_flipped_bytes_in_the_weights_are_refused(package, with_legacy):
    weights = package / WEIGHTS_FILE
    if with_legacy:
        weights = legacy(package, with_hash=True) / LEGACY_WEIGHTS_FILE
    load_model_package(package)  # whole: loads
    flip_bytes(weights)
    with pytest.raises(ModelError, match="do not match the sha256 stored in config.json"):
        load_model_package(package)


def test_a_package_from_before_the_hash_still_loads_and_convert_adds_the_hash(package, caplog):
    legacy(package, with_hash=False)
    assert not load_model_package(package).sha256_checked
    assert "stores no weights_sha256" in caplog.text
    convert_weights_to_safetensors(package)
    assert stored_hash(package) == file_sha256(package / WEIGHTS_FILE)
    assert load_model_package(package).sha256_checked
    flip_bytes(package / WEIGHTS_FILE)
    with pytest.raises(ModelError, match="do not match the sha256"):
        load_model_package(package)


def test_a_safetensors_package_without_the_hash_gets_it_from_convert(package):
    data = json.loads((package / CONFIG_FILE).read_text())
    data.pop("weights_sha256")
    (package / CONFIG_FILE).write_text(json.dumps(data))
    assert segqc(["model", "convert", str(package)]) == 0
    assert stored_hash(package) == file_sha256(package / WEIGHTS_FILE)


def test_convert_keeps_the_hash_right_for_the_new_file(package):
    legacy(package, with_hash=True)
    convert_weights_to_safetensors(package)
    assert stored_hash(package) == file_sha256(package / WEIGHTS_FILE)
    assert load_model_package(package).sha256_checked


def test_convert_refuses_to_bless_a_damaged_legacy_file(package):
    legacy(package, with_hash=True)
    flip_bytes(package / LEGACY_WEIGHTS_FILE)
    with pytest.raises(ModelError, match="do not match the sha256"):
        convert_weights_to_safetensors(package)
    assert (package / LEGACY_WEIGHTS_FILE).is_file() and not (package / WEIGHTS_FILE).exists()


def test_a_malformed_stored_hash_is_refused(package):
    data = json.loads((package / CONFIG_FILE).read_text())
    data["weights_sha256"] = 48
    (package / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="weights_sha256 must be 64 lowercase hexadecimal digits"):
        load_model_package(package)


def test_the_bundled_model_passes_its_own_check():
    loaded = load_model_package(default_model_path())
    assert loaded.sha256_checked and loaded.sha256 == stored_hash(loaded.path)


# --- weights paths that are not files --------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_weights_that_are_a_fifo_are_refused_at_once(package):
    (package / WEIGHTS_FILE).unlink()
    os.mkfifo(package / WEIGHTS_FILE)
    with pytest.raises(ModelError, match=r"are a FIFO \(named pipe\), not a regular file; refused"):
        load_model_package(package)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_weights_linked_to_dev_zero_are_refused_not_reported_missing(package):
    (package / WEIGHTS_FILE).unlink()
    (package / WEIGHTS_FILE).symlink_to("/dev/zero")
    with pytest.raises(ModelError, match=r"a symbolic link to /dev/zero \(a character device\), not a regular file"):
        load_model_package(package)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_config_that_is_a_fifo_is_refused_at_once(package):
    (package / CONFIG_FILE).unlink()
    os.mkfifo(package / CONFIG_FILE)
    with pytest.raises(ModelError, match="is a FIFO"):
        load_model_package(package)


def test_weights_far_larger_than_the_network_are_refused_before_reading(package):
    weights = package / WEIGHTS_FILE
    with open(weights, "r+b") as handle:
        handle.truncate(64 << 20)  # sparse: nothing is written, the file only claims 64 MB
    assert stat.S_ISREG(weights.stat().st_mode)
    with pytest.raises(ModelError, match="far more than the network in config.json can hold"):
        load_model_package(package)


def test_a_weights_link_to_a_regular_file_is_fine(package, tmp_path):
    moved = tmp_path / "elsewhere.safetensors"
    (package / WEIGHTS_FILE).rename(moved)
    (package / WEIGHTS_FILE).symlink_to(moved)
    assert load_model_package(package).sha256_checked


# --- refusals in our words ---------------------------------------------------------------------------
class RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize("payload", ["hostile", "junk"])
def test_a_refused_weights_file_never_gets_advice_to_load_it_another_way(package, payload, capsys):
    legacy(package, with_hash=False)
    weights = package / LEGACY_WEIGHTS_FILE
    if payload == "hostile":
        torch.save({"stem.0.weight": RunsCode()}, weights)
    else:
        weights.write_bytes(pickle.dumps(object.__new__(RunsCode), protocol=2)[:3] + os.urandom(2000))
    assert segqc(["model", "info", "--flops", str(package)]) == 1  # --flops loads the weights
    message = capsys.readouterr().err
    assert "segqc: error:" in message and "refused" in message
    assert not any(advice in message for advice in TORCH_ADVICE), message
    if payload == "hostile":
        assert "posix.system" in message or "os.system" in message
