"""Model packages: round trip, provenance, and refusal of hostile, corrupt or mismatched files."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file
from synthetic_cases import TINY_ARCHITECTURE

from SegQCLib.errors import ModelError
from SegQCLib.network import model_files
from SegQCLib.network import package as model_package
from SegQCLib.network.config import CONFIG_FILE, ModelConfig
from SegQCLib.network.package import (
    CARD_FILE,
    LEGACY_WEIGHTS_FILE,
    WEIGHTS_FILE,
    convert_weights_to_safetensors,
    default_model_path,
    file_sha256,
    init_model_package,
    load_model_package,
)

TINY = TINY_ARCHITECTURE


@pytest.fixture
def package(tmp_path):
    return init_model_package(tmp_path / "pkg", ModelConfig(**TINY), seed=3)


def forget_hash(folder):
    """Make ``folder`` a package from before config.json stored the weights' sha256 (so what reads the weights file
    is what refuses a bad one: the tests below are about those refusals; Testing/test_model_integrity.py about the
    hash)."""
    data = json.loads((folder / CONFIG_FILE).read_text())
    data.pop("weights_sha256", None)
    (folder / CONFIG_FILE).write_text(json.dumps(data, indent=2))
    return folder


@pytest.fixture
def legacy_package(package):
    """A package as written before safetensors (and before the hash): the same tensors in ``weights.pt``."""
    torch.save(load_file(package / WEIGHTS_FILE), package / LEGACY_WEIGHTS_FILE)
    (package / WEIGHTS_FILE).unlink()
    return forget_hash(package)


@pytest.fixture(params=[WEIGHTS_FILE, LEGACY_WEIGHTS_FILE])
def weights_file(request, package):
    """The weights file of a package in either format (the current one, or a legacy package's), no hash stored."""
    if request.param == LEGACY_WEIGHTS_FILE:
        torch.save(load_file(package / WEIGHTS_FILE), package / LEGACY_WEIGHTS_FILE)
        (package / WEIGHTS_FILE).unlink()
    forget_hash(package)
    return package / request.param


class WritesMarker:
    """Unpickling this runs a shell command: what a hostile weights file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_init_then_load_gives_the_same_config_and_weights(package):
    loaded = load_model_package(package)
    assert loaded.config == ModelConfig(**TINY)
    saved = load_file(package / WEIGHTS_FILE)
    assert all(torch.equal(saved[k], v) for k, v in loaded.model.state_dict().items())
    assert not loaded.model.training


def test_new_packages_store_weights_as_safetensors_not_as_a_pickle(package):
    assert sorted(p.name for p in package.iterdir()) == sorted([CARD_FILE, CONFIG_FILE, WEIGHTS_FILE])
    data = (package / WEIGHTS_FILE).read_bytes()
    header_size = int.from_bytes(data[:8], "little")  # safetensors: u64 header size, then a JSON header
    header = json.loads(data[8:8 + header_size])
    assert "error_head.weight" in header and header["__metadata__"] == {"format": "pt"}


def test_weights_are_readable_like_any_file_the_user_creates(package):
    umask = os.umask(0)
    os.umask(umask)
    assert (package / WEIGHTS_FILE).stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_legacy_weights_pt_package_still_loads_with_the_same_tensors(package, legacy_package):
    loaded = load_model_package(legacy_package)
    saved = torch.load(legacy_package / LEGACY_WEIGHTS_FILE, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in loaded.model.state_dict().items())
    assert loaded.sha256 == file_sha256(legacy_package / LEGACY_WEIGHTS_FILE)


def test_converting_a_legacy_package_keeps_tensors_names_and_dtypes(legacy_package):
    state = torch.load(legacy_package / LEGACY_WEIGHTS_FILE, weights_only=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}  # as the bundled model
    torch.save(state, legacy_package / LEGACY_WEIGHTS_FILE)
    config_before = json.loads((legacy_package / CONFIG_FILE).read_bytes())
    assert convert_weights_to_safetensors(legacy_package) == legacy_package / WEIGHTS_FILE
    converted = load_file(legacy_package / WEIGHTS_FILE)
    assert converted.keys() == state.keys()
    assert all(converted[k].dtype == v.dtype and torch.equal(converted[k], v) for k, v in state.items())
    assert not (legacy_package / LEGACY_WEIGHTS_FILE).exists()
    config_after = json.loads((legacy_package / CONFIG_FILE).read_bytes())
    assert config_after == {**config_before, "weights_sha256": file_sha256(legacy_package / WEIGHTS_FILE)}
    assert load_model_package(legacy_package).sha256 == file_sha256(legacy_package / WEIGHTS_FILE)


def test_an_interrupted_conversion_is_completed_by_converting_again(legacy_package):
    state = torch.load(legacy_package / LEGACY_WEIGHTS_FILE, weights_only=True)
    save_file(state, legacy_package / WEIGHTS_FILE)  # killed after writing the new file, before removing the old
    with pytest.raises(ModelError, match="segqc model convert"):
        load_model_package(legacy_package)
    convert_weights_to_safetensors(legacy_package)
    assert sorted(p.name for p in legacy_package.iterdir()) == sorted([CARD_FILE, CONFIG_FILE, WEIGHTS_FILE])
    load_model_package(legacy_package)


def test_conversion_removes_nothing_when_the_two_weights_files_differ(legacy_package):
    state = torch.load(legacy_package / LEGACY_WEIGHTS_FILE, weights_only=True)
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, legacy_package / WEIGHTS_FILE)
    with pytest.raises(ModelError, match="different tensors"):
        convert_weights_to_safetensors(legacy_package)
    assert (legacy_package / LEGACY_WEIGHTS_FILE).is_file() and (legacy_package / WEIGHTS_FILE).is_file()


def test_a_package_with_both_weights_files_is_refused(package):
    torch.save(load_file(package / WEIGHTS_FILE), package / LEGACY_WEIGHTS_FILE)
    with pytest.raises(ModelError, match="both weights.safetensors and weights.pt"):
        load_model_package(package)


def test_package_records_sha256_and_an_untrained_model_card(package):
    loaded = load_model_package(package)
    assert loaded.sha256 == file_sha256(package / WEIGHTS_FILE)
    assert loaded.info["sha256"] == loaded.sha256 and loaded.info["trained"] is False
    assert "untrained" in (package / CARD_FILE).read_text()


def test_same_seed_gives_identical_weights(tmp_path):
    first = init_model_package(tmp_path / "a", ModelConfig(**TINY), seed=5)
    second = init_model_package(tmp_path / "b", ModelConfig(**TINY), seed=5)
    a = load_file(first / WEIGHTS_FILE)
    b = load_file(second / WEIGHTS_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_file_inside_the_package_locates_the_package(package):
    assert load_model_package(package / CONFIG_FILE).path == package.resolve()


def test_existing_package_is_not_overwritten_by_default(package):
    with pytest.raises(ModelError, match="already exists"):
        init_model_package(package, ModelConfig(**TINY))


def test_the_hostile_payload_runs_code_when_unpickled_naively(tmp_path):
    """Control for the two refusal tests below: an unrestricted load really would execute it."""
    marker = tmp_path / "code_was_executed"
    pickle.loads(pickle.dumps(WritesMarker(marker)))
    assert marker.exists()


def test_hostile_pickle_is_refused_without_running_its_code(legacy_package, tmp_path):
    marker = tmp_path / "code_was_executed"
    torch.save({"stem.0.weight": WritesMarker(marker)}, legacy_package / LEGACY_WEIGHTS_FILE)
    with pytest.raises(ModelError, match="Refused.*Python objects"):
        load_model_package(legacy_package)
    assert not marker.exists()


def test_hostile_plain_pickle_is_refused_without_running_its_code(legacy_package, tmp_path):
    marker = tmp_path / "code_was_executed"
    with open(legacy_package / LEGACY_WEIGHTS_FILE, "wb") as stream:
        pickle.dump(WritesMarker(marker), stream, protocol=2)
    with pytest.raises(ModelError, match="[Rr]efused"):
        load_model_package(legacy_package)
    assert not marker.exists()


def test_a_pickle_named_like_safetensors_is_refused_without_running_its_code(package, tmp_path):
    forget_hash(package)
    marker = tmp_path / "code_was_executed"
    torch.save({"stem.0.weight": WritesMarker(marker)}, package / WEIGHTS_FILE)
    with pytest.raises(ModelError, match="corrupt"):
        load_model_package(package)
    assert not marker.exists()


def test_truncated_weights_are_refused(weights_file):
    data = weights_file.read_bytes()
    weights_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="corrupt or truncated"):
        load_model_package(weights_file.parent)


def test_empty_weights_file_is_refused(weights_file):
    weights_file.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_model_package(weights_file.parent)


def test_random_bytes_are_refused(weights_file):
    weights_file.write_bytes(os.urandom(4096))
    with pytest.raises(ModelError, match="corrupt"):
        load_model_package(weights_file.parent)


def test_weights_that_are_not_a_state_dict_are_refused(legacy_package):
    torch.save([torch.zeros(3)], legacy_package / LEGACY_WEIGHTS_FILE)
    with pytest.raises(ModelError, match="not a state_dict"):
        load_model_package(legacy_package)


def test_weights_of_another_architecture_are_refused(package, tmp_path):
    forget_hash(package)
    other = init_model_package(tmp_path / "other", ModelConfig(**{**TINY, "widths": [8, 16, 32]}))
    (package / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    with pytest.raises(ModelError, match="wrong shape"):
        load_model_package(package)


def test_weights_with_missing_tensors_are_refused(package):
    forget_hash(package)
    state = load_file(package / WEIGHTS_FILE)
    state.pop("error_head.weight")
    save_file(state, package / WEIGHTS_FILE)
    with pytest.raises(ModelError, match="missing tensors.*error_head.weight"):
        load_model_package(package)


def test_weights_with_nan_are_refused(package):
    forget_hash(package)
    state = load_file(package / WEIGHTS_FILE)
    state["error_head.weight"][:] = float("nan")
    save_file(state, package / WEIGHTS_FILE)
    with pytest.raises(ModelError, match="NaN"):
        load_model_package(package)


def test_empty_config_is_refused(package):
    (package / CONFIG_FILE).write_text("{}")
    with pytest.raises(ModelError, match="missing required keys.*empty"):
        load_model_package(package)


def test_config_that_is_not_json_is_refused(package):
    (package / CONFIG_FILE).write_text("widths: [1, 2]")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model_package(package)


def test_config_with_a_bad_value_is_refused(package):
    data = json.loads((package / CONFIG_FILE).read_text())
    data["widths"] = ["many"]
    (package / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="Invalid model configuration"):
        load_model_package(package)


def test_missing_package_and_missing_weights_are_reported(package, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model_package(tmp_path / "nowhere")
    (package / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelError, match="weights not found"):
        load_model_package(package)


def test_default_model_comes_from_the_environment_variable(package, monkeypatch):
    monkeypatch.setenv(model_package.MODEL_ENV, str(package))
    assert default_model_path() == package


def test_environment_variable_pointing_nowhere_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(model_package.MODEL_ENV, str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="does not exist"):
        default_model_path()


def test_without_a_bundled_model_the_message_says_how_to_pass_one(tmp_path, monkeypatch):
    monkeypatch.delenv(model_package.MODEL_ENV, raising=False)
    monkeypatch.setattr(model_files, "_repository_default_dirs", lambda: [tmp_path / "Models" / "hippocampus"])
    with pytest.raises(ModelError, match="No default QC model is installed.*--model"):
        default_model_path()


def test_bundled_model_is_found_when_installed(tmp_path, monkeypatch):
    monkeypatch.delenv(model_package.MODEL_ENV, raising=False)
    bundled = init_model_package(tmp_path / "Models" / "hippocampus", ModelConfig(**TINY))
    monkeypatch.setattr(model_files, "_repository_default_dirs", lambda: [tmp_path / "absent", bundled])
    assert default_model_path() == bundled


def test_repository_default_location_is_resources_models_hippocampus():
    candidates = model_files._repository_default_dirs()
    assert candidates[0].parts[-3:] == ("Resources", "Models", "hippocampus")
    assert candidates[0].parent.parent.parent == model_package.Path(model_package.__file__).resolve().parents[2]
