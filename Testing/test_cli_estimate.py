"""`segqc estimate` and the report contract, on a real shared case with a known error map."""

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from SegQCLib.commands.cli import main
from SegQCLib.geometry import Geometry
from SegQCLib.io.image_files import read_image, read_labelmap, write_array
from SegQCLib.quality import outputs
from SegQCLib.quality.metrics import dice, multiclass_dice

REPORT_KEYS = {"segqc_version", "slice_axis", "case", "classes", "slices", "boxes", "timing_s"}
BOX_KEYS = {"label", "slice", "bbox_zyx", "center_ras", "size_mm", "area_mm2", "score"}


@pytest.fixture()
def real_query(tmp_path, hippocampus_cases):
    """A real case whose query misses part of class 1 and over-segments class 2; Ê = true error."""
    files = hippocampus_cases[3]
    image = read_image(files.images[0])
    truth = read_labelmap(files.label)
    query = truth.array.copy()
    query[(truth.array == 1) & ~ndimage.binary_erosion(truth.array == 1, iterations=2)] = 0
    query[ndimage.binary_dilation(truth.array == 2, iterations=2) & (truth.array == 0)] = 2
    inputs = tmp_path / "inputs"
    seg_path = write_array(inputs / "query.nii.gz", query, truth.geometry)
    for label in (1, 2):
        error = ((query == label) ^ (truth.array == label)).astype(np.float32)
        write_array(inputs / f"error_prob_{label}.nii.gz", error, truth.geometry)
    return {"image": files.images[0], "seg": seg_path, "probs": inputs, "query": query, "truth": truth.array,
            "geometry": image.geometry}


def run_estimate(*args) -> int:
    return main(["estimate", *map(str, args)])


def test_report_follows_the_contract(tmp_path, real_query):
    out = tmp_path / "out"
    assert run_estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--image",
                        real_query["image"], "--out", out) == 0
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert {"dice_est", "qi"} <= set(report["case"])
    assert [c["label"] for c in report["classes"]] == [1, 2]
    scores = [s["error_score"] for s in report["slices"]]
    assert scores == sorted(scores, reverse=True)
    assert report["boxes"], "an eroded and dilated query must produce error boxes"
    assert all(BOX_KEYS <= set(box) for box in report["boxes"])
    box_scores = [b["score"] for b in report["boxes"]]
    assert box_scores == sorted(box_scores, reverse=True)


def test_estimates_from_the_true_error_map_equal_the_true_metrics(tmp_path, real_query):
    out = tmp_path / "out"
    run_estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--out", out)
    report = json.loads((out / "report.json").read_text())
    query, truth = real_query["query"], real_query["truth"]
    for entry in report["classes"]:
        assert entry["dice_est"] == pytest.approx(dice(query == entry["label"], truth == entry["label"]), abs=1e-9)
    assert report["case"]["dice_est"] == pytest.approx(multiclass_dice(query, truth, [1, 2]), abs=1e-9)


def test_error_maps_are_written_on_the_image_grid(tmp_path, real_query):
    out = tmp_path / "out"
    run_estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--image", real_query["image"],
                 "--out", out)
    for label in (1, 2):
        written = read_image(out / f"error_prob_{label}.nii.gz")
        assert written.geometry.matches(real_query["geometry"])
        assert written.array.dtype == np.float32 and written.array.max() <= 1.0


def test_output_folder_may_be_the_input_folder(real_query):
    folder = real_query["probs"]
    assert run_estimate("--seg", real_query["seg"], "--error-prob", folder, "--out", folder) == 0
    assert (folder / "report.json").exists()
    assert read_image(folder / "error_prob_1.nii.gz").array.max() == 1.0


def test_error_maps_can_be_given_as_files(tmp_path, real_query):
    files = [real_query["probs"] / f"error_prob_{label}.nii.gz" for label in (1, 2)]
    assert run_estimate("--seg", real_query["seg"], "--error-prob", *files, "--out", tmp_path / "o") == 0


def test_a_class_without_an_error_map_is_a_clear_error(tmp_path, real_query, capsys):
    only_one = real_query["probs"] / "error_prob_1.nii.gz"
    assert run_estimate("--seg", real_query["seg"], "--error-prob", only_one, "--out", tmp_path / "o") == 1
    assert "labels [2] without an error probability map" in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.json").exists()


def test_values_outside_zero_one_are_refused(tmp_path, real_query, capsys):
    logits = real_query["probs"] / "error_prob_1.nii.gz"
    volume = read_image(logits)
    write_array(logits, volume.array * 8.0 - 4.0, volume.geometry)
    assert run_estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--out", tmp_path / "o") == 1
    assert "expected probabilities in [0, 1]" in capsys.readouterr().err


