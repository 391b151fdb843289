"""No silent wrong answer and no rough edge at the command line: every mistake a new user makes gets a message
that says what is wrong, and options say what they default to.  Small synthetic files and a small random model."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SegQCLib.commands.cli import COMMAND_MODULES, build_parser, main
from SegQCLib.engine import QCEngine
from SegQCLib.io.case import load_case
from SegQCLib.network.config import CONFIG_FILE, ModelConfig
from SegQCLib.network.package import init_model_package

SMALL_MODEL = dict(widths=[4, 8], blocks_per_stage=[1, 1], strides=[[2, 2, 2], [2, 2, 2]], decoder_from_stage=1,
                   full_res_width=4, case_head_hidden=8, patch_size_zyx=[16, 16, 16])
EXIT_FAILURE, EXIT_USAGE = 1, 2


def write(path: Path, array: np.ndarray) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


@pytest.fixture()
def case(tmp_path) -> dict[str, Path]:
    seg = np.zeros((12, 20, 20), np.uint8)
    seg[3:9, 5:10, 5:15] = 1
    seg[3:9, 10:15, 5:15] = 2
    image = (np.random.default_rng(0).normal(100, 10, seg.shape) + 30 * seg).astype(np.float32)
    return {"image": write(tmp_path / "image.nii.gz", image), "seg": write(tmp_path / "seg.nii.gz", seg)}


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    return init_model_package(tmp_path_factory.mktemp("model") / "small", ModelConfig(**SMALL_MODEL))


# --- segqc estimate ------------------------------------------------------------------------------------
def test_a_nan_error_map_is_an_error_not_a_perfect_score(tmp_path, case, capsys):
    maps = tmp_path / "maps"
    maps.mkdir()
    for label in (1, 2):
        write(maps / f"error_prob_{label}.nii.gz", np.full((12, 20, 20), np.nan, np.float32))
    code = main(["estimate", "--seg", str(case["seg"]), "--error-prob", str(maps), "--out", str(tmp_path / "out")])
    assert code == EXIT_FAILURE and "NaN or infinite" in capsys.readouterr().err
    assert not (tmp_path / "out" / "report.json").exists()


def test_an_error_prob_path_that_does_not_exist_is_not_found(tmp_path, case, capsys):
    code = main(["estimate", "--seg", str(case["seg"]), "--error-prob", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "out")])
    assert code == EXIT_FAILURE and "not found" in capsys.readouterr().err


def test_estimate_names_error_maps_of_classes_the_segmentation_lacks(tmp_path, case):
    maps = tmp_path / "maps"
    maps.mkdir()
    for label in (1, 2, 3):
        write(maps / f"error_prob_{label}.nii.gz", np.zeros((12, 20, 20), np.float32))
    assert main(["estimate", "--seg", str(case["seg"]), "--error-prob", str(maps), "--out", str(tmp_path / "o")]) == 0
    notices = json.loads((tmp_path / "o" / "report.json").read_text())["notices"]
    assert any("label(s) 3" in notice for notice in notices)


# --- inputs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["run"], ["estimate", "--error-prob", "x"], ["rank"]])
def test_an_out_that_is_a_file_must_be_a_folder(tmp_path, case, capsys, command):
    (tmp_path / "taken").write_text("a file")
    inputs = {"run": ["--image", str(case["image"]), "--seg", str(case["seg"])],
              "estimate": ["--seg", str(case["seg"])],
              "rank": ["--images", str(tmp_path), "--segs", str(tmp_path)]}[command[0]]
    code = main([*command, *inputs, "--out", str(tmp_path / "taken")])
    assert code == EXIT_FAILURE and "--out must be a folder" in capsys.readouterr().err


def test_a_segmentation_that_looks_like_an_image_suggests_swapped_arguments(tmp_path, case, capsys):
    image = np.random.default_rng(1).integers(0, 1000, (12, 20, 20)).astype(np.int16)
    swapped = write(tmp_path / "image_as_seg.nii.gz", image)
    code = main(["estimate", "--seg", str(swapped), "--error-prob", str(tmp_path), "--out", str(tmp_path / "o")])
    message = capsys.readouterr().err
    assert code == EXIT_FAILURE and "different label values" in message and "swapped" in message


def test_label_values_the_model_does_not_know_are_named_and_ignored(tmp_path, case, small_model):
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(case["seg"])))
    seg[seg == 2] = 5
    result = QCEngine(small_model, "cpu").run_case(load_case([case["image"]], write(tmp_path / "s.nii.gz", seg)))
    assert any("label value(s) 5" in notice and "ignored" in notice for notice in result.report.notices)
    assert any("2 (posterior) is missing" in notice for notice in result.report.notices)
    assert [c.label for c in result.report.classes] == [1, 2]


# --- models --------------------------------------------------------------------------------------------
def test_model_init_over_an_existing_folder_names_force(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    assert main(["model", "init", "--out", str(tmp_path / "model")]) == EXIT_FAILURE
    assert "--force" in capsys.readouterr().err


def test_model_init_refuses_unknown_configuration_keys(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"widhts": [4, 8]}))
    assert main(["model", "init", "--out", str(tmp_path / "model"), "--config", str(config)]) == EXIT_FAILURE
    assert "unknown key(s) widhts" in capsys.readouterr().err


def test_a_package_with_keys_from_a_newer_segqc_loads_and_every_report_says_so(tmp_path, case):
    package = init_model_package(tmp_path / "model", ModelConfig(**SMALL_MODEL))
    config = json.loads((package / CONFIG_FILE).read_text())
    (package / CONFIG_FILE).write_text(json.dumps({**config, "future_setting": 1}))
    report = QCEngine(package, "cpu").run_case(load_case([case["image"]], case["seg"])).report
    assert any("future_setting" in notice and "no effect" in notice for notice in report.notices)


def test_a_package_without_a_domain_profile_says_no_domain_check_was_possible(case, small_model):
    report = QCEngine(small_model, "cpu").run_case(load_case([case["image"]], case["seg"])).report
    assert report.domain.checked is False and report.domain.in_domain is None
    assert any("no domain profile" in notice for notice in report.notices)


def test_strict_refuses_when_the_model_has_no_domain_profile_and_writes_nothing(tmp_path, case, small_model, capsys):
    code = main(["run", "--image", str(case["image"]), "--seg", str(case["seg"]), "--out", str(tmp_path / "o"),
                 "--model", str(small_model), "--strict", "--progress", "none"])
    assert code == EXIT_FAILURE and "segqc model profile" in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.json").exists()


# --- options ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arguments", [
    ["rank", "--manifest", "m.csv", "--out", "o", "--thumbnails", "-1"],
    ["rank", "--manifest", "m.csv", "--out", "o", "--workers", "0"],
    ["run", "--manifest", "m.csv", "--out", "o", "--overlap", "1.5"],
    ["run", "--manifest", "m.csv", "--out", "o", "--threads", "0"],
    ["estimate", "--seg", "s", "--error-prob", "e", "--out", "o", "--threshold", "1.5"],
    ["estimate", "--seg", "s", "--error-prob", "e", "--out", "o", "--band-width-px", "-2"],
])
def test_every_out_of_range_option_is_a_usage_error_with_the_same_exit_code(arguments, capsys):
    assert main(arguments) == EXIT_USAGE
    option = next(a for a in arguments if a.startswith("--") and a not in ("--manifest", "--out", "--seg",
                                                                           "--error-prob"))
    assert f"argument {option}" in capsys.readouterr().err


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_help_texts_have_no_rest_markup_or_file_references():
    texts = [p.description or "" for p in _parsers(build_parser())]
    texts += [a.help or "" for p in _parsers(build_parser()) for a in p._actions]
    assert [t for t in texts if "``" in t or ".py" in t or ":func:" in t] == []


def test_every_option_with_a_default_states_it():
    silent = [f"{p.prog} {a.option_strings[0]}" for p in _parsers(build_parser()) for a in p._actions
              if a.option_strings and a.default not in (None, False, argparse.SUPPRESS) and not a.required
              and "default" not in (a.help or "")]
    assert silent == []


def test_top_level_help_imports_no_command_module():
    script = ("import sys; from SegQCLib.commands.cli import main; main(['--help']); "
              f"print([m for m in {list(COMMAND_MODULES)!r} + ['torch', 'numpy'] if m in sys.modules])")
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert output.strip().splitlines()[-1] == "[]"


def test_the_model_commands_help_names_the_same_weights_files_as_the_packages():
    from SegQCLib.commands import model as model_command
    from SegQCLib.network import package

    assert (model_command.WEIGHTS_FILE, model_command.LEGACY_WEIGHTS_FILE) == package.WEIGHTS_FILES
