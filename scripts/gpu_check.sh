#!/usr/bin/env bash
# The GPU check of fused_lstm, for a machine with a CUDA GPU (see shared/GPU.md), in one run of a few
# minutes: build for the local GPU and print the kernels' ptxas resources; measure the machine's
# ceilings (GEMM TFLOP/s, copy TB/s); run every test on CUDA (the device-parametrized tests' CUDA
# cases and the CUDA-only tests); compute-sanitizer memcheck and racecheck on a short LSTM and GRU forward+backward;
# the quick benchmark; a side-by-side timing of fused_lstm.LSTM and nn.LSTM, printed last as a table.
#
#   scripts/gpu_check.sh OUT_DIR
#
# Every phase has its own time limit (together 450 s, 7.5 minutes) and a failing phase does not
# stop the others: the script records it, goes on, and exits 1 at the end if anything failed.
# OUT_DIR receives at most six files: gpu_check.log (summary, ceilings, benchmark output, table),
# build.log, tests.log, sanitizer.log, bench_results.md and bench_results.csv.
#
# Environment: PYTHON (default python3), TORCH_CUDA_ARCH_LIST (default 9.0), MAX_JOBS (default 16),
# LIMIT_<PHASE> seconds per phase (see below), PYTEST_ARGS (default: the CUDA tests), SKIP_BUILD=1 to reuse
# an in-place build (dry runs on a machine without a GPU).
set -uo pipefail

OUT=${1:?usage: scripts/gpu_check.sh OUT_DIR}
PYTHON=${PYTHON:-python3}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-16}
export PYTHONUNBUFFERED=1
# The toolkit itself rather than a wrapper on PATH, when it is where CUDA installs it.
if [[ -z ${CUDA_HOME:-} && -x /usr/local/cuda/bin/nvcc ]]; then export CUDA_HOME=/usr/local/cuda; fi

LIMIT_BUILD=${LIMIT_BUILD:-100}
LIMIT_CEILINGS=${LIMIT_CEILINGS:-20}
LIMIT_TESTS=${LIMIT_TESTS:-150}
LIMIT_PERSISTENT=${LIMIT_PERSISTENT:-35}
LIMIT_MEMCHECK=${LIMIT_MEMCHECK:-45}
LIMIT_RACECHECK=${LIMIT_RACECHECK:-30}
LIMIT_BENCH=${LIMIT_BENCH:-40}
LIMIT_SIDE_BY_SIDE=${LIMIT_SIDE_BY_SIDE:-30}

mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 1  # absolute, before leaving the caller's folder
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # the in-place build, for the helper programs too
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
LOG=$OUT/gpu_check.log
: >"$LOG"

PHASE_LINES=()
FAILURES=0

say() { echo "$*" | tee -a "$LOG"; }

# run_phase NAME LIMIT LOGFILE COMMAND...: runs the command under its time limit with its output in
# the scratch folder (NAME.log), then appends that to LOGFILE ("-": keep it in the scratch folder
# only); records ok / FAILED (exit code) / TIMED OUT, and on failure shows the end of the output.
run_phase() {
  local name=$1 limit=$2 logfile=$3
  shift 3
  local started=$SECONDS status phase_log=$SCRATCH/$name.log
  say "=== $name (limit ${limit}s) ==="
  echo "=== $name: $* ===" >"$phase_log"
  timeout -k 10 "$limit" "$@" >>"$phase_log" 2>&1
  local rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status="TIMED OUT after ${limit}s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  [[ $logfile != - ]] && cat "$phase_log" >>"$logfile"
  if [[ $rc -ne 0 ]]; then
    FAILURES=$((FAILURES + 1))
    echo "--- last lines of the $name output ---"
    tail -n 25 "$phase_log"
  fi
  PHASE_LINES+=("$(printf '%-16s %-24s %4ds' "$name" "$status" $((SECONDS - started)))")
  say "=== $name: $status ($((SECONDS - started))s) ==="
  return $rc
}

skip_phase() {
  FAILURES=$((FAILURES + 1))
  PHASE_LINES+=("$(printf '%-16s %-24s' "$1" "SKIPPED ($2)")")
  say "=== $1: SKIPPED ($2) ==="
}

# ------------------------------------------------------------------------------------------------
# Helper programs (written to the scratch folder so that OUT_DIR holds logs only).

cat >"$SCRATCH/ptxas_summary.py" <<'EOF'
"""Registers and spills of fused_lstm's kernels, read off the -Xptxas -v lines of a build log."""
import re
import shutil
import subprocess
import sys

