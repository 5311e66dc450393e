#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements-dev.txt
# Browser tests use Debian's Chromium (never a downloaded browser build).
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
# onnxruntime-web for in-browser decoding, served from static/node_modules (pinned by package-lock.json)
npm ci --prefix static --no-audit --no-fund --loglevel=error
ruff check . && ruff format --check .
python -m pip install -q -r requirements-ray.txt  # the Ray batch test runs in CI (never skipped)
# Everything the suite writes outside the checkout (pytest's temporary folders, about 2 GB of
# exports; any user cache) goes into one scratch folder, removed when the run ends.
scratch="$(mktemp -d -t mobilesam-tests.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
# Two workers, whole test files each (their servers and browsers are module fixtures). Most tests
# keep a core busy, so on a 2-core machine two workers gain ~15% over one (each test runs ~1.7x
# slower beside another), from the moments one waits on a browser, a server or a network.
XDG_CACHE_HOME="$scratch/cache" MOBILESAM_TEST_ONNX_CACHE="$scratch/onnx" \
  python -m pytest -q -n 2 --dist loadfile --basetemp="$scratch/pytest" "$@"
