#!/usr/bin/env bash
# Installs asdkit into ./.venv. `--dev` adds the test tools.
# torch and torchvision go first, as the one pair that imports together here (CPU use, from local
# files where the machine has them); everything else comes after and leaves that pair alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1" 2>&1 | grep -v "is ignored: it is neither" || true
.venv/bin/python -c "import torch, torchvision" || { echo "install: torch/torchvision did not install" >&2; exit 1; }
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra}" 2>&1 | grep -v "is ignored: it is neither" || true
.venv/bin/python -c "import asdkit" || { echo "install: asdkit did not install" >&2; exit 1; }
echo "asdkit installed in .venv ($(.venv/bin/python -c 'import asdkit; print(asdkit.__version__)'))"
