"""Ready for the Extensions Index: the drafted catalog entry is valid against Slicer's schema and agrees with the
extension's CMake metadata, whose URLs point at files this repository has; the licences are in place."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "ExtensionsIndex" / "SegQC.json"
SCHEMA = ROOT / "ExtensionsIndex" / "slicer-extension-catalog-entry-schema-v1.0.1.json"
RAW_PREFIX = re.compile(r"^https://raw\.githubusercontent\.com/(?P<repo>[^/]+/[^/]+)/main/(?P<path>.+)$")
JSON_TYPES = {"string": str, "integer": int, "boolean": bool, "array": list, "object": dict}


def schema_problems(value, schema: dict, where: str = "entry") -> list[str]:
    """The draft-07 keywords Slicer's catalog schema uses: type, enum, required, additionalProperties,
    properties, items, minimum, maximum."""
    problems = []
    expected = JSON_TYPES.get(schema.get("type"))
    if expected is not None and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
        return [f"{where}: expected {schema['type']}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"] or "maximum" in schema and value > schema["maximum"]:
        problems.append(f"{where}: {value} outside [{schema.get('minimum')}, {schema.get('maximum')}]")
    if isinstance(value, dict):
        problems += [f"{where}: missing {key}" for key in schema.get("required", []) if key not in value]
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            problems += [f"{where}: unknown field {key}" for key in value if key not in properties]
        for key, item in value.items():
            if key in properties:
                problems += schema_problems(item, properties[key], f"{where}.{key}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += schema_problems(item, schema["items"], f"{where}[{index}]")
    return problems


def cmake_settings() -> dict[str, str]:
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    return dict(re.findall(r'set\((EXTENSION_\w+) "([^"]*)"\)', text))


def test_the_catalog_entry_is_valid_against_slicers_schema():
    entry = json.loads(ENTRY.read_text(encoding="utf-8"))
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema_problems(entry, schema) == []
    assert entry["$schema"].rstrip("#") == schema["$id"].rstrip("#")


@pytest.mark.parametrize("entry, problem", [
    ({"category": "Segmentation", "scm_url": "x"}, "missing $schema"),
    ({"$schema": "s", "category": "Segmentation", "scm_url": "x", "depends": ["PyTorch"]}, "unknown field depends"),
    ({"$schema": "s", "category": "Segmentation", "scm_url": "x", "tier": 7}, "outside"),
])
def test_the_schema_check_catches_a_broken_entry(entry, problem):
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert any(problem in found for found in schema_problems(entry, schema))


def test_the_catalog_entry_agrees_with_the_extensions_cmake_metadata():
    entry, cmake = json.loads(ENTRY.read_text(encoding="utf-8")), cmake_settings()
    assert entry["category"] == cmake["EXTENSION_CATEGORY"]
    assert entry["build_dependencies"] == cmake["EXTENSION_DEPENDS"].split()
    repository = re.match(r"^https://github\.com/([^/]+/[^/]+?)(\.git)?$", entry["scm_url"]).group(1)
    assert repository.split("/")[1].startswith("Slicer"), "Extensions Index repositories are named Slicer..."
    assert cmake["EXTENSION_HOMEPAGE"].startswith(f"https://github.com/{repository}")
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in cmake[key].split():
            match = RAW_PREFIX.match(url)
            assert match and match["repo"] == repository, url
            assert (ROOT / match["path"]).is_file(), f"{url} will not exist: {match['path']} is not in the repository"
    assert cmake["EXTENSION_CONTRIBUTORS"] and cmake["EXTENSION_DESCRIPTION"]


def test_the_extension_icon_is_the_size_the_index_shows():
    assert Image.open(ROOT / "ExtensionIcon.png").size == (128, 128)


def test_the_licences_are_in_place_and_the_cc_by_sa_weights_are_marked():
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "CC-BY-SA 4.0" in (ROOT / "LICENSE").read_text(encoding="utf-8").split("TERMS AND CONDITIONS")[0]
    models = (ROOT / "Resources" / "Models" / "LICENSE.md").read_text(encoding="utf-8")
    assert "CC-BY-SA 4.0" in models and "not Apache-2.0" in models
    assert "CC-BY-SA" in json.loads((ROOT / "Resources/Models/hippocampus/config.json").read_text())["license"]
    third_party = (ROOT / "THIRD_PARTY_LICENSES.md").read_text(encoding="utf-8")
    for name in ("SimpleITK", "slicerio", "filelock", "safetensors", "PyTorch", "MNI152"):
        assert name in third_party, name
