"""The module's sample case in Slicer's Sample Data module: a T1 MRI crop around the left hippocampus and the
segmentation the bundled small segmenter made of it (a real model output, with the errors QC is meant to find).

The files are made by code, ``SegQC/Resources/SampleData/make_sample_data.py`` (which runs
``training/sample_case.py``: the MNI152 2009a template that the ``nilearn`` package ships, cropped, and the
bundled segmenter); no shared data is in them.  ``SegQCHippocampus.LICENSE.txt`` beside them states their
licences.  They are registered with file URIs and SHA-256 checksums, so Sample Data copies them into its cache,
checks them and loads them as any other sample.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

SAMPLE_CATEGORY = "SegQC"
SAMPLE_NAME = "SegQCHippocampus"
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "Resources" / "SampleData"
THUMBNAIL_FILE = "SegQCHippocampus.png"
LICENSE_FILE = "SegQCHippocampus.LICENSE.txt"
# Segment names are the bundled QC model's class names, so Run QC maps them without asking.
SEGMENT_NAMES = {1: "anterior", 2: "posterior"}


@dataclass(frozen=True)
class SampleFile:
    fileName: str
    nodeName: str
    loadFileType: str
    sha256: str

    @property
    def path(self) -> Path:
        return SAMPLE_DIR / self.fileName


SAMPLE_FILES = (
    SampleFile("SegQCHippocampus.nii.gz", "SegQCHippocampus", "VolumeFile",
               "dc9946252f6f5e31063fbfc2868ce51c9d0d419f05c589d9c7b1e227cf3dee36"),
    SampleFile("SegQCHippocampus.seg.nrrd", "SegQCHippocampus segmentation", "SegmentationFile",
               "f789d33148a067876d10ffad4e41b51ee05abde02685cf99bb6a704f3378ebac"),
)


def registerSampleData() -> None:
    """Add the sample to Slicer's Sample Data module (category SegQC)."""
    import SampleData

    register = SampleData.SampleDataLogic.registerCustomSampleDataSource
    # Slicer 5.6 takes the file types as ``loadFileType`` (a list is accepted) and has no ``loadFileTypes``; 5.8
    # renamed it ``loadFileTypes`` and keeps ``loadFileType`` only as a deprecated alias
    # (Modules/Scripted/SampleData/SampleData.py, commit 516716c035).
    fileTypesKeyword = "loadFileTypes" if "loadFileTypes" in inspect.signature(register).parameters else "loadFileType"
    register(
        category=SAMPLE_CATEGORY,
        sampleName=SAMPLE_NAME,
        thumbnailFileName=str(SAMPLE_DIR / THUMBNAIL_FILE),
        uris=[sample.path.as_uri() for sample in SAMPLE_FILES],
        fileNames=[sample.fileName for sample in SAMPLE_FILES],
        nodeNames=[sample.nodeName for sample in SAMPLE_FILES],
        checksums=[f"SHA256:{sample.sha256}" for sample in SAMPLE_FILES],
        **{fileTypesKeyword: [sample.loadFileType for sample in SAMPLE_FILES]},
    )


def loadSampleData() -> list:
    """Load the sample through Sample Data (copied to its cache, checksums checked): [image node, segmentation]."""
    import SampleData

    registerSampleData()
    # downloadSamples, not downloadSample: the latter returns only the first loaded node (the image).
    return SampleData.SampleDataLogic().downloadSamples(SAMPLE_NAME)
