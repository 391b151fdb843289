"""Exports of the corrections store load back file by file: nnU-Net v2 raw dataset, MONAI datalist, QC data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from SegQCLib.commands.cli import main as segqc_main
from SegQCLib.corrections.export import ExportFormat, export_store, load_qc_dataset
from SegQCLib.corrections.export_metadata import group_folds, nnunet_splits
from SegQCLib.corrections.store import CorrectionStore
from SegQCLib.errors import InputError
from SegQCLib.geometry import Geometry
from SegQCLib.io.datasets import list_nnunet_cases
from SegQCLib.io.image_files import read_image, read_labelmap
from SegQCLib.io.volumes import LabelMap, Volume
from SegQCLib.network.config import ModelConfig
from SegQCLib.network.package import init_model_package


def weak(truth: LabelMap, drop_label: int) -> LabelMap:
    array = truth.array.copy()
    array[array == drop_label] = 0
    return LabelMap(array, truth.geometry)


@pytest.fixture()
def real_store(tmp_path, hippocampus_sample) -> tuple[CorrectionStore, dict[str, tuple[Volume, LabelMap, LabelMap]]]:
    """Three real cases; the first recorded twice (the newer version drops class 1 instead of class 2)."""
    store = CorrectionStore(tmp_path / "store")
    expected = {}
    for index, (case_id, image, truth) in enumerate(hippocampus_sample[:3]):
        truth.names = {1: "anterior", 2: "posterior"}
        original = weak(truth, 2)
        store.add(case_id, [image], original, truth, reviewer="r1")
        if index == 0:
            original = weak(truth, 1)
            store.add(case_id, [image], original, truth, reviewer="r2")
        expected[case_id] = (image, original, truth)
    return store, expected


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_nnunet_export_is_a_complete_v2_raw_dataset(tmp_path, real_store):
    store, expected = real_store
    out = tmp_path / "Dataset500_Corrections"
    export_store(store, "nnunet", out, channel_names=["MRI"])

    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "imagesTr", "labelsTr", "segqc_export.json",
                                                     "splits_final.json"]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == sorted(f"{c}_0000.nii.gz" for c in expected)
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == sorted(f"{c}.nii.gz" for c in expected)
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "MRI"}
    assert dataset["labels"] == {"background": 0, "anterior": 1, "posterior": 2}
    assert dataset["numTraining"] == 3 and dataset["file_ending"] == ".nii.gz"
    latest = {r.case_id: r for r in store.latest()}
    for case_id, (image, _, truth) in expected.items():
        exported_image = read_image(out / "imagesTr" / f"{case_id}_0000.nii.gz")
        exported_label = read_labelmap(out / "labelsTr" / f"{case_id}.nii.gz")
        np.testing.assert_array_equal(exported_image.array, image.array)
        np.testing.assert_array_equal(exported_label.array, truth.array)
        assert exported_label.geometry.matches(exported_image.geometry)
        assert sha256(out / "labelsTr" / f"{case_id}.nii.gz") == sha256(latest[case_id].corrected_path)
    listed = list_nnunet_cases(out)
    assert [c.case_id for c in listed] == sorted(expected)
    provenance = json.loads((out / "segqc_export.json").read_text())
    first = sorted(expected)[0]
    assert {c["case"]: c["record_id"] for c in provenance["cases"]}[first] == f"{first}/v0002"


def test_all_versions_export_names_each_version(tmp_path, real_store):
    store, expected = real_store
    result = export_store(store, ExportFormat.NNUNET, tmp_path / "all", all_versions=True, channel_names=["T1"])
    first = sorted(expected)[0]
    names = sorted(p.name for p in (tmp_path / "all" / "labelsTr").iterdir())
    assert f"{first}_v0001.nii.gz" in names and f"{first}_v0002.nii.gz" in names
    assert len(result.cases) == 4
    assert json.loads((tmp_path / "all" / "dataset.json").read_text())["numTraining"] == 4


def test_monai_datalist_points_at_files_that_load(tmp_path, real_store):
    store, expected = real_store
    out = tmp_path / "monai"
    export_store(store, "monai", out, channel_names=["T1"])
    datalist = json.loads((out / "datalist.json").read_text())
    assert len(datalist["training"]) == len(expected)
    for entry in datalist["training"]:
        case_id = Path(entry["label"]).name.removesuffix(".nii.gz")
        image, _, truth = expected[case_id]
        np.testing.assert_array_equal(read_image(out / entry["image"]).array, image.array)
        np.testing.assert_array_equal(read_labelmap(out / entry["label"]).array, truth.array)
    assert datalist["labels"] == {"0": "background", "1": "anterior", "2": "posterior"}


def test_qc_export_holds_query_truth_and_error_maps(tmp_path, real_store):
    store, expected = real_store
    out = tmp_path / "qc"
    export_store(store, "qc", out)
    cases = load_qc_dataset(out)
    assert sorted(c.case_id for c in cases) == sorted(expected)
    for case in cases:
        image, original, truth = expected[case.case_id]
        np.testing.assert_array_equal(read_image(case.images[0]).array, image.array)
        np.testing.assert_array_equal(read_labelmap(case.query).array, original.array)
        np.testing.assert_array_equal(read_labelmap(case.truth).array, truth.array)
        assert sorted(case.errors) == [1, 2]
        for label, path in case.errors.items():
            np.testing.assert_array_equal(read_labelmap(path).array.astype(bool),
                                          (original.array == label) ^ (truth.array == label))
        assert 0.0 <= case.true_metrics["dice"] < 1.0
    assert [c.case_id for c in list_nnunet_cases(out)] == sorted(expected)  # image + truth, nnU-Net naming


def test_multichannel_records_export_every_channel_in_order(tmp_path):
    geometry = Geometry((4, 8, 8), (1.0, 1.0, 3.0))
    channels = [Volume(np.full((4, 8, 8), value, np.float32), geometry) for value in (1.0, 2.0)]
    truth = np.zeros((4, 8, 8), np.uint8)
    truth[1:3, 2:6, 2:6] = 3  # labels need not start at 1: nnU-Net still gets 0..3
    store = CorrectionStore(tmp_path / "s")
    store.add("mc", channels, LabelMap(np.zeros_like(truth), geometry), LabelMap(truth, geometry))
    export_store(store, "monai", tmp_path / "m", channel_names=["T1", "T2"])
    entry = json.loads((tmp_path / "m" / "datalist.json").read_text())["training"][0]
    assert entry["image"] == ["imagesTr/mc_0000.nii.gz", "imagesTr/mc_0001.nii.gz"]
    assert [read_image(tmp_path / "m" / p).array.max() for p in entry["image"]] == [1.0, 2.0]
    export_store(store, "nnunet", tmp_path / "n", channel_names=["T1", "T2"])
    dataset = json.loads((tmp_path / "n" / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "T1", "1": "T2"}
    assert list(dataset["labels"].values()) == [0, 1, 2, 3]


def test_export_refuses_a_non_empty_folder(tmp_path, real_store):
    store, _ = real_store
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export_store(store, "nnunet", tmp_path / "busy")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]


def test_a_damaged_record_stops_the_export_before_anything_is_written(tmp_path, real_store):
    store, _ = real_store
    victim = store.latest()[-1]
    victim.corrected_path.write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="damaged"):
        export_store(store, "nnunet", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_cli_export(tmp_path, real_store, capsys):
    store, expected = real_store
    out = tmp_path / "cli"
    assert segqc_main(["corrections", "export", "--store", str(store.root), "--format", "qc", "--out", str(out)]) == 0
    assert f"exported {len(expected)} case(s)" in capsys.readouterr().out
    assert len(load_qc_dataset(out)) == len(expected)


def tiny_qc_model(folder: Path, modalities: list[str], classes: dict[int, str]) -> Path:
    config = ModelConfig(widths=[4, 8], blocks_per_stage=[1, 1], strides=[[2, 2, 2], [2, 2, 2]], decoder_from_stage=1,
                         full_res_width=4, case_head_hidden=8, patch_size_zyx=[16, 16, 16], modalities=modalities,
                         classes=classes)
    return init_model_package(folder, config)


def test_nnunet_and_monai_exports_refuse_unnamed_channels(tmp_path, real_store, capsys):
    store, _ = real_store
    for export_format in ("nnunet", "monai"):
        with pytest.raises(InputError, match="--channel-names .*CT statistics"):
            export_store(store, export_format, tmp_path / export_format)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    assert segqc_main(["corrections", "export", "--store", str(store.root), "--format", "nnunet",
                       "--out", str(tmp_path / "cli")]) == 1
    assert "--channel-names" in capsys.readouterr().err


def test_channel_and_label_names_come_from_the_qc_model(tmp_path, real_store):
    store, _ = real_store
    model = tiny_qc_model(tmp_path / "ct_model", ["ct"], {1: "head", 2: "tail"})
    result = export_store(store, "nnunet", tmp_path / "Dataset501_CT", model=model)
    dataset = json.loads((tmp_path / "Dataset501_CT" / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT"}  # nnU-Net's spelling for CT normalisation
    assert dataset["labels"] == {"background": 0, "head": 1, "tail": 2}
    assert result.notices == []


def test_channel_names_default_to_the_qc_model_named_in_the_records_qc_report(tmp_path, hippocampus_sample):
    model = tiny_qc_model(tmp_path / "model", ["T1"], {1: "anterior", 2: "posterior"})
    case_id, image, truth = hippocampus_sample[0]
    store = CorrectionStore(tmp_path / "store")
    report = {"model": {"name": "tiny", "path": str(model)}, "classes": [{"label": 1, "name": "anterior"}]}
    store.add(case_id, [image], weak(truth, 2), truth, qc_report=report)  # a NIfTI mask: no segment names
    export_store(store, "monai", tmp_path / "m")
    datalist = json.loads((tmp_path / "m" / "datalist.json").read_text())
    assert datalist["modality"] == {"0": "T1"}
    assert datalist["labels"] == {"0": "background", "1": "anterior", "2": "posterior"}


def test_labels_nothing_names_are_exported_as_placeholders_with_a_notice(tmp_path):
    geometry = Geometry((4, 8, 8))
    truth = np.zeros((4, 8, 8), np.uint8)
    truth[1:3, 2:6, 2:6] = 1
    store = CorrectionStore(tmp_path / "s")
    store.add("c", [Volume(np.ones((4, 8, 8), np.float32), geometry)], LabelMap(np.zeros_like(truth), geometry),
              LabelMap(truth, geometry))
    result = export_store(store, "nnunet", tmp_path / "Dataset502_X", channel_names=["MR"])
    assert result.labels == {"background": 0, "label_1": 1}
    assert any("no name" in n and "--model" in n for n in result.notices)
    provenance = json.loads((tmp_path / "Dataset502_X" / "segqc_export.json").read_text())
    assert provenance["notices"] == result.notices


def test_every_version_of_a_case_lands_in_the_same_fold(tmp_path, real_store):
    store, expected = real_store
    export_store(store, "nnunet", tmp_path / "Dataset503_All", all_versions=True, channel_names=["T1"])
    splits = json.loads((tmp_path / "Dataset503_All" / "splits_final.json").read_text())
    first = sorted(expected)[0]
    versions = {f"{first}_v0001", f"{first}_v0002"}
    all_cases = {p.name.removesuffix(".nii.gz") for p in (tmp_path / "Dataset503_All" / "labelsTr").iterdir()}
    assert len(splits) == len(expected)  # fewer patients than nnU-Net's 5 folds: one fold per patient
    for split in splits:
        assert set(split["train"]) | set(split["val"]) == all_cases
        assert not set(split["train"]) & set(split["val"])
        assert versions <= set(split["train"]) or versions <= set(split["val"])
    assert sorted(n for split in splits for n in split["val"]) == sorted(all_cases)


def test_folds_keep_patients_together_and_balanced():
    cases = [(f"p{p}_v{v}", f"p{p}") for p in range(7) for v in range(1 + p % 3)]
    folds = group_folds(cases)
    assert set(folds.values()) == set(range(5))
    for name, key in cases:
        assert folds[name] == folds[f"{key}_v0"]
    sizes = [list(folds.values()).count(f) for f in range(5)]
    assert max(sizes) - min(sizes) <= 2
    assert nnunet_splits({"a": 0}) == [{"train": ["a"], "val": ["a"]}]


def test_a_folder_not_named_for_nnunet_gets_a_notice(tmp_path, real_store):
    store, _ = real_store
    result = export_store(store, "nnunet", tmp_path / "corrections", channel_names=["T1"])
    assert any("DatasetXXX_Name" in n for n in result.notices)
