"""The module's keyboard shortcuts, and the keys 3D Slicer already binds (which SegQC must leave alone).

No Qt here: the widget turns :data:`SHORTCUTS` into ``QShortcut`` objects on the main window while the
module is shown, and takes tooltips and the help text from the same table, so the keys are defined once.

The reserved keys were read from Slicer's sources (5.6 to 5.10 and main at 583e9b37d5); a single-key
``QShortcut`` on the main window takes the key before a slice view sees it, so a clash silently replaces
Slicer's action (SegQC 0.x used ``f`` and ``r`` and so hid "next slice" and "reset field of view").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ShortcutAction(str, Enum):
    NEXT_BOX = "next_box"
    PREVIOUS_BOX = "previous_box"
    NEXT_SLICE = "next_slice"
    PREVIOUS_SLICE = "previous_slice"
    MARK_REVIEWED = "mark_reviewed"
    MARK_FIXED = "mark_fixed"
    SEGMENT_EDITOR = "segment_editor"
    NEXT_CASE = "next_case"
    PREVIOUS_CASE = "previous_case"
    PREVIEW_SUGGESTION = "preview_suggestion"
    ACCEPT_SUGGESTION = "accept_suggestion"
    REJECT_SUGGESTION = "reject_suggestion"
    UNDO_SUGGESTION = "undo_suggestion"


@dataclass(frozen=True)
class Shortcut:
    keys: str  # QKeySequence text, e.g. "Shift+N"
    action: ShortcutAction
    description: str


SHORTCUTS: tuple[Shortcut, ...] = (
    Shortcut("n", ShortcutAction.NEXT_BOX, "next error box"),
    Shortcut("p", ShortcutAction.PREVIOUS_BOX, "previous error box"),
    Shortcut("Shift+N", ShortcutAction.NEXT_SLICE, "next ranked slice"),
    Shortcut("Shift+P", ShortcutAction.PREVIOUS_SLICE, "previous ranked slice"),
    Shortcut("m", ShortcutAction.MARK_REVIEWED, "mark the current box (or slice) reviewed"),
    Shortcut("d", ShortcutAction.MARK_FIXED, "mark the current box (or slice) fixed (done)"),
    Shortcut("e", ShortcutAction.SEGMENT_EDITOR, "Segment Editor on the segment of the current box's class"),
    Shortcut("c", ShortcutAction.NEXT_CASE, "next case of the case queue"),
    Shortcut("Shift+C", ShortcutAction.PREVIOUS_CASE, "previous case of the case queue"),
    Shortcut("o", ShortcutAction.PREVIEW_SUGGESTION, "preview the current box's suggested edit"),
    Shortcut("k", ShortcutAction.ACCEPT_SUGGESTION, "accept the current box's suggested edit (keep)"),
    Shortcut("j", ShortcutAction.REJECT_SUGGESTION, "reject the current box's suggested edit"),
    Shortcut("u", ShortcutAction.UNDO_SUGGESTION, "undo the last accepted suggestion"),
)

# Keys Slicer binds, by where they are bound.  "Shift+v" is VTK's "V"; keys in RESERVED_WITH_ANY_MODIFIER
# are bound whatever the modifiers (vtkEvent::AnyModifier).
RESERVED_KEYS: dict[str, tuple[str, ...]] = {
    "slice views (Libs/MRML/DisplayableManager/vtkMRMLSliceIntersectionWidget.cxx)": (
        "g", "t", "f", "b", "v", "Shift+V", "r", "Left", "Right", "Up", "Down", "[", "]", "{", "}"),
    "3D views (Libs/MRML/DisplayableManager/vtkMRMLCameraWidget.cxx)": (
        "r", "Left", "Right", "Up", "Down", "Shift+Left", "Shift+Right", "Shift+Up", "Shift+Down", "Home", "End",
        "PgDown", "Insert", "Clear", "+", "-", "Ctrl+B"),
    "3D views (Libs/MRML/DisplayableManager/vtkMRMLModelDisplayableManager.cxx)": ("i",),
    "markups (Modules/Loadable/Markups/VTKWidgets/vtkSlicerMarkupsWidget.cxx)": (
        "s", "Del", "Shift+Del", "Backspace", "Esc"),
    "Segment Editor (Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.cxx)": (
        *"0123456789", *(f"Shift+{digit}" for digit in "0123456789"), "Esc", "Space", "z", "y", "Ctrl+Z", "Ctrl+Y",
        "q", "w", "/", "*", ",", ".", "<", ">", "i"),
    "Segment Editor paint and erase (Modules/Loadable/Segmentations/EditorEffects/"
    "qSlicerSegmentEditorPaintEffect.cxx)": ("+", "=", "-", "_"),
    "Segment Editor draw (Modules/Loadable/Segmentations/EditorEffects/Python/SegmentEditorEffects/"
    "SegmentEditorDrawEffect.py)": ("a", "x", "Return"),
    "main window (Base/QTApp/Resources/UI/qSlicerMainWindow.ui, Base/QTApp/qSlicerMainWindow.cxx, "
    "Base/QTGUI/qSlicerModuleSelectorToolBar.cxx, Applications/SlicerApp/qSlicerAppMainWindow.cxx)": (
        "Ctrl+O", "Ctrl+S", "Ctrl+W", "Ctrl+Z", "Ctrl+Y", "Ctrl+X", "Ctrl+C", "Ctrl+V", "Ctrl+H", "Ctrl+F",
        "Ctrl+0", "Ctrl+1", "Ctrl+2", "Ctrl+3", "Ctrl+4", "Ctrl+5", "Ctrl+6", "Ctrl+`", "Ctrl+Left", "Ctrl+Right"),
    "markups toolbar (Modules/Loadable/Markups/Widgets/qMRMLMarkupsToolBar.cxx)": (
        "Ctrl+Shift+A", "Ctrl+Shift+T", "Ctrl+Shift+Space"),
}
RESERVED_WITH_ANY_MODIFIER = ("[", "]", "{", "}")

_MODIFIER_ORDER = ("Ctrl", "Alt", "Meta", "Shift")


def canonical(keys: str) -> str:
    """One spelling per key chord: modifiers in a fixed order, letters lower case (``"shift+n"`` -> ``"Shift+n"``)."""
    parts = [part for part in keys.replace(" ", "").split("+") if part] or ["+"]
    if keys.endswith("++"):
        parts.append("+")
    *modifiers, key = parts
    modifiers = sorted({m.capitalize() for m in modifiers}, key=_MODIFIER_ORDER.index)
    return "+".join([*modifiers, key.lower() if len(key) == 1 else key])


def base_key(keys: str) -> str:
    return canonical(keys).split("+")[-1] if not canonical(keys).endswith("++") else "+"


def conflicts(keys: str) -> list[str]:
    """Where Slicer already binds ``keys`` (empty when the chord is free)."""
    wanted = canonical(keys)
    found = [where for where, bound in RESERVED_KEYS.items() if wanted in {canonical(k) for k in bound}]
    if base_key(keys) in {canonical(k) for k in RESERVED_WITH_ANY_MODIFIER}:
        found.append("slice views, with any modifier (vtkMRMLSliceIntersectionWidget.cxx)")
    return found


def shortcutFor(action: ShortcutAction) -> Shortcut:
    return next(shortcut for shortcut in SHORTCUTS if shortcut.action is ShortcutAction(action))


def shortcutsHelpText() -> str:
    """One line for the module panel and the help text."""
    return ", ".join(f"{shortcut.keys}: {shortcut.description}" for shortcut in SHORTCUTS)
