"""Reading and writing images and label maps, with their geometry, and input validation.

Everything returned here is a (z, y, x) numpy array plus a :class:`Geometry`.  Writes are atomic
(:func:`SegQCLib.files.atomic_write`: temporary file in the same folder, then ``os.replace``) so a
killed process never leaves a half file under the final name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import SimpleITK as sitk

from .errors import GeometryMismatchError, InputError
from .files import TEMP_SUFFIX, atomic_write
from .geometry import Geometry

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")
# Label values above this cannot be a class index in any realistic segmentation; larger ones mean a
# continuous image was passed where a label map was expected.
MAX_LABEL_VALUE = 32767


@dataclass
class Volume:
    """A scalar 3D image: (z, y, x) float32 array and its geometry."""

    array: np.ndarray
    geometry: Geometry
    path: str | None = None


@dataclass
class LabelMap:
    """A 3D label map: (z, y, x) integer array (0 = background), geometry and optional segment names."""

    array: np.ndarray
    geometry: Geometry
    names: dict[int, str] = field(default_factory=dict)
    path: str | None = None

    @property
    def labels(self) -> list[int]:
        """Foreground labels present in the array."""
        return [int(v) for v in np.unique(self.array) if v != 0]


@dataclass
class Case:
    """Images (modalities in model order) and the query segmentation on the same voxel grid."""

    images: list[Volume]
    segmentation: LabelMap
    notices: list[str] = field(default_factory=list)

    @property
    def geometry(self) -> Geometry:
        return self.segmentation.geometry


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _check_readable(path: PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} file not found: {path}")
    if path.is_dir():
        raise InputError(f"{what} path is a folder, expected a file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{what} file is empty (0 bytes): {path}")
    return path


def _read_sitk(path: Path, what: str) -> sitk.Image:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise InputError(f"Cannot read {what} {path}: not a readable NIfTI/NRRD/MHA image ({first_line})") from exc
    dimension = image.GetDimension()
    if dimension == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
        dimension = 3
    if dimension != 3:
        raise InputError(f"{what} {path} is {dimension}D with size {image.GetSize()}; SegQC needs a 3D volume")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{what} {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "SegQC needs a scalar volume (give each modality as its own file)"
        )
    if min(image.GetSize()) < 1:
        raise InputError(f"{what} {path} has no voxels (size {image.GetSize()})")
    return image


def read_image(path: PathLike) -> Volume:
    """Read a scalar 3D image as float32."""
    path = _check_readable(path, "Image")
    image = _read_sitk(path, "image")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        raise InputError(f"Image {path} contains NaN or infinite values")
    return Volume(array, Geometry.from_sitk(image), str(path))


def validate_label_array(array: np.ndarray, source: str) -> np.ndarray:
    """Return ``array`` as a compact integer label array, or raise InputError saying what is wrong."""
    if array.ndim != 3:
        raise InputError(f"Segmentation {source} is {array.ndim}D; SegQC needs a 3D label map")
    if array.size == 0:
        raise InputError(f"Segmentation {source} has no voxels")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise InputError(f"Segmentation {source} contains NaN or infinite values; expected integer labels")
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise InputError(
                f"Segmentation {source} has non-integer values (e.g. {array[np.mod(array, 1) != 0].flat[0]:.4g}); "
                "expected a label map with integer class labels, not a probability map or image"
            )
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise InputError(f"Segmentation {source} has unsupported voxel type {array.dtype}")
    low, high = (array.min(), array.max())
    if low < 0:
        raise InputError(f"Segmentation {source} has negative labels (min {low}); labels must be 0 (background) or >0")
    if high > MAX_LABEL_VALUE:
        raise InputError(f"Segmentation {source} has label {high}, above {MAX_LABEL_VALUE}: is this an image?")
    dtype = np.uint8 if high <= np.iinfo(np.uint8).max else np.int16
    return array.astype(dtype, copy=False)


def read_labelmap(path: PathLike) -> LabelMap:
    """Read a label map from NIfTI/NRRD/MHA, or a Slicer ``.seg.nrrd`` (segment names kept)."""
    path = _check_readable(path, "Segmentation")
    if path.name.lower().endswith(".seg.nrrd"):
        return _read_seg_nrrd(path)
    image = _read_sitk(path, "segmentation")
    array = validate_label_array(sitk.GetArrayFromImage(image), str(path))
    return LabelMap(array, Geometry.from_sitk(image), {}, str(path))


def _read_seg_nrrd(path: Path) -> LabelMap:
    import slicerio

    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as exc:  # slicerio raises IOError, ValueError, KeyError on malformed headers
        raise InputError(f"Cannot read Slicer segmentation {path}: {exc}") from exc
    voxels = np.asarray(segmentation["voxels"])
    segments = segmentation.get("segments", [])
    if voxels.ndim == 4:
        # Overlapping segments are stored in layers; a label map holds one class per voxel, so flatten
        # them in segment order (later segments win where they overlap) and renumber 1..N.
        flat = np.zeros(voxels.shape[1:], dtype=np.int16)
        names = {}
        for index, segment in enumerate(segments, start=1):
            mask = voxels[segment.get("layer", 0)] == segment["labelValue"]
            if np.any(flat[mask] != 0):
                logger.warning("Segment %r overlaps an earlier segment in %s; overlap assigned to it", segment["name"],
                               path)
            flat[mask] = index
            names[index] = segment.get("name", f"Segment_{index}")
        voxels = flat
    else:
        names = {int(s["labelValue"]): s.get("name", f"Segment_{s['labelValue']}") for s in segments}
    array_zyx = np.ascontiguousarray(np.transpose(voxels, (2, 1, 0)))
    geometry = _geometry_from_ijk_to_lps(np.asarray(segmentation["ijkToLPS"], dtype=float), array_zyx.shape)
    array = validate_label_array(array_zyx, str(path))
    return LabelMap(array, geometry, names, str(path))


def _geometry_from_ijk_to_lps(matrix: np.ndarray, shape_zyx: tuple[int, int, int]) -> Geometry:
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    direction = matrix[:3, :3] / spacing
    return Geometry(tuple(int(s) for s in shape_zyx), tuple(float(s) for s in spacing),
                    tuple(float(v) for v in matrix[:3, 3]), tuple(float(v) for v in direction.ravel()))


def write_array(path: PathLike, array: np.ndarray, geometry: Geometry, compress: bool = True) -> Path:
    """Write a (z, y, x) array with ``geometry`` atomically; the format follows the file name."""
    path = Path(path)
    if tuple(array.shape) != tuple(geometry.shape_zyx):
        raise ValueError(f"Array shape {array.shape} does not match geometry {geometry.shape_zyx}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    geometry.apply_to(image)
    return atomic_write(path, lambda temporary: sitk.WriteImage(image, str(temporary), compress),
                        suffix=f"{TEMP_SUFFIX}{_suffix(path)}")


def write_labelmap(path: PathLike, labelmap: LabelMap) -> Path:
    """Write a label map; ``.seg.nrrd`` keeps segment names so Slicer shows them."""
    path = Path(path)
    if not path.name.lower().endswith(".seg.nrrd"):
        return write_array(path, labelmap.array, labelmap.geometry)
    import slicerio

    geometry = labelmap.geometry
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = geometry.direction_matrix @ np.diag(geometry.spacing_xyz_mm)
    ijk_to_lps[:3, 3] = geometry.origin_lps_mm
    segmentation = {
        "voxels": np.transpose(labelmap.array, (2, 1, 0)),
        "ijkToLPS": ijk_to_lps,
        "segments": [
            {"id": f"Segment_{label}", "labelValue": int(label), "layer": 0,
             "name": labelmap.names.get(label, f"Segment_{label}")}
            for label in sorted(set(labelmap.labels) | set(labelmap.names))
        ],
    }
    return atomic_write(path, lambda temporary: slicerio.write_segmentation(str(temporary), segmentation),
                        suffix=f"{TEMP_SUFFIX}{_suffix(path)}")


SEGMENTATION_GRID_ADVICE = ("Resample it onto the image (segqc run and segqc estimate: --resample-seg) or export it "
                            "on the image's grid.")
IMAGE_GRID_ADVICE = "All images of a case must share one voxel grid: resample them onto the first image."
CORRECTION_GRID_ADVICE = "Save it on the image's grid (a correction is stored voxel for voxel with its image)."


def check_same_geometry(reference: Geometry, other: Geometry, what: str,
                        advice: str = SEGMENTATION_GRID_ADVICE) -> None:
    """GeometryMismatchError saying what differs, with ``advice`` that fits the caller (an option it has)."""
    differences = reference.differences(other)
    if differences:
        raise GeometryMismatchError(f"{what} does not share the image's voxel grid: " + "; ".join(differences)
                                    + f". {advice}")


def resample_labelmap(labelmap: LabelMap, reference: Geometry) -> LabelMap:
    """Nearest-neighbour resampling of a label map onto another voxel grid."""
    source = sitk.GetImageFromArray(labelmap.array)
    labelmap.geometry.apply_to(source)
    target = sitk.Image(int(reference.shape_zyx[2]), int(reference.shape_zyx[1]), int(reference.shape_zyx[0]),
                        source.GetPixelID())
    reference.apply_to(target)
    resampled = sitk.Resample(source, target, sitk.Transform(), sitk.sitkNearestNeighbor, 0, source.GetPixelID())
    return LabelMap(sitk.GetArrayFromImage(resampled), reference, dict(labelmap.names), labelmap.path)


def load_case(image_paths: Sequence[PathLike], seg_path: PathLike, resample_seg: bool = False) -> Case:
    """Read images and segmentation and make sure they share one voxel grid.

    Images must match each other exactly.  A segmentation on another grid is an error unless
    ``resample_seg`` is set, in which case it is resampled nearest-neighbour onto the first image and a
    notice says so.
    """
    images = [read_image(p) for p in image_paths]
    segmentation = read_labelmap(seg_path)
    notices: list[str] = []
    if images:
        reference = images[0].geometry
        for index, image in enumerate(images[1:], start=2):
            check_same_geometry(reference, image.geometry, f"Image {index} ({image.path})", IMAGE_GRID_ADVICE)
        differences = reference.differences(segmentation.geometry)
        if differences:
            if not resample_seg:
                check_same_geometry(reference, segmentation.geometry, f"Segmentation {seg_path}")
            segmentation = resample_labelmap(segmentation, reference)
            notice = "Segmentation resampled (nearest neighbour) onto the image grid: " + "; ".join(differences)
            logger.warning(notice)
            notices.append(notice)
    return Case(images, segmentation, notices)
