#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the CPU build of PyTorch and SegQC (editable).
# torch is pinned and installed first: an unpinned torch pulls a multi-GB CUDA build.
# Everything after torch is installed with constraints.txt (-c), which pins that same torch: the test extra's
# nnU-Net and MONAI (and their requirements) can then never replace it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CONSTRAINTS=constraints.txt
if [ -n "${SEGQC_TORCH_SPEC:-}" ]; then  # another torch: constrain to that one instead
  CONSTRAINTS=.venv-constraints.txt
  printf '%s\n' "$SEGQC_TORCH_SPEC" > "$CONSTRAINTS"
fi
TORCH_SPEC=$(grep -E '^torch([<>=!~ ]|$)' "$CONSTRAINTS")
# The Slicer rendering tests draw slice views off-screen with OpenGL (EGL + Mesa); without it they skip.
if ! ldconfig -p 2>/dev/null | grep -q "libEGL_mesa.so.0"; then
  packages="libegl1 libegl-mesa0 libgl1-mesa-dri"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null) \
      || echo "warning: could not install $packages; the Slicer rendering tests will be skipped" >&2
  else
    echo "note: for the Slicer rendering tests install $packages (sudo apt-get install $packages)" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.segqc-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$CONSTRAINTS" -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "$TORCH_SPEC"
  .venv/bin/python -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" -e ".[test,sample]"
  touch "$stamp"
fi