text = open(sys.argv[1], errors="replace").read()
if shutil.which("c++filt"):
    text = subprocess.run(["c++filt"], input=text, capture_output=True, text=True).stdout or text
rows, kernel, spills = [], None, None
for line in text.splitlines():
    entry = re.search(r"Compiling entry function '(.+)' for '(sm_\w+)'", line)
    if entry:
        kernel, spills = entry.groups(), None
        continue
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if frame and kernel:
        spills = tuple(int(v) for v in frame.groups())
    used = re.search(r"Used (\d+) registers", line)
    if used and kernel:
        name, arch = kernel
        if "fused_lstm" in name:
            short = re.sub(r"^.*?((?:lstm|gru)_\w+_kernel<[^>]*>).*$", r"\1", name)
            rows.append((arch, short, int(used.group(1)), spills or (0, 0, 0)))
        kernel = None
if not rows:
    print("no ptxas lines of fused_lstm kernels in the build log (CUDA kernels not built?)")
    sys.exit(1)
print(f"{'arch':<7} {'kernel':<62} {'regs':>4} {'stack':>5} {'spill st':>8} {'spill ld':>8}")
for arch, short, registers, (stack, stores, loads) in sorted(rows):
    flag = "  <-- SPILLS" if stores or loads else ""
    print(f"{arch:<7} {short:<62} {registers:>4} {stack:>5} {stores:>8} {loads:>8}{flag}")
EOF

cat >"$SCRATCH/ceilings.py" <<'EOF'
"""The machine's ceilings: large GEMMs (bf16, IEEE fp32, TF32) in TFLOP/s, device-to-device copy in TB/s."""
import json
import sys

import torch


def seconds_per_call(fn, repeats):
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats / 1e3


properties = torch.cuda.get_device_properties(0)
ceilings = {"card": torch.cuda.get_device_name(0), "sms": properties.multi_processor_count,
            "memory_gib": round(properties.total_memory / 2**30, 1), "torch": torch.__version__}
size = 8192
for label, dtype, tf32 in (("bfloat16", torch.bfloat16, False), ("float32", torch.float32, False),
                           ("float32_tf32", torch.float32, True)):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    left = torch.randn(size, size, device="cuda", dtype=dtype)
    right = torch.randn(size, size, device="cuda", dtype=dtype)
    ceilings[f"gemm_tflops_{label}"] = 2 * size**3 / seconds_per_call(lambda: torch.mm(left, right), 10) / 1e12
torch.backends.cuda.matmul.allow_tf32 = False
source = torch.empty(2**30, device="cuda", dtype=torch.uint8)  # 1 GiB, far beyond L2
destination = torch.empty_like(source)
ceilings["copy_tbps"] = 2 * source.numel() / seconds_per_call(lambda: destination.copy_(source), 20) / 1e12
for key, value in ceilings.items():
    print(f"{key:<22} {value:.1f}" if isinstance(value, float) else f"{key:<22} {value}")
json.dump(ceilings, open(sys.argv[1], "w"))
EOF

cat >"$SCRATCH/sanitized_step.py" <<'EOF'
"""A short forward + backward through every CUDA kernel variant, for compute-sanitizer: LSTM and GRU,
each dtype, the vector path (H = 64) and the scalar path (H = 30), projection, packed rows, inference."""
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm

torch.manual_seed(0)
for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
    for kind, hidden, proj in (("LSTM", 64, 0), ("LSTM", 64, 16), ("LSTM", 30, 0), ("GRU", 64, 0), ("GRU", 30, 0)):
        extra = dict(proj_size=proj) if proj else {}
        module = getattr(fused_lstm, kind)(24, hidden, num_layers=2, bidirectional=True, device="cuda",
                                           dtype=dtype, **extra)
        x = torch.randn(7, 5, 24, device="cuda", dtype=dtype, requires_grad=True)
        output, h_n = module(pack_padded_sequence(x, [7, 6, 6, 3, 1]))
        torch.autograd.grad(output.data, [x, *module.parameters()], torch.randn_like(output.data))
        with torch.no_grad():
            module(x)
        cell = getattr(fused_lstm, kind + "Cell")(24, hidden, device="cuda", dtype=dtype)
        h_1 = cell(x[0])
        h_1 = h_1[0] if isinstance(h_1, tuple) else h_1
        torch.autograd.grad(h_1, [x, *cell.parameters()], torch.randn_like(h_1))
