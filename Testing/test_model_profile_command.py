"""``segqc model profile``: a package gets its domain profile from the training cases of a dataset folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SegQCLib.commands.cli import main
from SegQCLib.network.config import ModelConfig
from SegQCLib.network.domain import DOMAIN_FILE, read_domain_profile
from SegQCLib.network.package import init_model_package, load_model_package

SMALL_MODEL = dict(widths=[4, 8], blocks_per_stage=[1, 1], strides=[[2, 2, 2], [2, 2, 2]], decoder_from_stage=1,
                   full_res_width=4, case_head_hidden=8, patch_size_zyx=[16, 16, 16])
CASES = ("case_a", "case_b", "case_c")


@pytest.fixture()
def dataset(tmp_path) -> Path:
    """An nnU-Net raw folder of three small cases of growing structure size."""
    root = tmp_path / "data"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for size, case in enumerate(CASES, start=3):
        labels = np.zeros((12, 20, 20), np.uint8)
        labels[3:9, 5:5 + size, 5:15] = 1
        labels[3:9, 5 + size:5 + 2 * size, 5:15] = 2
        image = (rng.normal(100, 10, labels.shape) + 30 * labels).astype(np.float32)
        sitk.WriteImage(sitk.GetImageFromArray(image), str(root / "imagesTr" / f"{case}_0000.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(labels), str(root / "labelsTr" / f"{case}.nii.gz"))
    return root


@pytest.fixture()
def package(tmp_path) -> Path:
    return init_model_package(tmp_path / "model", ModelConfig(**SMALL_MODEL))


def test_profile_writes_domain_json_from_every_case_of_the_folder(package, dataset):
    assert main(["model", "profile", str(package), "--data", str(dataset)]) == 0
    profile = read_domain_profile(package)
    assert profile.cases == len(CASES) and profile.uncertainty is not None and profile.uncertainty.cases == 3
    assert load_model_package(package).domain == profile


def test_profile_of_one_subset_of_a_split_uses_only_its_cases(tmp_path, package, dataset, capsys):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["case_a", "case_b"], "validation": ["case_c"]}))
    assert main(["model", "profile", str(package), "--data", str(dataset), "--split", str(split),
                 "--subset", "train", "--no-uncertainty"]) == 0
    profile = read_domain_profile(package)
    assert profile.cases == 2 and profile.uncertainty is None and "'train'" in profile.source
    assert profile.classes[1].volume_mm3.max == 6 * 4 * 10  # case_b's class 1; case_c (6x5x10) left out
    assert main(["model", "info", str(package)]) == 0
    assert "domain profile: 2 training cases" in capsys.readouterr().out


def test_a_subset_the_split_does_not_have_is_named(tmp_path, package, dataset, capsys):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["case_a"]}))
    assert main(["model", "profile", str(package), "--data", str(dataset), "--split", str(split),
                 "--subset", "training", "--no-uncertainty"]) == 1
    assert "'training'" in capsys.readouterr().err and not (package / DOMAIN_FILE).exists()
