"""A case: the images (modalities in model order) and the query segmentation, checked onto one voxel grid."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

import SimpleITK as sitk

from ..errors import GeometryMismatchError
from ..geometry import Geometry
from .image_files import read_image, read_labelmap
from .volumes import LabelMap, Volume

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


@dataclass
class Case:
    """Images (modalities in model order) and the query segmentation on the same voxel grid."""

    images: list[Volume]
    segmentation: LabelMap
    notices: list[str] = field(default_factory=list)

    @property
    def geometry(self) -> Geometry:
        return self.segmentation.geometry


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
    return LabelMap(sitk.GetArrayFromImage(resampled), reference, dict(labelmap.names), labelmap.path,
                    list(labelmap.notices), dict(labelmap.styles))


def load_case(image_paths: Sequence[PathLike], seg_path: PathLike, resample_seg: bool = False) -> Case:
    """Read images and segmentation and make sure they share one voxel grid.

    Images must match each other exactly.  A segmentation on another grid is an error unless
    ``resample_seg`` is set, in which case it is resampled nearest-neighbour onto the first image and a
    notice says so.
    """
    images = [read_image(p) for p in image_paths]
    segmentation = read_labelmap(seg_path)
    notices = [notice for item in (*images, segmentation) for notice in item.notices]
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
