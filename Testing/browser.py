"""Headless Chromium for the page tests: load a page with a probe script and read back what it found, or take a
screenshot.  Tests skip, saying why, where no Chromium is installed (Debian: apt-get install -y chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=10000"]
BROWSER_TIMEOUT_S = 120

# Put first in <head>: records script errors, failed resource loads and console.error calls.
ERROR_RECORDER = """<script>
window.__segqcErrors = [];
window.addEventListener('error', (e) => {
  const target = e.target && e.target !== window ? (e.target.src || e.target.href || e.target.tagName) : null;
  window.__segqcErrors.push(target ? 'failed to load ' + target : String(e.message));
}, true);
(() => { const original = console.error;
  console.error = (...args) => { window.__segqcErrors.push(args.map(String).join(' ')); original(...args); }; })();
</script>"""

# Put before </body>: after load runs window.__segqcProbe() (defined by the test, returns an object) and writes
# {"errors": [...], "result": ...} into a <pre> that --dump-dom prints.
PROBE_RUNNER = """<script>
window.addEventListener('load', () => {
  let result = null;
  try { result = window.__segqcProbe ? window.__segqcProbe() : null; }
  catch (e) { window.__segqcErrors.push('probe failed: ' + e); }
  const out = document.createElement('pre');
  out.id = 'segqc-probe';
  out.textContent = JSON.stringify({errors: window.__segqcErrors, result: result});
  document.body.appendChild(out);
});
</script>"""


def find_chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium not installed (Debian: apt-get install -y chromium); the page was not "
                "checked in a browser")


def probe_page(page: Path, probe_js: str, profile: Path) -> dict:
    """Load a copy of ``page`` (same folder, so relative links resolve) with the recorders and ``probe_js`` (which
    defines ``window.__segqcProbe``); return {"errors": [...], "result": ...}."""
    browser = find_chromium()
    text = page.read_text(encoding="utf-8")
    text = text.replace("<head>", "<head>\n" + ERROR_RECORDER, 1)
    text = text.replace("</body>", f"<script>{probe_js}</script>\n{PROBE_RUNNER}\n</body>", 1)
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(text, encoding="utf-8")
    try:
        completed = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                                    probe.as_uri()], capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
    finally:
        probe.unlink()
    match = re.search(r'<pre id="segqc-probe">(.*?)</pre>', completed.stdout, re.S)
    assert match, f"page did not load in Chromium: {completed.stderr[-2000:]}"
    raw = match.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return json.loads(raw)


def screenshot(page: Path, out: Path, profile: Path, width: int = 1250, height: int = 1800) -> Path:
    browser = find_chromium()
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}",
                    "--hide-scrollbars", f"--window-size={width},{height}", page.as_uri()], capture_output=True,
                   timeout=BROWSER_TIMEOUT_S)
    assert out.is_file(), f"Chromium wrote no screenshot of {page}"
    return out
