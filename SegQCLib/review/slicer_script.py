"""A Python script that opens one checked case in 3D Slicer: image(s), segmentation, every class's error map
(the first shown over the image), the slice views centred on the worst error box.

Run it with ``Slicer --python-script open_in_slicer.py`` or paste ``exec(open(PATH).read())`` into Slicer's Python
console.  Paths are absolute: the inputs stay where they were when the case was checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

from .. import __version__
from ..files import write_text_atomic

SCRIPT_FILE = "open_in_slicer.py"
# Slicer colour tables closest to the pages' class colours (class 1, 2, ...).
SLICER_COLOR_TABLES = ("Cyan", "Yellow", "Magenta", "Green", "Red", "Blue")
ERROR_OPACITY = 0.5

_TEMPLATE = '''# Opens SegQC case {case_id!r} in 3D Slicer (written by segqc {version}).
#   Slicer --python-script {script_quoted}
# or, in Slicer's Python console:
#   exec(open({script!r}, encoding="utf-8").read())
import slicer

CASE_ID = {case_id!r}
IMAGES = {images!r}
SEGMENTATION = {segmentation!r}
ERROR_MAPS = {error_maps!r}  # (class label, class name, file, Slicer colour table)
FOCUS_RAS = {focus_ras!r}  # centre of the worst error box (RAS, mm), or None

images = [slicer.util.loadVolume(path, {{"name": f"{{CASE_ID}} image {{index}}"}}) for index, path in enumerate(IMAGES)]
segmentation = slicer.util.loadSegmentation(SEGMENTATION, {{"name": f"{{CASE_ID}} segmentation"}})
errors = []
for label, name, path, colors in ERROR_MAPS:
    node = slicer.util.loadVolume(path, {{"name": f"{{CASE_ID}} error {{label}} {{name}}", "show": False}})
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(f"vtkMRMLColorTableNode{{colors}}")
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, 1.0)
    errors.append(node)
slicer.util.setSliceViewerLayers(background=images[0], foreground=errors[0] if errors else None,
                                 foregroundOpacity={opacity}, fit=True)
if FOCUS_RAS is not None:
    slicer.modules.markups.logic().JumpSlicesToLocation(FOCUS_RAS[0], FOCUS_RAS[1], FOCUS_RAS[2], True)
'''


def slicer_script(case_id: str, images: Sequence[str], segmentation: str,
                  error_maps: Mapping[int, tuple[str, str]], focus_ras: Optional[Sequence[float]],
                  script_path: Path) -> str:
    """The script's text; ``error_maps`` maps class label -> (class name, file)."""
    maps = [(label, name, path, SLICER_COLOR_TABLES[(label - 1) % len(SLICER_COLOR_TABLES)])
            for label, (name, path) in sorted(error_maps.items())]
    focus = None if focus_ras is None else [round(float(v), 3) for v in focus_ras]
    return _TEMPLATE.format(case_id=case_id, version=__version__, script=str(script_path),
                            script_quoted=shell_quote(str(script_path)), images=[str(p) for p in images],
                            segmentation=str(segmentation), error_maps=maps, focus_ras=focus, opacity=ERROR_OPACITY)


def shell_quote(text: str) -> str:
    """Quoted for a POSIX shell and for Windows' cmd alike when it has no double quote in it."""
    return f'"{text}"' if '"' not in text else "'" + text.replace("'", "'\\''") + "'"


def write_slicer_script(folder: Path, case_id: str, images: Sequence[str], segmentation: str,
                        error_maps: Mapping[int, tuple[str, str]], focus_ras: Optional[Sequence[float]]) -> Path:
    path = (folder / SCRIPT_FILE).resolve()
    return write_text_atomic(path, slicer_script(case_id, images, segmentation, error_maps, focus_ras, path))
