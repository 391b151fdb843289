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
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.segqc-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$CONSTRAINTS" -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "$TORCH_SPEC"
  .venv/bin/python -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" -e ".[test,sample]"
  touch "$stamp"
fi
