"""Bad image files get the same clear refusal in every format (NIfTI, NRRD, MHA), before anything is allocated:
NaN/Inf values, empty axes, sheared or singular directions, truncated data, headers that promise more voxels than
the file or the memory hold, and paths that are not regular files."""

from __future__ import annotations

import gzip
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SegQCLib.errors import InputError
from SegQCLib.geometry import Geometry
from SegQCLib.io.image_files import read_image, read_labelmap, write_array

FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha"]
SHAPE_ZYX = (5, 6, 7)


def write_sitk(path: Path, array: np.ndarray, direction=None) -> Path:
    image = sitk.GetImageFromArray(array)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def with_header_text(path: Path, old: bytes, new: bytes) -> Path:
    data = path.read_bytes()
    assert old in data, data[:400]
    path.write_bytes(data.replace(old, new, 1))
    return path


def set_nifti_dims(path: Path, dims: tuple[int, ...]) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as stream:
        data = bytearray(stream.read())
    struct.pack_into("<8h", data, 40, len(dims), *dims, *([1] * (7 - len(dims))))
    with opener(path, "wb") as stream:
        stream.write(bytes(data))
    return path


# --- NaN and infinite values ----------------------------------------------------------------------
@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_voxels_are_refused_in_every_format(tmp_path, suffix, value):
    array = np.ones(SHAPE_ZYX, np.float32)
    array[2, 3, 4] = value
    path = write_sitk(tmp_path / f"image{suffix}", array)
    with pytest.raises(InputError, match=r"contains NaN or infinite values \(1 voxel\)"):
        read_image(path)


