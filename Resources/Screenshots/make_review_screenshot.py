"""Render ``review_page.png``: the top of the review page that ``segqc run --html`` writes for the README's sample
case (an MNI152 T1 hippocampus crop segmented by the bundled segmenter, checked by the bundled QC model), as
headless Chromium shows it.  Run from the repository root (needs nilearn and Debian's ``chromium``):
``python Resources/Screenshots/make_review_screenshot.py``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from SegQCLib.commands.cli import main as segqc
from training.sample_case import main as make_sample_case

OUTPUT = Path(__file__).with_name("review_page.png")
WINDOW = "1250,1500"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
BROWSER_TIMEOUT_S = 120


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    browser = next((shutil.which(name) for name in CHROMIUM_NAMES if shutil.which(name)), None)
    if browser is None:
        logging.error("No Chromium found (Debian: apt-get install -y chromium)")
        return 1
    with tempfile.TemporaryDirectory(prefix="segqc-review-shot-") as scratch_name:
        scratch = Path(scratch_name)
        if make_sample_case(["--out", str(scratch / "sample")]) != 0:
            return 1
        if segqc(["run", "--image", str(scratch / "sample" / "image.nii.gz"), "--seg",
                  str(scratch / "sample" / "segmentation.nii.gz"), "--out", str(scratch / "qc"), "--device", "cpu",
                  "--html", "--progress", "none"]) != 0:
            return 1
        page = scratch / "qc" / "review.html"
        # Start at the estimates and pictures: the page without its navigation line and the Slicer section.
        shot = scratch / "shot.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--hide-scrollbars", f"--user-data-dir={scratch / 'profile'}", f"--window-size={WINDOW}",
                        "--virtual-time-budget=10000", f"--screenshot={shot}", page.as_uri()],
                       capture_output=True, timeout=BROWSER_TIMEOUT_S, check=True)
        shutil.copyfile(shot, OUTPUT)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
