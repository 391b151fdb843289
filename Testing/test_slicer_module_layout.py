"""The Slicer module folder as Slicer's module factory sees it, and as the extension build ships it.

Slicer registers every file directly in a module folder that ``qSlicerScriptedLoadableModuleFactory::isValidFile``
accepts (``*.py``, or ``*.pyc`` without its ``.py``; Base/QTGUI/qSlicerScriptedLoadableModuleFactory.cxx, folders
are not searched: ``qSlicerAbstractModuleFactoryManager::registerModules``), instantiates the class named after the
file and refuses a module without a title (``qSlicerModuleFactoryManager::loadModule`` warns, and asserts in a
debug build).  So helpers live in the ``SegQCModuleLib`` package and the top level holds modules only.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "SegQC"


def factory_candidates(folder: Path) -> list[Path]:
    """Files of ``folder`` that Slicer's scripted-module factory would try to load as modules."""
    files = [p for p in folder.iterdir() if p.is_file()]
    return sorted(p for p in files if p.suffix == ".py" or (p.suffix == ".pyc" and not p.with_suffix(".py").exists()))


def module_problems(path: Path) -> list[str]:
    """Why the factory would refuse ``path`` as a module (empty when it loads)."""
    if path.suffix != ".py":
        return ["compiled file without source"]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    module_class = classes.get(path.stem)
    if module_class is None:
        return [f"no class {path.stem}"]
    if not any(getattr(base, "id", None) == "ScriptedLoadableModule" for base in module_class.bases):
        return [f"{path.stem} is not a ScriptedLoadableModule"]
    titles = [node for node in ast.walk(module_class) if isinstance(node, ast.Assign)
              and any(ast.unparse(target) == "self.parent.title" for target in node.targets)]
    if not titles or not all(isinstance(t.value, ast.Constant) and t.value.value for t in titles):
        return ["no title"]
    return []


def test_every_file_the_factory_loads_from_the_module_folder_is_a_titled_module():
    candidates = factory_candidates(MODULE_DIR)
    assert [p.name for p in candidates] == ["SegQC.py"]
    assert {p.name: module_problems(p) for p in candidates} == {"SegQC.py": []}


def test_a_helper_at_the_module_folders_top_level_is_caught(tmp_path):
    (tmp_path / "SegQC.py").write_text((MODULE_DIR / "SegQC.py").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "SegQCLogic.py").write_text("class SegQCLogic:\n    pass\n", encoding="utf-8")
    problems = {p.name: module_problems(p) for p in factory_candidates(tmp_path)}
    assert problems == {"SegQC.py": [], "SegQCLogic.py": ["SegQCLogic is not a ScriptedLoadableModule"]}


def cmake_list(name: str) -> set[str]:
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    block = re.search(rf"set\({name}\s+(.*?)\n\s*\)", text, flags=re.DOTALL).group(1)
    lines = [line.split("#", 1)[0] for line in block.splitlines()]
    return {entry.replace("${MODULE_NAME}", "SegQC") for line in lines for entry in line.split()}


def test_the_extension_build_ships_every_python_file_of_the_module():
    on_disk = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*.py")
               if p.relative_to(MODULE_DIR).parts[0] != "Resources"}  # Resources/*.py make resources, not code
    assert cmake_list("MODULE_PYTHON_SCRIPTS") == on_disk


def test_the_extension_build_ships_every_resource_of_the_module():
    on_disk = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*")
               if p.is_file() and p.suffix not in (".py", ".md")}
    assert cmake_list("MODULE_PYTHON_RESOURCES") == on_disk
