"""``python -m training.finetune`` continues training a QC model on recorded corrections of real cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from SegQCLib.corrections.export import export_store
from SegQCLib.corrections.store import CorrectionStore
from SegQCLib.engine import QCEngine
from SegQCLib.io.case import load_case
from SegQCLib.io.volumes import LabelMap
from SegQCLib.network.config import ModelConfig
from SegQCLib.network.package import init_model_package, load_model_package
from training.finetune import FinetuneSettings, finetune, load_corrections, main, split_by_case

SMALL_MODEL = dict(widths=[4, 8], blocks_per_stage=[1, 1], strides=[[2, 2, 2], [2, 2, 2]], decoder_from_stage=1,
                   full_res_width=4, case_head_hidden=8, patch_size_zyx=[32, 32, 32])


def weak(truth: LabelMap, case_index: int) -> LabelMap:
    """What a weak segmenter gets wrong: one class shrunk or missed, depending on the case."""
    array = truth.array.copy()
    if case_index % 2:
        array[array == 2] = 0
    else:
        array[np.roll(truth.array == 1, 2, axis=1) & (truth.array == 1)] = 0
    return LabelMap(array, truth.geometry)


@pytest.fixture(scope="module")
def store(tmp_path_factory, hippocampus_sample) -> CorrectionStore:
    store = CorrectionStore(tmp_path_factory.mktemp("corrections") / "store")
    for index, (case_id, image, truth) in enumerate(hippocampus_sample[:4]):
        store.add(case_id, [image], weak(truth, index), truth, reviewer="simulated annotator (ground truth)")
    first_id, first_image, first_truth = hippocampus_sample[0]
    store.add(first_id, [first_image], weak(first_truth, 1), first_truth)  # a second version of one case
    return store


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return init_model_package(tmp_path_factory.mktemp("model") / "base", ModelConfig(**SMALL_MODEL), seed=0)


def test_corrections_become_examples_with_query_truth_and_spacing(store):
    examples = load_corrections(store.root, [1, 2], [1.0, 1.0, 1.0], all_versions=True)
    assert len(examples) == 5
    for example in examples:
        record = store.load(example.record_id)
        np.testing.assert_array_equal(example.bank_case.queries[0], record.read_original().array)
        np.testing.assert_array_equal(example.bank_case.truth, record.read_corrected().array)


def test_records_at_another_spacing_are_resampled_to_the_model_grid(store):
    example = load_corrections(store.root, [1, 2], [2.0, 2.0, 2.0])[0]
    record = store.load(example.record_id)
    original_shape = np.array(record.read_corrected().array.shape)
    assert np.all(np.abs(np.array(example.bank_case.truth.shape) - original_shape / 2) <= 1)
    assert example.bank_case.spacing_zyx_mm == (2.0, 2.0, 2.0)


def test_held_out_corrections_are_whole_cases(store):
    examples = load_corrections(store.root, [1, 2], None, all_versions=True)
    train, heldout = split_by_case(examples, 0.3, seed=0)
    assert train and heldout
    assert not {e.case_id for e in train} & {e.case_id for e in heldout}
    assert len(train) + len(heldout) == len(examples)


def test_finetuning_writes_a_package_with_before_and_after_figures(tmp_path, store, base_model):
    threads = torch.get_num_threads()
    out = tmp_path / "finetuned"
    result = finetune(store.root, base_model, out, FinetuneSettings(iterations=4, batch_size=2, threads=1))
    torch.set_num_threads(threads)
    package = load_model_package(out)
    assert package.config.trained and package.config.version.endswith("+ft3")
    assert package.config.validation_metrics["base_sha256"] == load_model_package(base_model).sha256
    assert set(result.before) == set(result.after) == {"heldout_corrections", "train_corrections"}
    assert result.before["heldout_corrections"]["queries"] == len(result.heldout_cases)
    assert "Before → after" in package.card and result.heldout_cases[0] in package.card
    base_weights = load_model_package(base_model).model.state_dict()
    assert any(not torch.equal(v, base_weights[k]) for k, v in package.model.state_dict().items())
    summary = json.loads((tmp_path / "finetuned.finetune.json").read_text())
    assert summary["iterations"] == 4 and summary["heldout_cases"] == result.heldout_cases
    case = load_case(store.load(store.latest()[0].record_id).image_paths, store.latest()[0].corrected_path)
    assert QCEngine(out, "cpu").run_case(case).report.case.dice_pred is not None  # the engine runs it


def test_finetune_command_reads_a_qc_export(tmp_path, store, base_model, capsys):
    export_store(store, "qc", tmp_path / "qc")
    threads = torch.get_num_threads()
    code = main(["--corrections", str(tmp_path / "qc"), "--model", str(base_model), "--out", str(tmp_path / "m2"),
                 "--iterations", "2", "--batch-size", "2", "--threads", "1"])
    torch.set_num_threads(threads)
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["before"]["heldout_corrections"]["queries"] >= 1
