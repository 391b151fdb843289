"""The Slicer panel reads the model's classes without torch, and never trusts a mapping saved without classes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="slicer-core cannot be imported; pip install slicer-core")

from SegQCModuleLib.logic import SegQCLogic  # noqa: E402
from slicer_scene import make_scene  # noqa: E402

from SegQCLib.network.config import read_config  # noqa: E402
from SegQCLib.network.model_files import default_model_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys
{block}
import slicer
from SegQCModuleLib.logic import SegQCLogic
names = SegQCLogic(slicer.vtkMRMLScene()).modelClassNames()
print(json.dumps({{"names": names, "torch_imported": "torch" in sys.modules}}))
"""


def run_probe(block: str) -> dict:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "SegQC")])}
    completed = subprocess.run([sys.executable, "-c", PROBE.format(block=block)], capture_output=True, text=True,
                               env=environment, cwd=ROOT, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def bundled_class_names() -> dict[str, str]:
    return {str(label): name for label, name in read_config(default_model_path()).classes.items()}


def test_reading_the_models_classes_does_not_import_torch():
    result = run_probe("")
    assert result == {"names": bundled_class_names(), "torch_imported": False}


def test_the_models_classes_are_read_where_torch_is_not_installed():
    result = run_probe("sys.modules['torch'] = None  # what `import torch` meets before the PyTorch extension")
    assert result["names"] == bundled_class_names()


@pytest.fixture
def segmentation():
    scene = make_scene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    ids = [node.GetSegmentation().AddEmptySegment(f"s{i}", name) for i, name in enumerate(("anterior", "posterior"))]
    return SegQCLogic(scene), node, ids


def test_a_saved_mapping_for_these_segments_is_used(segmentation):
    logic, node, ids = segmentation
    assert logic.storedMapping(json.dumps({ids[0]: 2, ids[1]: 0}), node) == {ids[0]: 2, ids[1]: 0}


@pytest.mark.parametrize("text", ["", "{broken", "[1, 2]", json.dumps({"other": 1})])
def test_a_missing_unreadable_or_foreign_mapping_falls_back_to_matching_by_name(segmentation, text):
    logic, node, _ids = segmentation
    assert logic.storedMapping(text, node) is None


def test_a_mapping_that_ignores_every_segment_is_not_used(segmentation):
    """What the panel saved when it could not read the classes and offered only "(ignore)"."""
    logic, node, ids = segmentation
    assert logic.storedMapping(json.dumps({ids[0]: 0, ids[1]: 0}), node) is None