def test_a_segmentation_on_another_grid_is_refused_unless_resampling_is_asked_for(tmp_path, real_query, capsys):
    geometry: Geometry = real_query["geometry"]
    shifted = Geometry(geometry.shape_zyx, geometry.spacing_xyz_mm,
                       tuple(np.add(geometry.origin_lps_mm, (0.0, 0.0, 2.0))), geometry.direction)
    seg = write_array(tmp_path / "shifted.nii.gz", real_query["query"], shifted)
    args = ["--seg", seg, "--error-prob", real_query["probs"], "--image", real_query["image"], "--out", tmp_path / "o"]
    assert run_estimate(*args) == 1
    assert "does not share the image's voxel grid" in capsys.readouterr().err
    assert run_estimate(*args, "--resample-seg") == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert any("resampled" in notice for notice in report["notices"])


def test_error_maps_off_the_segmentation_grid_get_advice_that_works(tmp_path, real_query, capsys):
    geometry: Geometry = real_query["geometry"]
    shifted = Geometry(geometry.shape_zyx, geometry.spacing_xyz_mm,
                       tuple(np.add(geometry.origin_lps_mm, (0.0, 0.0, 2.0))), geometry.direction)
    seg = write_array(tmp_path / "shifted.nii.gz", real_query["query"], shifted)
    args = ["--seg", seg, "--error-prob", real_query["probs"], "--out", tmp_path / "o"]
    assert run_estimate(*args) == 1
    message = capsys.readouterr().err
    assert "is not on the segmentation's voxel grid" in message and "--image" in message
    assert run_estimate(*args, "--image", real_query["image"], "--resample-seg") == 0


def test_error_maps_in_metaimage_files_are_read(tmp_path, real_query):
    folder = tmp_path / "mhd"
    folder.mkdir()
    for label in (1, 2):  # header + data file, as other tools write them
        image = sitk.ReadImage(str(real_query["probs"] / f"error_prob_{label}.nii.gz"))
        sitk.WriteImage(image, str(folder / f"error_prob_{label}.mhd"))
    assert run_estimate("--seg", real_query["seg"], "--error-prob", folder, "--out", tmp_path / "o") == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert [c["label"] for c in report["classes"]] == [1, 2]


def test_a_failed_rewrite_leaves_the_earlier_report_and_maps_as_they_were(tmp_path, real_query, monkeypatch):
    out = tmp_path / "o"
    args = ["--seg", real_query["seg"], "--error-prob", real_query["probs"], "--out", out]
    assert run_estimate(*args) == 0
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    real_write = outputs.write_probability_map

    def disk_full_at_the_second_map(path, *rest, **kwargs):
        if path.name.startswith("error_prob_2"):
            raise OSError("No space left on device")
        return real_write(path, *rest, **kwargs)

    monkeypatch.setattr(outputs, "write_probability_map", disk_full_at_the_second_map)
    assert run_estimate(*args, "--threshold", "0.7") == 1
    # Nothing half-replaced: the earlier report still vouches for the earlier maps, and no staging is left.
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier


def test_an_output_path_that_is_a_file_is_a_clear_error(tmp_path, real_query, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    assert run_estimate("--seg", real_query["seg"], "--error-prob", real_query["probs"], "--out", taken) == 1
    message = capsys.readouterr().err
    assert "segqc: error:" in message and "taken" in message and "Traceback" not in message
    assert taken.read_text() == "not a folder"


def test_a_missing_segmentation_file_is_a_clear_error(tmp_path, real_query, capsys):
    assert run_estimate("--seg", tmp_path / "nope.nii.gz", "--error-prob", real_query["probs"], "--out", tmp_path) == 1
    assert "not found" in capsys.readouterr().err


def test_the_segqc_command_runs_as_a_module(tmp_path, real_query):
    completed = subprocess.run(
        [sys.executable, "-m", "SegQCLib.commands.cli", "estimate", "--seg", str(real_query["seg"]), "--error-prob",
         str(real_query["probs"]), "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "estimated Dice" in completed.stdout


def test_estimate_works_without_torch_installed(tmp_path, real_query):
    # torch is an optional dependency: the post-processing of external error maps must not need it.
    code = ("import sys; sys.modules['torch'] = None; from SegQCLib.commands.cli import main; "
            f"sys.exit(main(['estimate', '--seg', {str(real_query['seg'])!r}, '--error-prob', "
            f"{str(real_query['probs'])!r}, '--out', {str(tmp_path / 'o')!r}]))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "o" / "report.json").exists()
