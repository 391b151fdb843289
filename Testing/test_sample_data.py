"""The module's sample case: its files are what the code makes, match the checksums they are registered with,
load in Slicer (slicer-core's readers) with segment names, colours and terminology, and the whole review runs on
them: what the module's self-test does inside Slicer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from SegQCModuleLib.sample_data import LICENSE_FILE, SAMPLE_DIR, SAMPLE_FILES, SEGMENT_NAMES, THUMBNAIL_FILE

from SegQCLib.io.image_files import read_image, read_labelmap

SEGMENTATION_AGREEMENT = 0.995  # share of voxels equal between the bundled and a re-made segmentation


def test_the_registered_checksums_are_those_of_the_bundled_files():
    for sample in SAMPLE_FILES:
        assert hashlib.sha256(sample.path.read_bytes()).hexdigest() == sample.sha256, sample.fileName


def test_the_sample_comes_with_its_thumbnail_and_licences():
    assert (SAMPLE_DIR / THUMBNAIL_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (SAMPLE_DIR / LICENSE_FILE).read_text(encoding="utf-8")
    assert "McConnell Brain Imaging Centre" in text and "CC-BY-SA 4.0" in text


def test_the_bundled_segmentation_names_its_segments_after_the_models_classes_with_colour_and_terminology():
    from SegQCLib.network.config import read_config
    from SegQCLib.network.model_files import default_model_path

    segmentation = read_labelmap(SAMPLE_FILES[1].path)
    assert segmentation.names == SEGMENT_NAMES == dict(read_config(default_model_path()).classes)
    assert all(style.terminology and "SCT^5366008^Hippocampus" in style.terminology
               for style in segmentation.styles.values())
    assert read_image(SAMPLE_FILES[0].path).geometry.matches(segmentation.geometry)


def test_the_bundled_files_are_what_the_code_makes(tmp_path):
    pytest.importorskip("nilearn", reason="making the sample needs the MNI152 template nilearn ships")
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("make_sample_data", SAMPLE_DIR / "make_sample_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    image_path, segmentation_path = module.make_sample(tmp_path)
    made, bundled = read_image(image_path), read_image(SAMPLE_FILES[0].path)
    np.testing.assert_array_equal(made.array, bundled.array)
    assert made.geometry.matches(bundled.geometry)
    made_labels, bundled_labels = read_labelmap(segmentation_path), read_labelmap(SAMPLE_FILES[1].path)
    assert np.mean(made_labels.array == bundled_labels.array) >= SEGMENTATION_AGREEMENT
    assert made_labels.names == bundled_labels.names and made_labels.styles == bundled_labels.styles


# ----------------------------------------------------------------------------------------------
# Through Slicer's Sample Data module.  SampleData is a Qt scripted module that slicer-core does not have, so these
# stand-ins copy what the module relies on from Modules/Scripted/SampleData/SampleData.py: the signature of
# registerCustomSampleDataSource in 5.6 (loadFileType, a list accepted) and from 5.8 (loadFileTypes, loadFileType
# a deprecated alias), and downloadSample returning only the first loaded node where downloadSamples returns all.


def _load_source(source: dict, cache) -> list[tuple[str, str, str]]:
    """What SampleDataLogic.downloadFromSource does with one source: each URI fetched with urllib into the cache,
    its checksum verified, the file loaded; here a loaded node is (node name, file type, cached path)."""
    import urllib.request

    nodes = []
    for uri, fileName, nodeName, checksum, fileType in zip(
            source["uris"], source["fileNames"], source["nodeNames"], source["checksums"], source["fileTypes"],
            strict=True):
        path = cache / fileName
        urllib.request.urlretrieve(uri, path)
        algorithm, digest = checksum.split(":")
        assert hashlib.new(algorithm.lower(), path.read_bytes()).hexdigest() == digest, fileName
        nodes.append((nodeName, fileType, str(path)))
    return nodes


def _fake_sample_data(cache, slicer_5_6: bool):
    import types

    sources: dict[str, dict] = {}

    def keep(sampleName, uris, fileNames, nodeNames, checksums, fileTypes, **_unused):
        if isinstance(fileTypes, str) or fileTypes is None:
            fileTypes = [fileTypes] * len(uris)
        sources[sampleName] = {"uris": uris, "fileNames": fileNames, "nodeNames": nodeNames, "checksums": checksums,
                               "fileTypes": fileTypes}

    if slicer_5_6:
        def register(category="Custom", sampleName=None, uris=None, fileNames=None, nodeNames=None,
                     customDownloader=None, thumbnailFileName=None, loadFileType="VolumeFile", loadFiles=None,
                     loadFileProperties={}, checksums=None):  # noqa: B006  (Slicer's signature)
            keep(sampleName, uris, fileNames, nodeNames, checksums, loadFileType)
    else:
        def register(category="Custom", sampleName=None, uris=None, fileNames=None, nodeNames=None,
                     customDownloader=None, thumbnailFileName=None, loadFileTypes=None, loadFiles=None,
                     loadFileProperties={}, checksums=None, loadFileType=None):  # noqa: B006  (Slicer's signature)
            if loadFileType is not None:
                raise AssertionError("loadFileType is deprecated from Slicer 5.8 on")
            keep(sampleName, uris, fileNames, nodeNames, checksums, loadFileTypes)

    class SampleDataLogic:
        registerCustomSampleDataSource = staticmethod(register)

        def downloadSamples(self, sampleName):
            return _load_source(sources[sampleName], cache)

        def downloadSample(self, sampleName):
            return self.downloadSamples(sampleName)[0]

    return types.SimpleNamespace(SampleDataLogic=SampleDataLogic, sources=sources)


@pytest.mark.parametrize("slicer_5_6", [True, False], ids=["Slicer 5.6", "Slicer 5.8 and later"])
def test_sample_data_loads_the_image_and_the_segmentation_with_their_file_types(tmp_path, monkeypatch, slicer_5_6):
    import sys

    from SegQCModuleLib.sample_data import SAMPLE_NAME, loadSampleData

    fake = _fake_sample_data(tmp_path, slicer_5_6)
    monkeypatch.setitem(sys.modules, "SampleData", fake)
    nodes = loadSampleData()
    assert [(name, fileType) for name, fileType, _path in nodes] == [
        ("SegQCHippocampus", "VolumeFile"), ("SegQCHippocampus segmentation", "SegmentationFile")]
    for (_name, _type, path), sample in zip(nodes, SAMPLE_FILES, strict=True):
        assert Path(path).read_bytes() == sample.path.read_bytes()
    assert list(fake.sources) == [SAMPLE_NAME]


# ----------------------------------------------------------------------------------------------
# In Slicer's scene (slicer-core)


@pytest.fixture
def loaded():
    pytest.importorskip("slicer", reason="slicer-core cannot be imported; pip install slicer-core")
    import slicer
    from slicer_scene import SlicerApp

    app = SlicerApp()
    image_file, segmentation_file = SAMPLE_FILES
    volume = app.volumes_logic.AddArchetypeVolume(str(image_file.path), image_file.nodeName)
    segmentation = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", segmentation_file.nodeName)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    app.scene.AddNode(storage)
    storage.SetFileName(str(segmentation_file.path))
    assert storage.ReadData(segmentation)
    segmentation.CreateDefaultDisplayNodes()
    return app, volume, segmentation


def test_slicer_reads_the_sample_with_its_segment_names_colours_and_terminology(loaded):
    import slicer
    import vtk

    _app, volume, segmentation = loaded
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), read_image(SAMPLE_FILES[0].path).array)
    segments = segmentation.GetSegmentation()
    found = {}
    for index in range(segments.GetNumberOfSegments()):
        segment = segments.GetNthSegment(index)
        terminology = vtk.reference("")
        segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology)
        found[segment.GetName()] = (tuple(round(c, 3) for c in segment.GetColor()), terminology.get())
    styles = read_labelmap(SAMPLE_FILES[1].path).styles
    assert found == {SEGMENT_NAMES[label]: (tuple(round(c, 3) for c in style.color_rgb), style.terminology)
                     for label, style in styles.items()}


def test_the_whole_review_runs_on_the_sample(loaded, tmp_path):
    """What the self-test does in Slicer: QC with the bundled model, overlay, a jump, a mark, a rating, a fix and
    the correction recorded with them."""
    import slicer
    from SegQCModuleLib.logic import ItemKind, ItemStatus, NodeRole, SegQCLogic
    from slicer_scene import set_segment

    app, volume, segmentation = loaded
    logic = SegQCLogic(app.scene)
    result = logic.runQC([volume], segmentation, device="cpu")
    report = result.report
    assert [c["name"] for c in report["classes"]] == ["anterior", "posterior"] and report["boxes"]
    composite = app.scene.GetNthNodeByClass(0, "vtkMRMLSliceCompositeNode")
    assert app.scene.GetNodeByID(composite.GetForegroundVolumeID()).GetAttribute("SegQC.Role") == "overlay"
    centre = logic.jumpToBox(1 % len(report["boxes"]))
    np.testing.assert_allclose(centre, report["boxes"][1 % len(report["boxes"])]["center_ras"], atol=1e-6)
    logic.setItemStatus(ItemKind.BOX, 1 % len(report["boxes"]), ItemStatus.FIXED)
    logic.setCaseRating("minor_fixes")
    box = report["boxes"][0]
    segment_id = logic.segmentIdForLabel(box["label"])
    snapshot = logic.findNode(NodeRole.SNAPSHOT)
    fixed = slicer.util.arrayFromVolume(snapshot) == box["label"]
    (z0, y0, x0), (z1, y1, x1) = box["bbox_zyx"]
    fixed[z0:z1, y0:y1, x0:x1] = False
    set_segment(app.scene, segmentation, segment_id, fixed, SegQCLogic.volumeGeometry(snapshot))
    assert logic.segmentationChangedSinceQC()
    record = logic.recordCorrection(str(tmp_path / "store"))
    metadata = json.loads((record / "record.json").read_text())
    assert metadata["rating"] == "minor_fixes" and [b["status"] for b in metadata["reviewed_boxes"]] == ["fixed"]
    assert "SCT^5366008^Hippocampus" in metadata["segment_styles"][str(box["label"])]["terminology"]
    changed = read_labelmap(record / "original.nii.gz").array != read_labelmap(record / "corrected.nii.gz").array
    assert changed.any() and not changed[:z0].any()
