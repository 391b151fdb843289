"""One line per estimate on the review pages: what it is, and what to use it for."""

from __future__ import annotations

from .orientation import View

DICE_EST = ("Estimated Dice, computed from the predicted error maps (SegQC's formula), pooled over classes. "
            "Use it to rank cases and decide which to review first: of the two Dice figures it is the better "
            "calibrated one on the bundled model's validation data.")
DICE_PRED = ("Predicted Dice from the network's own regression head, independent of the error maps. A second "
             "opinion: when it differs from the estimated Dice by more than 0.10 the case is flagged; look at it "
             "yourself.")
NSD_PRED = "Predicted normalised surface Dice (regression head): the share of the boundary within tolerance."
QI = ("Quality index, 1 - the mean predicted error probability over the whole volume. Close to 1 for most cases "
      "because most voxels are background: compare it only between cases of similar size, never read it as a Dice.")
WORST_SLICE = ("The slice with the largest summed predicted error along the slice axis: start the review there "
               "(the slice pictures show the worst slices, worst first).")
BOXES = ("Error boxes: regions on a slice whose predicted error probability is above the threshold, ranked by "
         "summed probability; each is a place to check and, if wrong, fix.")
CLASS_DICE = ("Estimated Dice, IoU and ARVD per class from the same error maps: the lowest class is where to "
              "look first.")
CAVEAT = ("These are predictions, not measurements: use them to order the review, not instead of it.")


def slice_axis(axis: int, view: View) -> str:
    name = "zyx"[axis]
    return (f"Slices are ranked along array axis {axis} ({name} of the image as stored), which is the {view.value} "
            "direction here (by default the axis of coarsest spacing, the one a reader scrolls through).")
