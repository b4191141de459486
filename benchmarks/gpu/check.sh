#!/usr/bin/env bash
# `make gpu-check`: the one prepared device check, for the GPU machine of the device tool (one H200, Python 3.12,
# jax 0.11.2, PyTorch; no registry). Run there from the repository root as ONE call, carrying `.whl`
# (`make gpu-wheels` fills it here):
#
#     bash benchmarks/gpu/check.sh            # device tool: run(command="bash benchmarks/gpu/check.sh",
#                                             #                  carry=[".whl"], timeout_s=560)
#
# Steps (each bounded by its own time limit; a failed step is recorded and the next one still runs):
#   install  the carried wheels into /tmp/site (--no-deps, --no-index); stepwise itself from the tree (PYTHONPATH)
#   deep     stepwise run stepwise_deep --scale gpu --loss L for each loss, the three at once
#   tests    tests/test_device.py on the GPU: jit, training sharded over the local devices, both NTK backends
#            against the CPU in float32, determinism
#   train    benchmarks/gpu/bench_train.py: ResNet-18 (width 1, 32x32, batch 256) step, JAX vs PyTorch, float32 / TF32
#   ntk      benchmarks/bench_ntk.py on the GPU: CPU-scale ResNet-18 (176,792 parameters, d = 16), n = 2000, 5000,
#            10000, at XLA's default precision and at float32 ("highest")
# and writes to $OUT (at most 8 files, flat): gpu_check.json (every step's status, wall time, the deep runs'
# results), bench_train_gpu.json, bench_ntk_gpu.json, bench_ntk_gpu.png, stepwise_deep_<loss>.png x 3, log.txt.
# Those are committed under docs/gpu/.
#
# GPU_DRYRUN=1 runs every step for a handful of iterations on whatever device is there (the CPU here and in CI;
# tests/test_gpu_check.py does), with the project's venv python (PY=...) and OUT defaulting to a temporary folder.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
T_START=$SECONDS
DRY=${GPU_DRYRUN:-0}
OUT=${OUT:-$(mktemp -d)}
WORK=$(mktemp -d)
LOG="$OUT/log.txt"
STATUS="$WORK/status.tsv"
: >"$STATUS"
export PYTHONUNBUFFERED=1

if [ "$DRY" = 1 ]; then
    PY=${PY:-$ROOT/.venv/bin/python}
    LOSSES=${LOSSES:-"barlow_twins"}
    # the GPU configuration shrunk to seconds: same code path (ResNet-18, bf16, patches), tiny width and batch
    DEEP_ARGS=(--train.steps 3 --net.width 0.125 --train.batch-size 16 --data.n-train 64 --data.n-eval 32
               --net.embed-dim 16 --net.projector 16 8 --data.patch-size 16 --train.track-every 1)
    NTK_ARGS=(--quick --methods jax)
    NTK_HIGHEST_ARGS=("${NTK_ARGS[@]}")
    TRAIN_ARGS=(--dry-run)
    TEST_TIMEOUT=600
    TEST_SELECT=(-k "jitted_resnet")  # the plumbing, not the whole subset: make test runs that file anyway
else
    PY=${PY:-python3}
    LOSSES=${LOSSES:-"barlow_twins simclr vicreg"}
    DEEP_ARGS=()
    NTK_ARGS=(--models resnet --methods jax --sizes 2000 5000 10000 --max-case-seconds 120)
    NTK_HIGHEST_ARGS=(--models resnet --methods jax --sizes 5000 --max-case-seconds 120)
    TRAIN_ARGS=()
    TEST_TIMEOUT=120
    TEST_SELECT=(-W "default::DeprecationWarning" -W "default::FutureWarning")  # the image's versions may warn
fi

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

# The whole check ends within BUDGET seconds (the device call's limit is 600 s): each step's limit is cut to what is
# left, keeping RESERVE seconds for the summary, so a slow step costs its own result, not the others'.
# (A dry run on a busy 2-core CPU can take minutes per step: it gets 1400 s, which tests/test_gpu_check.py allows.)
if [ "$DRY" = 1 ]; then BUDGET=${GPU_CHECK_BUDGET:-1400}; else BUDGET=${GPU_CHECK_BUDGET:-570}; fi
RESERVE=25

# GPU_CHECK_STEPS="deep tests" runs only those steps (of: deep tests train ntk_default ntk_highest); default all.
wanted() { [ -z "${GPU_CHECK_STEPS:-}" ] || [[ " $GPU_CHECK_STEPS " == *" $1 "* ]]; }

