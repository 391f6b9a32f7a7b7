#!/usr/bin/env bash
# DeAltHDR size sweep under one fixed budget (README "DeAltHDR: size sweep and ablations").
#
#   scripts/dealthdr_sweep.sh MINUTES [SIZE...]       default sizes: tiny small medium
#   EXTRA="--shared-encoder" NAME=shared scripts/dealthdr_sweep.sh 8 small   # an ablation
#
# Each size trains from the classical answer (--init-from none: the untrained network is the
# DIS-aligned merge) for MINUTES of wall time into runs/dealthdr-<NAME or sweep>-<size>/, ships
# nothing, and validates every 400 steps on the val preset's day/night scenes (6 crops per scene).
# The table: `python -m vs_hdrvid.train.sweep_table runs/dealthdr-sweep-*`.
set -euo pipefail
minutes=${1:?usage: $0 MINUTES [SIZE...]}
shift
sizes=("$@")
[ $# -eq 0 ] && sizes=(tiny small medium)
py=${PYTHON:-.venv/bin/python}
for size in "${sizes[@]}"; do
  "$py" -m vs_hdrvid.cli train dealthdr --model "$size" --init-from none --ship never \
    --steps 200000 --batch 4 --patch 64 --minutes "$minutes" --val-every 400 --val-windows 6 \
    --out-name "dealthdr-${NAME:-sweep}-$size" ${EXTRA:-}
done
