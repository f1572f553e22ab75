#!/usr/bin/env bash
# One prepared run of every benchmark on a GPU machine (fits a ~10-minute device call; ~8 minutes worst case).
#
#   device:  bash benchmarks/gpu_suite.sh            (carry .whl: ml-collections is not in the GPU image)
#   here:    QUICK=1 OUT=/tmp/suite bash benchmarks/gpu_suite.sh   (shrunk cases, CPU, a minute or two)
#
# Writes $OUT/log.txt (everything, stderr included), $OUT/train_step.jsonl, $OUT/acquisition.jsonl and
# $OUT/scaling.jsonl (when those benchmarks exist), $OUT/demo_metrics.jsonl + $OUT/demo_summary.json.
# Each stage has its own time limit; a failing stage is logged and the next one still runs; the exit status
# is non-zero when any stage failed. Env overrides: PYTHON, SITE (wheel target), ACQ_ARGS, SCALING_ARGS,
# TS_ARGS (replace train_step.py's arguments), DEMO_STEPS.
set -u -o pipefail
export PYTHONUNBUFFERED=1
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD
QUICK=${QUICK:-0}
export QUICK
OUT=${OUT:-$ROOT/runs/gpu_suite}
mkdir -p "$OUT"
LOG=$OUT/log.txt
: >"$LOG"
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/boostmis_suite.XXXXXX")
FAILED=()
T_ALL=$SECONDS

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

# stage NAME LIMIT_S OUTFILE CMD...: stdout -> OUTFILE + log + terminal, stderr -> log + terminal.
stage() {
    local name=$1 limit=$2 outfile=$3
    shift 3
    log "== $name (limit ${limit}s): $*"
    local t0=$SECONDS rc
    : >"$outfile"
    timeout --kill-after=10 "$limit" "$@" 2> >(tee -a "$LOG" >&2) | tee -a "$outfile" "$LOG"
    rc=$?
    log "== $name: rc=$rc in $((SECONDS - t0))s"
    if [ "$rc" -ne 0 ]; then FAILED+=("$name(rc=$rc)"); fi
    return 0
}

# ------------------------------------------------------------------ environment
if compgen -G ".whl/*.whl" >/dev/null; then
    log "installing carried wheels into $SITE: $(cd .whl && echo *.whl)"
    if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        .whl/*.whl >>"$LOG" 2>&1; then
        log "wheel install failed (see above)"
        exit 1
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
# The repo itself goes first (no `pip install -e`: the device has no index to fetch a build backend from).
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

{
    echo "quick=$QUICK out=$OUT python=$(command -v "$PY") git=$(git rev-parse --short HEAD 2>/dev/null || echo none)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" - <<'EOF'
import importlib
import jax
print("jax", jax.__version__, jax.default_backend(), jax.devices())
for m in ("flax", "optax", "orbax.checkpoint", "ml_collections", "sklearn", "numpy"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:  # noqa: BLE001
        print(m, "MISSING", type(e).__name__, e)
EOF
} 2>&1 | tee -a "$LOG"
if ! "$PY" -c "import ml_collections, boostmis_jax" >>"$LOG" 2>&1; then
    log "cannot import ml_collections/boostmis_jax: carry .whl (pip download --no-deps ml-collections -d .whl)"
    exit 1
fi

# ------------------------------------------------------------------ 1. SSL step vs bare step
if [ "$QUICK" = 1 ]; then
    DEFAULT_TS="--model cnn --dtype bfloat16 --batch 8 --uratio 2 --steps 2 --warmup 1
                --image-size 16 --channels 3 --profile cnn:bfloat16"
    DEFAULT_ACQ="--pool 2000 --image-pool 200 --repeats 1"
    DEFAULT_SCALING="--devices 1,2 --batch 8 --uratio 2 --steps 2 --warmup 1 --image-size 16"
else
    # wrn28_2 first: lines are flushed per case, so a stage cut at its limit still keeps the main numbers.
    DEFAULT_TS="--model wrn28_2,cnn --dtype bfloat16 --dtype float32 --batch 64 --uratio 7 --steps 30 --warmup 5
                --image-size 32 --channels 3 --profile wrn28_2:bfloat16"
    DEFAULT_ACQ=""
    DEFAULT_SCALING=""
fi
# shellcheck disable=SC2086  # word splitting of the argument lists is intended
stage train_step 270 "$OUT/train_step.jsonl" \
    "$PY" benchmarks/train_step.py ${TS_ARGS:-$DEFAULT_TS}

# ------------------------------------------------------------------ 2. acquisition, 3. scaling (if present)
if [ -f benchmarks/acquisition.py ]; then
    # shellcheck disable=SC2086
    stage acquisition 60 "$OUT/acquisition.jsonl" "$PY" benchmarks/acquisition.py ${ACQ_ARGS:-$DEFAULT_ACQ}
else
    log "benchmarks/acquisition.py: not present, skipped"
fi
if [ -f benchmarks/scaling.py ]; then
    # shellcheck disable=SC2086
    stage scaling 60 "$OUT/scaling.jsonl" "$PY" benchmarks/scaling.py ${SCALING_ARGS:-$DEFAULT_SCALING}
else
    log "benchmarks/scaling.py: not present, skipped"
fi

# ------------------------------------------------------------------ 4. end-to-end demo (bundled digits data)
if [ "$QUICK" = 1 ]; then
    DEMO_STEPS=${DEMO_STEPS:-20}
    DEMO_EVAL=10
else
    DEMO_STEPS=${DEMO_STEPS:-300}
    DEMO_EVAL=100
fi
stage demo 90 "$WORK/demo_stdout.txt" \
    "$PY" -m boostmis_jax.main --config configs/demo.py --workdir "$WORK/demo" \
    --config.train.steps="$DEMO_STEPS" --config.train.eval_every="$DEMO_EVAL" \
    --config.train.log_every="$DEMO_EVAL" --config.checkpoint.every_steps="$DEMO_STEPS"
[ -f "$WORK/demo/metrics.jsonl" ] && cp "$WORK/demo/metrics.jsonl" "$OUT/demo_metrics.jsonl"
[ -f "$WORK/demo/summary.json" ] && cp "$WORK/demo/summary.json" "$OUT/demo_summary.json"

# ------------------------------------------------------------------ summary
if [ -s "$OUT/train_step.jsonl" ]; then
    "$PY" - "$OUT/train_step.jsonl" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "ratio" in r:
        print(f"{r['model']:>8} {r['dtype']:>8} {r['device']}: batch {r['batch']}  ssl {r['ssl_img_per_s']:>9} img/s"
              f"  bare {r['bare_img_per_s']:>9} img/s  ratio {r['ratio']}")
EOF
fi
rm -rf "$WORK"
log "suite done in $((SECONDS - T_ALL))s; failed stages: ${FAILED[*]:-none}"
[ "${#FAILED[@]}" -eq 0 ]
