"""The exports load with the real tools: nnU-Net v2's dataset integrity check and normalisation choice, MONAI's
datalist loader and image loader (installed by the test extra, with torch pinned by constraints.txt)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SegQCLib.corrections.export import export_store
from SegQCLib.corrections.store import CorrectionStore
from SegQCLib.io.image_files import read_image, read_labelmap
from SegQCLib.io.volumes import LabelMap


@pytest.fixture(scope="module")
def store_with_versions(tmp_path_factory, hippocampus_sample) -> CorrectionStore:
    """Three real cases, the first corrected twice (two versions of one patient)."""
    store = CorrectionStore(tmp_path_factory.mktemp("loaders") / "store")
    for index, (case_id, image, truth) in enumerate(hippocampus_sample[:3]):
        named = LabelMap(truth.array, truth.geometry, {1: "anterior", 2: "posterior"})
        versions = 2 if index == 0 else 1
        for version in range(versions):
            original = truth.array.copy()
            original[original == 2 - version] = 0
            store.add(case_id, [image], LabelMap(original, truth.geometry), named, reviewer=f"r{version}")
    return store


def test_nnunet_accepts_the_export_and_normalises_a_ct_channel_as_ct(tmp_path, store_with_versions):
    integrity = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity",
                                    reason="nnunetv2 not installed (pip install -c constraints.txt -e '.[test]')")
    normalization = pytest.importorskip("nnunetv2.preprocessing.normalization.map_channel_name_to_normalization")
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization, ZScoreNormalization

    out = tmp_path / "Dataset777_SegQCCorrections"
    result = export_store(store_with_versions, "nnunet", out, all_versions=True, channel_names=["CT"])
    integrity.verify_dataset_integrity(str(out), num_processes=1)  # raises on any problem
    dataset = json.loads((out / "dataset.json").read_text())
    assert [normalization.get_normalization_scheme(n) for n in dataset["channel_names"].values()] == [CTNormalization]
    assert normalization.get_normalization_scheme("channel_0") is ZScoreNormalization  # the old default name
    splits = json.loads((out / "splits_final.json").read_text())
    assert sorted(n for s in splits for n in s["val"]) == sorted(c.case for c in result.cases)


def test_monai_loads_the_datalist_and_its_images(tmp_path, store_with_versions):
    data = pytest.importorskip("monai.data", reason="monai not installed (pip install -c constraints.txt -e '.[test]')")
    from monai.transforms import LoadImaged

    out = tmp_path / "monai"
    export_store(store_with_versions, "monai", out, all_versions=True, channel_names=["T1"])
    entries = data.load_decathlon_datalist(str(out / "datalist.json"), is_segmentation=True, data_list_key="training",
                                           base_dir=str(out))
    assert len(entries) == 4 and sorted({e["fold"] for e in entries}) == [0, 1, 2]
    loader = LoadImaged(keys=["image", "label"], image_only=True)
    for entry in entries:
        loaded = loader(entry)
        ours_image, ours_label = read_image(entry["image"]), read_labelmap(entry["label"])
        # MONAI (nibabel) arrays are (x, y, z); SegQC's are (z, y, x).
        np.testing.assert_allclose(np.asarray(loaded["image"]).transpose(2, 1, 0), ours_image.array)
        np.testing.assert_array_equal(np.asarray(loaded["label"]).transpose(2, 1, 0), ours_label.array)