def test_an_all_nan_nifti_image_is_refused_not_read_as_zeros(tmp_path):
    path = write_sitk(tmp_path / "image.nii.gz", np.full(SHAPE_ZYX, np.nan, np.float32))
    with pytest.raises(InputError, match=r"NaN or infinite values \(210 voxels\)"):
        read_image(path)


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_float_segmentation_with_nan_is_refused_in_every_format(tmp_path, suffix):
    array = np.zeros(SHAPE_ZYX, np.float32)
    array[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN or infinite values"):
        read_labelmap(write_sitk(tmp_path / f"seg{suffix}", array))


# --- empty axes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", FORMATS)
def test_an_axis_of_size_zero_is_refused_in_every_format(tmp_path, suffix):
    path = write_sitk(tmp_path / f"image{suffix}", np.ones((35, 1, 35), np.float32))
    if suffix.startswith(".nii"):
        set_nifti_dims(path, (35, 0, 35))
    elif suffix == ".nrrd":
        with_header_text(path, b"sizes: 35 1 35", b"sizes: 35 0 35")
    else:
        with_header_text(path, b"DimSize = 35 1 35", b"DimSize = 35 0 35")
    with pytest.raises(InputError, match=r"size of 35×0×35 voxels: an axis of size 0 holds no voxels"):
        read_image(path)


# --- directions ------------------------------------------------------------------------------------
def sheared(tmp_path: Path, suffix: str, column_y: tuple[float, float, float]) -> Path:
    path = write_sitk(tmp_path / f"image{suffix}", np.ones(SHAPE_ZYX, np.float32))
    text = " ".join(f"{v:.17g}" for v in column_y)
    if suffix.startswith(".nii"):
        import nibabel

        affine = np.eye(4)
        affine[:3, 1] = [-column_y[0], -column_y[1], column_y[2]]  # LPS -> RAS
        image = nibabel.Nifti1Image(np.ones(SHAPE_ZYX[::-1], np.float32), affine)
        image.set_qform(None, code=0)
        image.set_sform(affine, code=2)
        nibabel.save(image, str(path))
    elif suffix == ".nrrd":
        with_header_text(path, b"(0,1,0)", f"({','.join(f'{v:.17g}' for v in column_y)})".encode())
    else:
        with_header_text(path, b"TransformMatrix = 1 0 0 0 1 0 0 0 1",
                         f"TransformMatrix = 1 0 0 {text} 0 0 1".encode())
    return path


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_sheared_direction_is_refused_in_every_format(tmp_path, suffix):
    path = sheared(tmp_path, suffix, (0.5, 1.0, 0.0))
    with pytest.raises(InputError, match="non-orthonormal direction"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_a_singular_direction_is_refused(tmp_path, suffix):
    path = sheared(tmp_path, suffix, (1.0, 0.0, 0.0))  # the y axis along the x axis
    with pytest.raises(InputError, match="singular direction matrix"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_a_direction_off_by_header_rounding_is_made_orthonormal_with_a_notice(tmp_path, suffix):
    path = sheared(tmp_path, suffix, (2e-4, 1.0, 0.0))
    volume = read_image(path)
    direction = volume.geometry.direction_matrix
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-12)
    assert np.max(np.abs(direction[:, 1] - [2e-4, 1.0, 0.0])) < 2e-4
    assert any("nearest orthonormal matrix" in notice for notice in volume.notices)


def test_error_maps_are_written_with_the_direction_they_were_read_with(tmp_path):
    volume = read_image(sheared(tmp_path, ".mha", (2e-4, 1.0, 0.0)))
    written = read_image(write_array(tmp_path / "map.nii.gz", np.zeros(SHAPE_ZYX, np.float32), volume.geometry))
    assert written.geometry.matches(volume.geometry), written.geometry.differences(volume.geometry)


def test_an_exactly_orthonormal_oblique_direction_is_kept_without_a_notice(tmp_path):
    angle = np.radians(30)
    rotation = (np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0)
    volume = read_image(write_sitk(tmp_path / "image.nrrd", np.ones(SHAPE_ZYX, np.float32), rotation))
    np.testing.assert_allclose(volume.geometry.direction, rotation, atol=1e-12)
    assert volume.notices == []


# --- truncated files -------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_a_truncated_nifti_file_is_refused_not_read_in_part(tmp_path, suffix):
    array = np.random.default_rng(0).normal(size=(20, 40, 40)).astype(np.float32)
    path = write_array(tmp_path / f"map{suffix}", array, Geometry(array.shape))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated|damaged"):
        read_image(path)


def test_a_truncated_compressed_label_map_is_refused(tmp_path):
    array = (np.random.default_rng(1).random((20, 40, 40)) > 0.5).astype(np.uint8)
    path = write_array(tmp_path / "seg.nii.gz", array, Geometry(array.shape))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match="damaged|truncated"):
        read_labelmap(path)


# --- headers that promise more than the file or the memory hold -------------------------------------
HUGE = (1800, 1800, 1800)


def bomb(tmp_path: Path, suffix: str) -> Path:
    """A file whose header claims 1800³ float32 voxels (23 GB) with (almost) nothing behind it."""
    path = tmp_path / f"bomb{suffix}"
    if suffix.startswith(".nii"):
        write_sitk(tmp_path / "small.nii", np.zeros((2, 2, 2), np.float32))
        header = bytearray((tmp_path / "small.nii").read_bytes()[:352])
        struct.pack_into("<8h", header, 40, 3, *HUGE, 1, 1, 1, 1)
        path.write_bytes(gzip.compress(bytes(header)) if suffix.endswith(".gz") else bytes(header))
    elif suffix == ".nrrd":
        path.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 1800 1800 1800\nencoding: gzip\n\n"
                         + gzip.compress(b"\0" * 64))
    else:
        path.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 1800 1800 1800\nElementType = MET_FLOAT\n"
                         b"ElementDataFile = LOCAL\n" + b"\0" * 64)
    return path


# Far beyond what these small commands take (seconds; minutes on a heavily shared machine): reaching it is a hang.
HANG_S = 900
LIMITED_READER = r"""
import importlib, resource, sys
from SegQCLib.commands.cli import main
importlib.import_module("SegQCLib.commands." + sys.argv[2])  # everything the command imports, before the limit
with open("/proc/self/status") as status:
    vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
# What is mapped now plus a margin: a reader that allocates what the header promises fails fast, not the machine.
resource.setrlimit(resource.RLIMIT_AS, (vm + int(sys.argv[1]), resource.RLIM_INFINITY))
sys.exit(main(sys.argv[2:]))
"""