# step NAME SECONDS CMD...: runs CMD with a time limit, appends its output to the log, records status and time.
step() {
    local name=$1 limit=$2; shift 2
    wanted "$name" || return 0
    [ "$DRY" = 1 ] && limit=$((3 * limit))  # the limits are sized for the GPU; a busy CPU compiles slower
    local t0=$SECONDS rc left=$((BUDGET - RESERVE - SECONDS + T_START))
    if [ "$left" -lt 15 ]; then
        log "== $name: skipped, ${left}s left of the ${BUDGET}s budget"
        printf '%s\t%s\t%s\n' "$name" 124 0 >>"$STATUS"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    log "== $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >>"$STATUS"
    log "== $name: exit $rc after $((SECONDS - t0))s"
    return 0
}

log "gpu-check (dry run: $DRY) in $ROOT, OUT=$OUT"
if [ "$DRY" != 1 ]; then
    # The image has jax, flax, optax, numpy, scipy, ... (benchmarks/gpu/image_packages.txt); what it lacks travels
    # as wheels in .whl (make gpu-wheels). stepwise itself is imported from the tree.
    if ls .whl/*.whl >/dev/null 2>&1; then
        step install 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
    else
        log "no wheels in .whl: run 'make gpu-wheels' here and carry .whl"
        printf 'install\t1\t0\n' >>"$STATUS"
    fi
    export PYTHONPATH=/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$LOG" 2>&1
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
"$PY" -c "import jax, flax, stepwise; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" \
    >>"$LOG" 2>&1

# The deep runs (the science) go first and at once: on one H200 a 32x32 ResNet-18 at batch 256 leaves most of the chip idle, so
# three processes (each allowed a third of the device memory) finish in about the time of one; their wall times,
# measured while sharing the GPU, are upper bounds for a run alone.
deep_all() {
    local pids=() loss
    for loss in $LOSSES; do
        XLA_PYTHON_CLIENT_MEM_FRACTION=0.3 "$PY" -m stepwise.cli run stepwise_deep --scale gpu --loss "$loss" \
            --out "$WORK/deep_$loss" "${DEEP_ARGS[@]}" >"$WORK/deep_$loss.log" 2>&1 &
        pids+=($!)
    done
    local rc=0 i=0
    for loss in $LOSSES; do
        wait "${pids[$i]}"; local r=$?
        echo "deep_$loss exit $r"; cat "$WORK/deep_$loss.log"
        printf '%s\t%s\t%s\n' "deep_$loss" "$r" "$((SECONDS - DEEP_T0))" >>"$STATUS"
        [ "$r" -gt "$rc" ] && rc=$r
        i=$((i + 1))
    done
    return 0
}
DEEP_T0=$SECONDS
export -f deep_all
export PY WORK STATUS LOSSES DEEP_T0
export DEEP_ARGS_STR="${DEEP_ARGS[*]}"
step deep "${DEEP_LIMIT:-270}" bash -c 'DEEP_ARGS=($DEEP_ARGS_STR); deep_all'
step tests "$TEST_TIMEOUT" "$PY" -m pytest -q -p no:cacheprovider -p no:xdist tests/test_device.py \
    --junitxml="$WORK/tests.xml" "${TEST_SELECT[@]}"
# JAX and PyTorch share the GPU in this process: JAX takes half of its memory, not the default 75%
XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 step train 150 "$PY" benchmarks/gpu/bench_train.py --out "$WORK/bench_train_gpu.json" "${TRAIN_ARGS[@]}"
step ntk_default 180 "$PY" -m benchmarks.bench_ntk --out "$WORK/ntk_default" "${NTK_ARGS[@]}"
# float32 without TF32 passes: one size, for the fraction of the float32 GEMM rate
JAX_DEFAULT_MATMUL_PRECISION=highest step ntk_highest 80 \
    "$PY" -m benchmarks.bench_ntk --out "$WORK/ntk_highest" "${NTK_HIGHEST_ARGS[@]}"

"$PY" benchmarks/gpu/summary.py --work "$WORK" --out "$OUT" --dry-run "$DRY" --wall "$((SECONDS - T_START))" \
    >>"$LOG" 2>&1
rc=$?
log "gpu-check done in $((SECONDS - T_START))s (summary exit $rc); files in $OUT:"
ls -la "$OUT" | tee -a "$LOG"
exit $rc
