#!/usr/bin/env bash
# Continue every network's training on a lent GPU machine in one command (under 9 minutes of wall
# time), and bring back the weights, manifest, curves and logs under $OUT.
#
#   on the device:  bash scripts/device_train.sh          (OUT set by the device tool)
#   on a CPU here:  OUT=/tmp/out DEVICE=cpu PROFILE=tiny PRESET=micro MINUTES=1 ONLY=coarse-2exp \
#                   bash scripts/device_train.sh
#
# Before the run, here: `bash scripts/device_wheels.sh` puts the wheels the device lacks into
# .whl/, and `vs-hdrvid synth --fetch-panoramas` the CC0 panoramas into data/panoramas; carry both
# (`carry: [".whl", "data/panoramas"]`). The device machine renders the training and validation
# presets from them with all its cores, then runs `vs-hdrvid train-all` on the GPU (bf16 autocast,
# the gpu profile's batch sizes) from the shipped weights in a copy of weights/.
#
# Output: $OUT/summary.txt (what each network reached and whether it shipped), $OUT/weights.tgz.*
# (the weights folder after training, split in 15 MB parts: `cat weights.tgz.* | tar xz -C weights`
# brings it into the checkout; review `git diff weights/MANIFEST.json` before committing) and
# $OUT/logs.tgz (each run's log.jsonl and curve.png).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that comes back}"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
PROFILE=${PROFILE:-gpu}
MINUTES=${MINUTES:-6}
PRESET=${PRESET:-train}
VAL_PRESET=${VAL_PRESET:-${PRESET/train/val}}
WORKERS=${WORKERS:-$(nproc)}
ONLY=${ONLY:-}
WORK=${WORK:-$(mktemp -d)}
t0=$(date +%s)
say() { echo "device_train: $(( $(date +%s) - t0 )) s: $*"; }

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl
  export PYTHONPATH="$WORK/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
hv() { "$PY" -c 'import sys; from vs_hdrvid.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }
say "python $("$PY" -c 'import torch; print(torch.__version__, torch.cuda.is_available())')"

for p in $(printf '%s\n' "$PRESET" "$VAL_PRESET" | sort -u); do
  hv synth --preset "$p" --root "$WORK/data" --panoramas data/panoramas --workers "$WORKERS"
done
say "data rendered"

mkdir -p "$WORK/weights" "$OUT"
cp -r weights/. "$WORK/weights/"
status=0
hv train-all --minutes "$MINUTES" --device "$DEVICE" --profile "$PROFILE" --workers "$WORKERS" \
  --root "$WORK/data" --preset "$PRESET" --val-preset "$VAL_PRESET" ${ONLY:+--only "$ONLY"} \
  --weights-dir "$WORK/weights" --runs-dir "$WORK/runs" | tee "$OUT/summary.txt" || status=$?
say "training done (status $status)"

tar czf "$WORK/weights.tgz" -C "$WORK/weights" .
split -b 15m -d "$WORK/weights.tgz" "$OUT/weights.tgz."
(cd "$WORK/runs" && find . -name log.jsonl -o -name curve.png | tar czf "$OUT/logs.tgz" -T -)
say "wrote $(ls "$OUT" | tr '\n' ' ')"
exit $status