def run_limited(margin_bytes: int, *args: str) -> subprocess.CompletedProcess:
    """``segqc ARGS`` in a subprocess under an address-space limit (a hostile header cannot take the machine)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    try:
        return subprocess.run([sys.executable, "-c", LIMITED_READER, str(margin_bytes), *args], capture_output=True,
                              text=True, timeout=HANG_S, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"segqc {' '.join(args)} did not finish within {HANG_S} s (hangs)")


def estimate_args(tmp_path: Path, seg: Path, error_prob: Path) -> list[str]:
    return ["estimate", "--seg", str(seg), "--error-prob", str(error_prob), "--out", str(tmp_path / "out")]


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_header_promising_more_voxels_than_its_file_holds_is_refused_before_allocating(tmp_path, suffix):
    seg = write_sitk(tmp_path / "seg.nii.gz", np.zeros((2, 2, 2), np.uint8))
    maps = tmp_path / "maps"
    maps.mkdir()
    bomb_path = bomb(tmp_path, suffix)
    error_map = maps / f"error_prob_1{suffix}"
    bomb_path.rename(error_map)
    result = run_limited(1 << 30, *estimate_args(tmp_path, seg, error_map))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "1800×1800×1800 voxels" in result.stderr and ("header" in result.stderr), result.stderr


def zeros_nifti_gz(path: Path, shape_xyz: tuple[int, int, int]) -> Path:
    """A real, valid .nii.gz of uint8 zeros, written as a stream (a few hundred KB for hundreds of MB)."""
    write_sitk(path.parent / "template.nii", np.zeros((1, 1, 1), np.uint8))
    header = bytearray((path.parent / "template.nii").read_bytes()[:352])
    struct.pack_into("<8h", header, 40, 3, *shape_xyz, 1, 1, 1, 1)
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 24)
    with open(path, "wb") as out:
        out.write(compressor.compress(bytes(header)))
        remaining = int(np.prod(shape_xyz))
        while remaining:
            piece = chunk[: min(len(chunk), remaining)]
            out.write(compressor.compress(piece))
            remaining -= len(piece)
        out.write(compressor.flush())
    return path


def test_a_volume_too_large_for_the_memory_left_is_refused_with_a_message(tmp_path):
    seg = zeros_nifti_gz(tmp_path / "seg.nii.gz", (1024, 1024, 512))  # 512 MB of voxels, a valid file
    maps = tmp_path / "maps"
    maps.mkdir()
    write_sitk(maps / "error_prob_1.nii.gz", np.zeros((2, 2, 2), np.float32))
    result = run_limited(256 << 20, *estimate_args(tmp_path, seg, maps))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "needs about" in result.stderr and "of memory" in result.stderr, result.stderr


# --- not regular files -----------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_or_a_device_given_as_an_image_is_refused_instead_of_read_forever(tmp_path):
    seg = write_sitk(tmp_path / "seg.nii.gz", np.zeros((2, 2, 2), np.uint8))
    fifo = tmp_path / "image.nii.gz"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.nii"
    zero.symlink_to("/dev/zero")
    for image in (fifo, zero):
        result = run_limited(1 << 30, "estimate", "--seg", str(seg), "--image", str(image), "--error-prob",
                             str(tmp_path), "--out", str(tmp_path / "out"))
        assert result.returncode == 1, result.stderr
        assert "not an image file" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_the_address_space_limit_of_the_helper_is_real():
    """The subprocess helper above limits memory: an allocation beyond the margin fails there."""
    code = ("import resource, numpy\nvm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') "
            "if l.startswith('VmSize:'))\nresource.setrlimit(resource.RLIMIT_AS, (vm + (64 << 20), "
            "resource.RLIM_INFINITY))\nnumpy.ones(1 << 30, numpy.uint8)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "MemoryError" in result.stderr
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY  # the test process is not limited
