#!/usr/bin/env bash
# The GPU check of fused_lstm, for a machine with a CUDA GPU (../shared/GPU.md): one run of at most 380 s.
#
#   scripts/gpu_check.sh OUT_DIR
#
# Phases, each under its own time limit (seconds, together 375), in this order:
#   build 90         in place, for the local GPU (TORCH_CUDA_ARCH_LIST, default 9.0), no emulation module;
#                    then the ptxas resources (registers, spills) of our kernels
#   ceilings 15      python -m benchmarks.ceilings: bf16/fp32/TF32 GEMM TFLOP/s and copy TB/s
#   tests 120        every CUDA test (the [cuda] cases and tests/test_cuda.py), 60 s per test at most
#   persistent 35    tests/test_persistent.py (FUSED_LSTM_CUDA_PERSISTENT=1), all of them (no stop at a failure)
#   benchmark 40     python -m benchmarks.run side by side with nn.LSTM (cuDNN): fp32 and bf16, small and
#                    large batch, inference and training, CUDA events, interleaved, median of repeats
#   persistent-benchmark 20   the same at small batch with FUSED_LSTM_CUDA_PERSISTENT=1
#   memcheck 20, racecheck 20, synccheck 15   compute-sanitizer on our kernels only, on scripts/sanitized_step.py
#                    (every kernel variant, and the persistent kernel)
# A phase that fails or times out does not stop the others; the script exits 1 if any failed, 2 if none
# failed but some were skipped (on a machine without a GPU it builds, then skips the rest and says so).
#
# OUT_DIR receives at most 7 files, each phase writing straight into its log (a killed phase keeps what it
# printed): gpu_check.log (summary, ptxas table, ceilings, the benchmark tables last), build.log, tests.log,
# benchmark.log, bench_results.md, bench_results.csv, sanitizer.log.
#
# Environment: PYTHON (default python3), TORCH_CUDA_ARCH_LIST (default 9.0), MAX_JOBS (default 16),
# LIMIT_<PHASE> (seconds, e.g. LIMIT_TESTS), SKIP_BUILD=1 to reuse an in-place build.
set -uo pipefail

OUT=${1:?usage: scripts/gpu_check.sh OUT_DIR}
PYTHON=${PYTHON:-python3}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-16}
export FUSED_LSTM_CUDA=1  # the CUDA kernels, GPU or not (on a machine without one the build still runs)
export FUSED_LSTM_EMULATION=0  # the host emulation is for machines without a GPU
export PYTHONUNBUFFERED=1
# The toolkit itself rather than a wrapper on PATH, when it is where CUDA installs it.
if [[ -z ${CUDA_HOME:-} && -x /usr/local/cuda/bin/nvcc ]]; then export CUDA_HOME=/usr/local/cuda; fi

LIMIT_BUILD=${LIMIT_BUILD:-90}
LIMIT_CEILINGS=${LIMIT_CEILINGS:-15}
LIMIT_TESTS=${LIMIT_TESTS:-120}
LIMIT_PERSISTENT=${LIMIT_PERSISTENT:-35}
LIMIT_BENCHMARK=${LIMIT_BENCHMARK:-40}
LIMIT_PERSISTENT_BENCHMARK=${LIMIT_PERSISTENT_BENCHMARK:-20}
LIMIT_MEMCHECK=${LIMIT_MEMCHECK:-20}
LIMIT_RACECHECK=${LIMIT_RACECHECK:-20}
LIMIT_SYNCCHECK=${LIMIT_SYNCCHECK:-15}

mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 1  # absolute, before leaving the caller's folder
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # the in-place build
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
LOG=$OUT/gpu_check.log
: >"$LOG"
PHASE_LINES=()
FAILURES=0

say() { echo "$*" | tee -a "$LOG"; }

# run_phase NAME LIMIT LOGFILE COMMAND...: runs the command under its time limit, its output appended
# straight to LOGFILE; records ok / FAILED (exit code) / TIMED OUT and shows the end of the output on failure.
run_phase() {
  local name=$1 limit=$2 logfile=$3
  shift 3
  local started=$SECONDS status
  say "=== $name (limit ${limit}s) ==="
  echo "=== $name: $* ===" >>"$logfile"
  timeout -k 5 "$limit" "$@" >>"$logfile" 2>&1
  local rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status="TIMED OUT after ${limit}s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  if [[ $rc -ne 0 ]]; then
    FAILURES=$((FAILURES + 1))
    echo "--- last lines of $(basename "$logfile") ---"
    tail -n 25 "$logfile"
  fi
  PHASE_LINES+=("$(printf '%-22s %-24s %4ds' "$name" "$status" $((SECONDS - started)))")
  say "=== $name: $status ($((SECONDS - started))s) ==="
  return $rc
}

SKIPPED=0
skip_phase() {
  SKIPPED=$((SKIPPED + 1))
  PHASE_LINES+=("$(printf '%-22s %-24s' "$1" "SKIPPED ($2)")")
  say "=== $1: SKIPPED ($2) ==="
}

say "fused_lstm GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
say "PYTHON=$PYTHON TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS CUDA_HOME=${CUDA_HOME:-(torch picks)}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$LOG"
HAVE_GPU=0
"$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && HAVE_GPU=1

# 1. Build and the ptxas report.
BUILT=1
if [[ ${SKIP_BUILD:-0} == 1 ]]; then
  say "=== build: skipped (SKIP_BUILD=1), using the existing in-place build ==="
else
  run_phase build "$LIMIT_BUILD" "$OUT/build.log" "$PYTHON" setup.py build_ext --inplace || BUILT=0
