#!/usr/bin/env bash
# The GPU figures that matter most, in one short device call (~2.7 minutes): the WRN-28-2 SSL step in bf16
# and fp32 (B 64, uratio 7, 32x32x3, first compile included), the PyTorch peer (USB FixMatch) at the same
# shape, and aus+bus over a 1M x 2048 feature pool. benchmarks/gpu_suite.sh is the full suite; this is its
# core for a session with little device time left.
#   device: bash benchmarks/gpu_short.sh   (carry .whl with the ml-collections wheel, and .usb_peer)
# Writes $OUT/bench.jsonl (one JSON line per case, tagged with its stage), $OUT/log.txt, $OUT/usb_peer.jsonl.
set -u
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
OUT=${OUT:-runs/gpu_short}; mkdir -p "$OUT"
LOG=$OUT/log.txt; B=$OUT/bench.jsonl; : >"$LOG"; : >"$B"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl >>"$LOG" 2>&1 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export JAX_COMPILATION_CACHE_DIR=/tmp/xla_short JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$LOG" 2>&1
tag() { sed -u "s/^{/{\"stage\": \"$1\", /" | grep --line-buffered '^{' >>"$B"; }
run() {  # run STAGE LIMIT CMD...
    local s=$1 l=$2 t0=$SECONDS; shift 2
    echo "== $s (limit ${l}s): $*" >>"$LOG"
    timeout --kill-after=3 "$l" "$@" 2>>"$LOG" | tee -a "$LOG" | tag "$s"
    echo "{\"stage\": \"$s\", \"rc\": ${PIPESTATUS[0]}, \"seconds\": $((SECONDS - t0)), \"limit\": $l}" >>"$B"
}
run step 75 python3 benchmarks/train_step.py --model wrn28_2 --batch 64 --uratio 7 --steps 20 --warmup 3 \
    --image-size 32 --channels 3 --dtype bfloat16 --dtype float32 --bare-on wrn28_2:bfloat16
if [ -d .usb_peer ]; then
    for a in "--amp --channels-last" ""; do
        timeout 20 python3 benchmarks/usb_peer.py --device cuda --usb-root .usb_peer --batch 64 --uratio 7 \
            --steps 20 --warmup 3 $a >>"$OUT/usb_peer.jsonl" 2>>"$LOG"
    done
fi
run pool_1m 45 python3 benchmarks/acquisition.py --skip-images --pool 1000000 --repeats 1 --no-knn-alone
echo "done in ${SECONDS}s" >>"$LOG"
