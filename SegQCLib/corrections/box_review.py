"""What the reviewer did with each error box and its suggested edit: the provenance kept in a correction record.

``record.json``'s ``reviewed_boxes`` holds one object per box the reviewer dealt with: the report's box fields
(``label``, ``slice``, ``bbox_zyx``, ..., and with suggestions ``edit_id``, ``edit_voxels``, ``edit_gain_dice_est``,
``edit_offered``), the review ``status`` and, new and optional (records written before have neither):

* ``decision``: what happened to the box's suggested edit (:class:`SuggestionDecision`): ``accepted`` (applied as
  suggested; status *fixed (suggestion)*), ``rejected`` (refused; the box was left as it was or marked reviewed),
  ``edited`` (fixed by hand in the Segment Editor, with no suggestion or after accepting one and changing it);
  absent or null when no decision was recorded;
* ``edit_outcome``: where the edit's voxels ended up in the corrected mask (:class:`EditOutcome`, from
  :func:`edit_outcome`): how many hold the suggested label, how many the original one, how many another label.

For fine-tuning: an accepted edit confirms the predicted error on its voxels; a rejected one says the network
predicted an error where the reviewer saw none (``as_original`` voxels); ``edited`` boxes with their outcome say
how far the suggestion was from the reviewer's fix.  The edit's voxels themselves are in the QC run's
``suggested_edits_<label>.nii.gz``; the record keeps the report (``qc_prediction``) that names them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Optional

import numpy as np

from ..errors import InputError

DECISION_KEY = "decision"
OUTCOME_KEY = "edit_outcome"


class SuggestionDecision(str, Enum):
    """What the reviewer did with a box's suggested edit."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    EDITED = "edited"


@dataclass(frozen=True)
class EditOutcome:
    """The edit's voxels in the corrected mask: as suggested, as in the original, or another label."""

    voxels: int
    as_suggested: int
    as_original: int
    other: int


@dataclass
class BoxReview:
    """Typed view of one ``reviewed_boxes`` entry (other keys of the entry are kept in ``extra``)."""

    label: Optional[int] = None
    slice: Optional[int] = None
    bbox_zyx: Optional[list[list[int]]] = None
    status: Optional[str] = None
    decision: Optional[SuggestionDecision] = None
    edit_id: Optional[int] = None
    edit_voxels: Optional[int] = None
    edit_gain_dice_est: Optional[float] = None
    edit_offered: Optional[bool] = None
    edit_outcome: Optional[EditOutcome] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BoxReview:
        known = {name for name in cls.__dataclass_fields__ if name != "extra"}
        values = {key: value for key, value in data.items() if key in known}
        values["decision"] = parse_decision(values.get("decision"))
        outcome = values.get("edit_outcome")
        values["edit_outcome"] = EditOutcome(**outcome) if isinstance(outcome, dict) else outcome
        return cls(**values, extra={key: value for key, value in data.items() if key not in known})

    def to_dict(self) -> dict[str, Any]:
        data = {**self.extra, **{key: value for key, value in asdict(self).items() if key != "extra"}}
        data["decision"] = self.decision.value if self.decision is not None else None
        return data


def parse_decision(value: Any) -> Optional[SuggestionDecision]:
    """A decision from its text (or None); InputError naming the allowed values otherwise."""
    if value is None or isinstance(value, SuggestionDecision):
        return value
    try:
        return SuggestionDecision(value)
    except ValueError as exc:
        allowed = ", ".join(d.value for d in SuggestionDecision)
        raise InputError(f"Unknown suggestion decision {value!r}; use one of {allowed} (or none)") from exc


def check_box_provenance(box: dict[str, Any], index: int) -> dict[str, Any]:
    """``box`` with its decision as text, after checking that decision and outcome make sense."""
    try:
        decision = parse_decision(box.get(DECISION_KEY))
    except InputError as exc:
        raise InputError(f"Reviewed box {index}: {exc}") from exc
    if decision is SuggestionDecision.ACCEPTED and box.get("edit_id") is None:
        raise InputError(f"Reviewed box {index} accepted a suggestion but names no edit_id")
    outcome = box.get(OUTCOME_KEY)
    if outcome is not None:
        try:
            parsed = EditOutcome(**outcome)
        except TypeError as exc:
            raise InputError(f"Reviewed box {index}: edit_outcome needs voxels, as_suggested, as_original and "
                             f"other ({exc})") from exc
        counts = (parsed.voxels, parsed.as_suggested, parsed.as_original, parsed.other)
        if any(not isinstance(c, (int, np.integer)) or c < 0 for c in counts) or \
                parsed.as_suggested + parsed.as_original + parsed.other != parsed.voxels:
            raise InputError(f"Reviewed box {index}: edit_outcome counts must be non-negative and add up to voxels")
    checked = dict(box)
    if DECISION_KEY in checked:
        checked[DECISION_KEY] = decision.value if decision is not None else None
    return checked


def edit_outcome(original: np.ndarray, corrected: np.ndarray, suggested: np.ndarray,
                 edit_mask: np.ndarray) -> EditOutcome:
    """Where the voxels of an edit (``edit_mask``, boolean, same grid) ended up in the corrected mask.

    On an edit's voxels the suggested label always differs from the original one, so each voxel is counted once.
    """
    arrays = [np.asarray(a) for a in (original, corrected, suggested, edit_mask)]
    if len({a.shape for a in arrays}) != 1:
        raise InputError("original, corrected, suggested and the edit mask must share one grid")
    original, corrected, suggested, edit_mask = arrays
    edit_mask = edit_mask.astype(bool, copy=False)
    final = corrected[edit_mask]
    as_suggested = int(np.count_nonzero(final == suggested[edit_mask]))
    as_original = int(np.count_nonzero((final == original[edit_mask]) & (final != suggested[edit_mask])))
    voxels = int(final.size)
    return EditOutcome(voxels, as_suggested, as_original, voxels - as_suggested - as_original)
