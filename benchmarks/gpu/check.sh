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
#   tests    tests/test_device.py on the GPU: jit, training sharded over the local devices, both NTK backends
#            against the CPU in float32, determinism
#   train    benchmarks/gpu/bench_train.py: ResNet-18 (width 1, 32x32, batch 256) step, JAX vs PyTorch, float32 / TF32
#   ntk      stepwise bench ntk on the GPU: CPU-scale ResNet-18 (176,792 parameters, d = 16), n = 2000, 5000, 10000,
#            at XLA's default precision and at float32 ("highest")
#   deep     stepwise run stepwise_deep --scale gpu --loss L for each loss
# and writes to $OUT (at most 8 files, flat): gpu_check.json (every step's status, wall time, the deep runs'
# results), bench_train_gpu.json, bench_ntk_gpu.json, bench_ntk_gpu.png, stepwise_deep_<loss>.png x 3, log.txt.
# Those are committed under docs/gpu/.
#
# GPU_DRYRUN=1 runs every step for a handful of iterations on whatever device is there (the CPU here and in CI;
# tests/test_gpu_check.py does), with the project's venv python (PY=...) and OUT defaulting to a temporary folder.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
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
    DEEP_ARGS=(--steps 3 --smoke-model)
    NTK_ARGS=(--quick)
    TRAIN_ARGS=(--dry-run)
    TEST_TIMEOUT=600
    TEST_SELECT=(-k "jitted_resnet")  # the plumbing, not the whole subset: make test runs that file anyway
else
    PY=${PY:-python3}
    LOSSES=${LOSSES:-"barlow_twins simclr vicreg"}
    DEEP_ARGS=()
    NTK_ARGS=(--models resnet --methods jax --sizes 2000 5000 10000 --max-case-seconds 60)
    TRAIN_ARGS=()
    TEST_TIMEOUT=150
    TEST_SELECT=(-W "default::DeprecationWarning" -W "default::FutureWarning")  # the image's versions may warn
fi

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

# step NAME SECONDS CMD...: runs CMD with a time limit, appends its output to the log, records status and time.
step() {
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS rc
    log "== $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >>"$STATUS"
    log "== $name: exit $rc after $((SECONDS - t0))s"
    return 0
}

T_START=$SECONDS
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

step tests "$TEST_TIMEOUT" "$PY" -m pytest -q -p no:cacheprovider -p no:xdist tests/test_device.py \
    --junitxml="$WORK/tests.xml" "${TEST_SELECT[@]}"
step train 120 "$PY" benchmarks/gpu/bench_train.py --out "$WORK/bench_train_gpu.json" "${TRAIN_ARGS[@]}"
step ntk_default 150 "$PY" -m stepwise.cli bench ntk --out "$WORK/ntk_default" "${NTK_ARGS[@]}"
JAX_DEFAULT_MATMUL_PRECISION=highest step ntk_highest 150 \
    "$PY" -m stepwise.cli bench ntk --out "$WORK/ntk_highest" "${NTK_ARGS[@]}"
for loss in $LOSSES; do
    step "deep_$loss" 150 "$PY" -m stepwise.cli run stepwise_deep --scale gpu --loss "$loss" \
        --out "$WORK/deep_$loss" "${DEEP_ARGS[@]}"
done

"$PY" benchmarks/gpu/summary.py --work "$WORK" --out "$OUT" --dry-run "$DRY" --wall "$((SECONDS - T_START))" \
    >>"$LOG" 2>&1
rc=$?
log "gpu-check done in $((SECONDS - T_START))s (summary exit $rc); files in $OUT:"
ls -la "$OUT" | tee -a "$LOG"
exit $rc