fi
if [[ -f $OUT/build.log ]]; then
  grep -E "CUDA kernels (ON|OFF)" "$OUT/build.log" | tee -a "$LOG"
  if ! grep -q "CUDA kernels ON" "$OUT/build.log"; then
    FAILURES=$((FAILURES + 1))
    PHASE_LINES+=("$(printf '%-22s %-24s' build-cuda "FAILED (no CUDA kernels)")")
    say "build: the CUDA kernels were not built (no CUDA toolkit found?)"
  fi
  "$PYTHON" scripts/ptxas_summary.py "$OUT/build.log" 2>&1 | tee -a "$LOG"
fi

GPU_PHASES=(ceilings tests persistent benchmark persistent-benchmark memcheck racecheck synccheck)
if [[ $HAVE_GPU == 0 ]]; then
  for phase in "${GPU_PHASES[@]}"; do skip_phase "$phase" "no CUDA GPU"; done
elif [[ $BUILT == 0 ]]; then
  for phase in "${GPU_PHASES[@]}"; do skip_phase "$phase" "the build failed"; done
else
  # 2. Ceilings.
  run_phase ceilings "$LIMIT_CEILINGS" "$LOG" "$PYTHON" -m benchmarks.ceilings --device cuda

  # 3. The CUDA tests: the device-parametrized tests' [cuda] cases and tests/test_cuda.py (the CPU cases and
  # the emulated kernels run in CI). The persistent kernel's tests follow in their own phase, so that a hang
  # there cannot cost the others' results.
  TIMEOUT_ARGS=()
  "$PYTHON" -c "import pytest_timeout" 2>/dev/null && TIMEOUT_ARGS=(--timeout 60)
  run_phase tests "$LIMIT_TESTS" "$OUT/tests.log" "$PYTHON" -m pytest -q -p no:cacheprovider "${TIMEOUT_ARGS[@]}" \
    tests/ --ignore=tests/test_emulated_cuda.py --ignore=tests/test_persistent.py -k cuda
  grep -E "passed|failed|error|no tests ran" "$OUT/tests.log" | tail -n 1 | tee -a "$LOG"
  run_phase persistent "$LIMIT_PERSISTENT" "$OUT/tests.log" "$PYTHON" -m pytest -q -p no:cacheprovider \
    "${TIMEOUT_ARGS[@]}" tests/test_persistent.py
  grep -E "passed|failed|error|no tests ran" "$OUT/tests.log" | tail -n 1 | tee -a "$LOG"

  # 4. Side by side with nn.LSTM (cuDNN), through the benchmark suite. SIGINT just before the limit makes it
  # report the cases that finished.
  BENCH_ARGS=(--device cuda --dtype float32,bfloat16 --modes inference,training --repeats 10)
  run_phase benchmark "$LIMIT_BENCHMARK" "$OUT/benchmark.log" timeout --preserve-status -s INT \
    "$((LIMIT_BENCHMARK - 5))" "$PYTHON" -m benchmarks.run "${BENCH_ARGS[@]}" \
    --sizes 100x8x256x256x1,100x64x512x512x1,100x256x1024x1024x1 --out "$SCRATCH/bench"
  for result in results.md results.csv; do
    [[ -f $SCRATCH/bench/$result ]] && cp "$SCRATCH/bench/$result" "$OUT/bench_$result"
  done
  FUSED_LSTM_CUDA_PERSISTENT=1 run_phase persistent-benchmark "$LIMIT_PERSISTENT_BENCHMARK" "$OUT/benchmark.log" \
    timeout --preserve-status -s INT "$((LIMIT_PERSISTENT_BENCHMARK - 5))" "$PYTHON" -m benchmarks.run \
    "${BENCH_ARGS[@]}" --sizes 100x8x256x256x1,100x32x512x512x1 --out "$SCRATCH/bench-persistent"

  # 5. compute-sanitizer on our kernels only. Without PyTorch's caching allocator every tensor is its own
  # allocation, so an access past a tensor's end is outside any allocation and memcheck sees it.
  SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
  KERNEL_FILTER=()
  if "$SANITIZER" --help 2>&1 | grep -q -- "--kernel-name"; then
    KERNEL_FILTER=(--kernel-name kns=fused_lstm)
  elif "$SANITIZER" --help 2>&1 | grep -q -- "--filter"; then
    KERNEL_FILTER=(--filter kns=fused_lstm)
  else
    say "compute-sanitizer has no kernel filter option here: checking every kernel"
  fi
  for tool in memcheck racecheck synccheck; do
    limit_name=LIMIT_${tool^^}
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 run_phase "$tool" "${!limit_name}" "$OUT/sanitizer.log" \
      "$SANITIZER" --tool "$tool" "${KERNEL_FILTER[@]}" --error-exitcode 1 --print-limit 20 \
      "$PYTHON" scripts/sanitized_step.py
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer.log" | tail -n 1 | tee -a "$LOG"
  done
fi

say ""
say "=== phases ==="
for line in "${PHASE_LINES[@]}"; do say "$line"; done
# The side-by-side tables last: card, sizes, dtype, times, speedups, fraction of the GEMM ceiling.
for table in "$SCRATCH/bench/results.md" "$SCRATCH/bench-persistent/results.md"; do
  [[ -f $table ]] && { say ""; tee -a "$LOG" <"$table"; }
done
if [[ $FAILURES -gt 0 ]]; then
  say "gpu_check: $FAILURES phase(s) failed, $SKIPPED skipped; logs in $OUT"
  exit 1
fi
if [[ $SKIPPED -gt 0 ]]; then
  say "gpu_check: nothing failed, but $SKIPPED phase(s) were skipped; logs in $OUT"
  exit 2
fi
say "gpu_check: all phases passed; logs in $OUT"
