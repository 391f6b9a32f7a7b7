#!/usr/bin/env bash
# The wheels the device machine's Python lacks for scripts/device_train.sh (it has torch, numpy,
# OpenCV, safetensors, matplotlib and tqdm): VapourSynth (imported by the package) and OpenEXR
# (the ground-truth frames). Into .whl/ (git-ignored); carry it with the run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "vapoursynth==81" "OpenEXR>=3.2"
ls -la .whl
