#!/usr/bin/env bash
# Installs humwatch into ./.venv. `--dev` adds the test tools, and the system packages that the
# service's tests drive (Debian's chromium for the dashboard's browser test, postgresql for the
# store's tests, prometheus for the /metrics scrape test), each only when it is missing.
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
.venv/bin/python -c "import humwatch" || { echo "install: humwatch did not install" >&2; exit 1; }
if [ -n "$extra" ]; then
  need=""
  command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need="$need chromium"
  command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need="$need postgresql"
  command -v prometheus >/dev/null 2>&1 || need="$need prometheus"
  if [ -n "$need" ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    if command -v apt-get >/dev/null 2>&1 && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
      echo "install: apt-get install$need (for the service's browser, database and metrics tests)"
      $sudo apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $need >/dev/null \
        || echo "install: apt-get install$need failed; those tests will be skipped" >&2
    else
      echo "install: the service's browser, database and metrics tests need$need (apt-get install$need); they will be skipped" >&2
    fi
  fi
fi
echo "humwatch installed in .venv ($(.venv/bin/python -c 'import humwatch; print(humwatch.__version__)'))"
