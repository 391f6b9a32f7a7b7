#!/usr/bin/env bash
# Measure the GPU path on a lent GPU machine in one command (about 6 minutes of wall time at the
# default sizes), writing JSON figures under $OUT.
#
#   on the device:  bash scripts/device_bench.sh          (OUT set by the device tool)
#   on a CPU here:  OUT=/tmp/out DEVICE=cpu SIZES=96x64 FRAMES=4 REPEATS=1 bash scripts/device_bench.sh
#                   (COMPILE=0 there by default: inductor's CPU compilation takes minutes)
#
# Before the run, here: `bash scripts/device_wheels.sh` puts the wheels the device lacks into
# .whl/ (carry it: `carry: [".whl"]`). Nothing else is needed: the benchmarks make their own frames
# (bench-dealthdr's window comes from the micro preset, rendered here from procedural panoramas).
#
# What runs, each at every size of $SIZES, each step bounded by $STEP_S seconds and all by $TOTAL_S
# (eager figures first, compiled ones after; a failed or skipped step is recorded in
# $OUT/summary.txt and the others go on):
#   bench          the weight-free chain (linearize -> align -> merge -> tonemap), and with --compile
#   bench-nets     CoarseNet and CoarseNet+RefineNet forward passes, fp16, eager and torch.compile
#   bench-dealthdr DeAltHDR (shipped width) at s = 0, 15, inf, fp16, eager and torch.compile
#   bench-chain    linearize -> align -> coarse -> refine -> tonemap (and dealthdr) through
#                  VapourSynth with $STREAMS CUDA streams: fps and the upload/download/handoff counters
# TensorRT: recorded as available or not (torch_tensorrt, onnxruntime's TensorRT provider); the
# ONNX models of `vs-hdrvid export-onnx` run through it with `backend="trt"` where it is.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that comes back}"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-1280x720,1920x1080}
FRAMES=${FRAMES:-24}
REPEATS=${REPEATS:-3}
STREAMS=${STREAMS:-2}
STEP_S=${STEP_S:-150}
TOTAL_S=${TOTAL_S:-450}
COMPILE=${COMPILE:-$([ "$DEVICE" = cpu ] && echo 0 || echo 1)}
WORK=${WORK:-$(mktemp -d)}
t0=$(date +%s)
say() { echo "device_bench: $(( $(date +%s) - t0 )) s: $*" | tee -a "$OUT/summary.txt"; }
mkdir -p "$OUT"

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl
  export PYTHONPATH="$WORK/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
hv() { "$PY" -c 'import sys; from vs_hdrvid.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }
step() {  # step NAME ARGS...: one bounded benchmark, its output in $OUT/NAME.log
  local name=$1; shift
  local left=$(( TOTAL_S - ($(date +%s) - t0) ))
  if [ "$left" -lt 20 ]; then say "$name: skipped (the $TOTAL_S s budget is spent)"; return; fi
  timeout "$(( left < STEP_S ? left : STEP_S ))" "$PY" -c 'import sys; from vs_hdrvid.cli import main; sys.exit(main(sys.argv[1:]))' "$@" \
    > "$OUT/$name.log" 2>&1
  local rc=$?
  say "$name: exit $rc ($(tail -n 1 "$OUT/$name.log"))"
}

say "$("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
  torch.cuda.get_device_name() if torch.cuda.is_available() else "")')"
say "tensorrt: $("$PY" -c '
ok = []
try:
    import torch_tensorrt; ok.append("torch_tensorrt " + torch_tensorrt.__version__)
except Exception: pass
try:
    import onnxruntime as ort
    if "TensorrtExecutionProvider" in ort.get_available_providers(): ok.append("onnxruntime TensorRT provider")
except Exception: pass
print(", ".join(ok) or "not available")')"

# the eager figures first, then the compiled ones, the whole under $TOTAL_S seconds
IFS=, read -r -a sizes <<< "$SIZES"
step bench-nets bench-nets --sizes "$SIZES" --device "$DEVICE" --repeats "$REPEATS" --json "$OUT/bench-nets.json"
hv synth --preset micro --root "$WORK/data" > "$OUT/synth.log" 2>&1 || say "synth micro failed"
dealthdr=(bench-dealthdr --configs small --sizes "$SIZES" --device "$DEVICE" --s 0,15,inf --repeats "$REPEATS"
          --root "$WORK/data" --preset micro --patch 32 --no-flops)
step bench-dealthdr "${dealthdr[@]}" --json "$OUT/bench-dealthdr.json"
chain=(bench-chain --sizes "$SIZES" --methods coarse,refine,dealthdr --frames "$FRAMES" --device "$DEVICE"
       --streams "$STREAMS")
step bench-chain "${chain[@]}" --json "$OUT/bench-chain.json"
for size in "${sizes[@]}"; do
  step "bench-$size" bench --size "$size" --frames "$FRAMES" --device "$DEVICE" --json "$OUT/bench-$size.json"
done
if [ "$COMPILE" = 1 ]; then
  step bench-nets-compile bench-nets --sizes "$SIZES" --device "$DEVICE" --repeats "$REPEATS" --compile \
    --json "$OUT/bench-nets-compile.json"
  step bench-dealthdr-compile "${dealthdr[@]}" --compile --json "$OUT/bench-dealthdr-compile.json"
  step bench-chain-compile "${chain[@]}" --compile --json "$OUT/bench-chain-compile.json"
  for size in "${sizes[@]}"; do
    step "bench-compile-$size" bench --size "$size" --frames "$FRAMES" --device "$DEVICE" --compile \
      --json "$OUT/bench-compile-$size.json"
  done
fi
say "wrote $(ls "$OUT" | tr '\n' ' ')"