torch.cuda.synchronize()
print("forward + backward of every variant done")
EOF

cat >"$SCRATCH/side_by_side.py" <<'EOF'
"""fused_lstm.LSTM against nn.LSTM (cuDNN), one layer, IEEE float32 for both (TF32 off) and bfloat16:
median milliseconds of interleaved repeats timed with CUDA events, inference and forward+backward."""
import json
import os
import statistics
import sys

import torch

import fused_lstm

torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
ceilings = json.load(open(sys.argv[1])) if os.path.exists(sys.argv[1]) else {}
SIZES = [(100, 64, 512, 512), (100, 256, 1024, 1024)]  # T, B, I, H
REPEATS, WARMUP = 10, 3


def time_ms(fn):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


rows = []
for steps, batch, input_size, hidden in SIZES:
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        baseline = torch.nn.LSTM(input_size, hidden, device="cuda", dtype=dtype)
        fused = fused_lstm.LSTM(input_size, hidden, device="cuda", dtype=dtype)
        fused.load_state_dict(baseline.state_dict())
        x = torch.randn(steps, batch, input_size, device="cuda", dtype=dtype, requires_grad=True)
        seed = torch.randn(steps, batch, hidden, device="cuda", dtype=dtype)
        forward_flops = 2 * steps * batch * 4 * hidden * (input_size + hidden)
        for mode in ("inference", "training"):
            def call(module):
                if mode == "inference":
                    with torch.no_grad():
                        module(x)
                else:
                    output, _ = module(x)
                    torch.autograd.grad(output, [x, *module.parameters()], seed)

            samples = {"fused": [], "nn.LSTM": []}
            modules = {"fused": fused, "nn.LSTM": baseline}
            for repeat in range(WARMUP + REPEATS):
                order = ["fused", "nn.LSTM"] if repeat % 2 == 0 else ["nn.LSTM", "fused"]
                for name in order:
                    elapsed = time_ms(lambda: call(modules[name]))
                    if repeat >= WARMUP:
                        samples[name].append(elapsed)
            fused_ms, torch_ms = statistics.median(samples["fused"]), statistics.median(samples["nn.LSTM"])
            flops = forward_flops * (3 if mode == "training" else 1)
            ceiling = ceilings.get("gemm_tflops_" + str(dtype).removeprefix("torch."))
            achieved = flops / (fused_ms / 1e3) / 1e12
            rows.append((f"{steps}x{batch}x{input_size}x{hidden}", str(dtype).removeprefix("torch."), mode,
                         fused_ms, torch_ms, fused_ms / torch_ms, achieved,
                         f"{100 * achieved / ceiling:.1f}%" if ceiling else "n/a"))

card = ceilings.get("card", torch.cuda.get_device_name(0))
print(f"\n{card}, torch {torch.__version__}; one layer, TxBxIxH, IEEE float32 (TF32 off); "
      f"median of {REPEATS} after {WARMUP} warm-ups")
print(f"{'size':<18} {'dtype':<9} {'mode':<10} {'fused ms':>9} {'nn.LSTM ms':>10} {'ratio':>6} "
      f"{'TFLOP/s':>8} {'of GEMM ceiling':>15}")
for size, dtype, mode, fused_ms, torch_ms, ratio, achieved, fraction in rows:
    print(f"{size:<18} {dtype:<9} {mode:<10} {fused_ms:>9.2f} {torch_ms:>10.2f} {ratio:>6.2f} {achieved:>8.1f} "
          f"{fraction:>15}")
print("ratio = fused / nn.LSTM (below 1: fused is faster); TFLOP/s and ceiling fraction are fused's GEMM FLOPs")
EOF

# ------------------------------------------------------------------------------------------------
say "fused_lstm GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
say "PYTHON=$PYTHON TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS CUDA_HOME=${CUDA_HOME:-(torch picks)}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$LOG"

# 1. Build (in place) and the ptxas report.
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
    PHASE_LINES+=("$(printf '%-16s %-24s' build-cuda "FAILED (no CUDA kernels)")")
    say "build: the CUDA kernels were not built (no CUDA toolkit found?)"
  fi
  say "--- ptxas resources of the fused_lstm kernels ---"
  "$PYTHON" "$SCRATCH/ptxas_summary.py" "$OUT/build.log" 2>&1 | tee -a "$LOG"
fi

# 2. Ceilings.
run_phase ceilings "$LIMIT_CEILINGS" "$LOG" "$PYTHON" "$SCRATCH/ceilings.py" "$SCRATCH/ceilings.json"

