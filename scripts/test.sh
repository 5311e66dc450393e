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
# Two workers, whole test files each (their servers and browsers are module fixtures), the
# longest files first (conftest.py's LONGEST_FIRST; xdist's own reorder would put them last).
# OMP_NUM_THREADS=1: each worker's engines, servers and torch use one thread, so two workers
# share two cores without their thread pools waiting on each other (measured: two 2-thread
# encoders side by side take 2.0 s per encode, two 1-thread ones 1.5 s).
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" XDG_CACHE_HOME="$scratch/cache" MOBILESAM_TEST_ONNX_CACHE="$scratch/onnx" \
  python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --basetemp="$scratch/pytest" "$@"
