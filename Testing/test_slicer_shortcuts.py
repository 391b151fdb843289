"""The SegQC module's keys: none that a slice view, a 3D view, the Segment Editor or Slicer's main window uses,
each documented in the README (no Slicer needed: the table is plain Python)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from SegQCModuleLib.shortcuts import SHORTCUTS, ShortcutAction, canonical, conflicts, shortcutsHelpText

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("shortcut", SHORTCUTS, ids=lambda s: s.keys)
def test_no_segqc_key_is_one_that_slicer_already_binds(shortcut):
    assert conflicts(shortcut.keys) == []


@pytest.mark.parametrize("keys, where", [("f", "slice views"), ("r", "slice views"), ("b", "slice views"),
                                         ("Shift+V", "slice views"), ("Alt+[", "any modifier"),
                                         ("z", "Segment Editor"), ("Shift+3", "Segment Editor"),
                                         ("Ctrl+Shift+A", "markups toolbar"), ("Ctrl+F", "main window")])
def test_keys_slicer_binds_are_reported_with_where_they_are_bound(keys, where):
    assert any(where in found for found in conflicts(keys))


def test_each_key_and_each_action_is_used_once():
    assert len({canonical(s.keys) for s in SHORTCUTS}) == len(SHORTCUTS)
    assert {s.action for s in SHORTCUTS} == set(ShortcutAction)


def test_key_spellings_compare_equal_whatever_their_case_and_modifier_order():
    assert canonical("shift+ctrl+N") == canonical("Ctrl+Shift+n") == "Ctrl+Shift+n"
    assert canonical("Ctrl++") == "Ctrl++"


def test_the_readme_documents_exactly_the_modules_keys():
    section = README.read_text(encoding="utf-8").split("### Review with the keyboard", 1)[1].split("\n### ", 1)[0]
    documented = {canonical(key) for key in re.findall(r"^\| `([^`]+)`", section, flags=re.MULTILINE)}
    assert documented == {canonical(s.keys) for s in SHORTCUTS}


def test_the_panels_help_line_names_every_key():
    text = shortcutsHelpText()
    assert all(f"{s.keys}: {s.description}" in text for s in SHORTCUTS)
