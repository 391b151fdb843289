"""The reviewer's verdict on a whole case, stored in the Slicer scene, the correction record and the queue's status
file."""

from __future__ import annotations

from enum import Enum
from typing import Optional, Union

from ..errors import InputError


class CaseRating(str, Enum):
    """How much the segmentation needed: nothing, small edits, large edits, or it is unusable."""

    ACCEPT = "accept"
    MINOR_FIXES = "minor_fixes"
    MAJOR_FIXES = "major_fixes"
    REJECT = "reject"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize()


def parse_rating(value: Union[str, CaseRating, None]) -> Optional[CaseRating]:
    """A rating from its value (``"minor_fixes"``), its label (``"Minor fixes"``) or None; InputError otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, CaseRating):
        return value
    text = str(value).strip().lower().replace(" ", "_").replace("-", "_")
    try:
        return CaseRating(text)
    except ValueError:
        choices = ", ".join(rating.value for rating in CaseRating)
        raise InputError(f"Unknown case rating {value!r}; expected one of {choices}") from None