if [[ $BUILT == 1 ]]; then
  # 3. Every test that runs on CUDA (the device-parametrized tests' [cuda] cases and tests/test_cuda.py:
  # their ids all name cuda). The CPU cases run in CI; leaving them out keeps this phase in its limit.
  # The persistent kernel's tests (never run on a GPU before) follow in their own phase, so that a hang
  # there cannot cost the results of the others. PYTEST_ARGS (split on spaces) replaces the selection.
  if [[ -n ${PYTEST_ARGS:-} ]]; then
    read -r -a PYTEST_EXTRA <<<"$PYTEST_ARGS"
  else
    PYTEST_EXTRA=(tests/ -k "cuda and not persistent")
  fi
  if "$PYTHON" -c "import xdist" 2>/dev/null; then PYTEST_EXTRA+=(-n 8); fi
  if "$PYTHON" -c "import pytest_timeout" 2>/dev/null; then PYTEST_EXTRA+=(--timeout 100); fi
  OMP_NUM_THREADS=2 run_phase tests "$LIMIT_TESTS" "$OUT/tests.log" \
    "$PYTHON" -m pytest -q -p no:cacheprovider "${PYTEST_EXTRA[@]}"
  grep -E "passed|failed|error|skipped|no tests ran" "$OUT/tests.log" | tail -n 1 | tee -a "$LOG"
  if [[ -z ${PYTEST_ARGS:-} ]]; then
    run_phase persistent "$LIMIT_PERSISTENT" "$OUT/tests.log" \
      "$PYTHON" -m pytest -q -x -p no:cacheprovider tests/test_persistent.py
    grep -E "passed|failed|error|skipped|no tests ran" "$OUT/tests.log" | tail -n 1 | tee -a "$LOG"
  fi

  # 4. compute-sanitizer. Without PyTorch's caching allocator every tensor is its own allocation,
  # so an access past a tensor's end is outside any allocation and memcheck sees it.
  SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
  for tool in memcheck racecheck; do
    limit_name=LIMIT_${tool^^}
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 run_phase "$tool" "${!limit_name}" "$OUT/sanitizer.log" \
      "$SANITIZER" --tool "$tool" --error-exitcode 1 --print-limit 20 "$PYTHON" "$SCRATCH/sanitized_step.py"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$SCRATCH/$tool.log" | tail -n 1 | tee -a "$LOG"
  done

  # 5. The quick benchmark (benchmarks/, when present). SIGINT at the limit makes it report the cases
  # that finished, a partial sweep rather than a failure. Its plots stay behind: the table and CSV
  # come back.
  if [[ -f benchmarks/run.py ]]; then
    run_phase benchmark "$LIMIT_BENCH" "$LOG" timeout --preserve-status -s INT "$((LIMIT_BENCH - 5))" \
      "$PYTHON" -m benchmarks.run --device cuda --quick --out "$SCRATCH/bench"
    grep -q "^interrupted" "$SCRATCH/benchmark.log" && say "benchmark: cut at its time limit; the cases that finished are reported"
    for result in results.md results.csv; do
      [[ -f $SCRATCH/bench/$result ]] && cp "$SCRATCH/bench/$result" "$OUT/bench_$result"
    done
  fi

  # 6. Side by side with nn.LSTM: the table printed last.
  run_phase side-by-side "$LIMIT_SIDE_BY_SIDE" - \
    "$PYTHON" "$SCRATCH/side_by_side.py" "$SCRATCH/ceilings.json"
else
  for phase in tests persistent memcheck racecheck benchmark side-by-side; do skip_phase "$phase" "the build failed"; done
fi

say ""
say "=== phases ==="
for line in "${PHASE_LINES[@]}"; do say "$line"; done
if [[ -f $SCRATCH/ceilings.json ]]; then
  say "ceilings: $("$PYTHON" -c "import json,sys; c=json.load(open(sys.argv[1])); print(', '.join(f'{k} {v:.1f}' if isinstance(v, float) else f'{k} {v}' for k, v in c.items()))" "$SCRATCH/ceilings.json")"
fi
[[ -f $SCRATCH/side-by-side.log ]] && tee -a "$LOG" <"$SCRATCH/side-by-side.log"
if [[ $FAILURES -gt 0 ]]; then
  say "gpu_check: $FAILURES phase(s) failed; logs in $OUT"
  exit 1
fi
say "gpu_check: all phases passed; logs in $OUT"
