"""The machine's ceilings, measured at run time (the machines change): what the benchmark's rates are read against.

    python -m benchmarks.ceilings [--device cpu|cuda] [--json FILE]

CPU: arithmetic peaks of threads doing only multiply-adds on registers, with the widest instructions the CPU has
(fused_lstm::cpu_peak_probe, compiled with the extension): float32 FMA (on CPUs without FMA or AVX2, the baseline
128-bit multiply and add); where present, bfloat16 dot products
(AVX512-BF16), AMX bfloat16 tiles and float16 FMA (AVX512-FP16). The ceiling of a dtype is the highest rate
the CPU has for its arithmetic (float32 FMA included: kernels compute in float32 where nothing is faster). No
library GEMM reaches these; rates read against them stay at or below 100%.

CUDA: large matmuls in bfloat16, IEEE float32 and TF32 (TFLOP/s) and a device-to-device copy (TB/s).

Every ceiling is the best of several trials, so that a busy moment cannot lower it; a sweep calls refresh()
between cases and keeps the best of everything measured.
"""

import argparse
import json
import time

import torch

import fused_lstm  # noqa: F401  (registers fused_lstm::cpu_peak_probe)

TRIALS = 3
CPU_KINDS = ("float32_fma", "bfloat16_dot", "bfloat16_amx", "float16_fma")
# Which probes bound the arithmetic of each dtype on the CPU: every instruction kind that can do its work.
CPU_DTYPE_KINDS = {"float32": ("float32_fma",), "bfloat16": ("float32_fma", "bfloat16_dot", "bfloat16_amx"),
                   "float16": ("float32_fma", "float16_fma")}


def cpu_probe_gflops(kind, threads=None, seconds=0.2):
    """GFLOP/s of `threads` threads (default: torch's) running only `kind` (see CPU_KINDS); 0.0 where the CPU
    lacks its instructions. One trial: the rounds double until a call takes `seconds`."""
    threads = threads or torch.get_num_threads()
    probe = torch.ops.fused_lstm.cpu_peak_probe
    if probe(kind, 1, 1) == 0.0:
        return 0.0
    rounds = 100_000
    probe(kind, threads, rounds)  # warm-up: clocks ramp up
    while True:
        start = time.perf_counter()
        flops_per_round = probe(kind, threads, rounds)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return threads * rounds * flops_per_round / elapsed / 1e9
        rounds *= 2


class CpuCeilings:
    """The best rate of each CPU probe seen so far (measure() adds trials), and each dtype's ceiling from them."""

    def __init__(self, threads=None):
        self.threads = threads or torch.get_num_threads()
        self.best = dict.fromkeys(CPU_KINDS, 0.0)

    def measure(self, trials=TRIALS, seconds=0.2, dtypes=None):
        for _ in range(trials):
            for kind in CPU_KINDS:
                self.best[kind] = max(self.best[kind], cpu_probe_gflops(kind, self.threads, seconds))
        return self

    def gflops(self, dtype):
        """The ceiling for work in `dtype` (a name: float32, bfloat16, float16), GFLOP/s."""
        return max(self.best[kind] for kind in CPU_DTYPE_KINDS[dtype])

    def description(self):
        parts = [f"{kind.replace('_', ' ')} {value:,.0f}" for kind, value in self.best.items() if value > 0]
        return f"{', '.join(parts)} GFLOP/s ({self.threads} threads, best of every trial)"


class CudaCeilings:
    """A large matmul's rate in each dtype (cuBLAS), the best of every trial: the GPU's ceiling for the
    benchmark's GEMM-bound work."""

    def __init__(self, size=8192):
        self.size = size
        self.best = {}

    def measure(self, trials=TRIALS, seconds=None, dtypes=("float32", "bfloat16", "float16")):
        for dtype in dtypes:
            left = torch.randn(self.size, self.size, device="cuda", dtype=getattr(torch, dtype))
            right = torch.randn(self.size, self.size, device="cuda", dtype=getattr(torch, dtype))
            rate = 2 * self.size**3 / _best_seconds(lambda: torch.mm(left, right), 3, trials) / 1e9
            self.best[dtype] = max(self.best.get(dtype, 0.0), rate)
        return self

    def gflops(self, dtype):
        return self.best[dtype]

    def description(self):
        rates = ", ".join(f"{dtype} {value:,.0f}" for dtype, value in self.best.items())
        return f"{self.size}×{self.size} matmul {rates} GFLOP/s (best of every trial)"


def for_device(device):
    """The ceilings of a benchmark on `device` (a torch.device), not yet measured."""
    return CudaCeilings() if device.type == "cuda" else CpuCeilings()


def _best_seconds(fn, repeats, trials=TRIALS):
    """The best, over trials, of the mean seconds per call of `repeats` back-to-back calls (CUDA events)."""
    fn()
    best = float("inf")
    for _ in range(trials):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / repeats / 1e3)
    return best


def cuda_ceilings(size=8192):
    properties = torch.cuda.get_device_properties(0)
    ceilings = {"card": torch.cuda.get_device_name(0), "sms": properties.multi_processor_count,
                "memory_gib": round(properties.total_memory / 2**30, 1), "torch": torch.__version__}
    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        for label, dtype, tf32 in (("bfloat16", torch.bfloat16, False), ("float32", torch.float32, False),
                                   ("float32_tf32", torch.float32, True)):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            left = torch.randn(size, size, device="cuda", dtype=dtype)
            right = torch.randn(size, size, device="cuda", dtype=dtype)
            ceilings[f"gemm_tflops_{label}"] = 2 * size**3 / _best_seconds(lambda: torch.mm(left, right), 5) / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    source = torch.empty(2**30, device="cuda", dtype=torch.uint8)  # 1 GiB, far beyond L2
    destination = torch.empty_like(source)
    ceilings["copy_tbps"] = 2 * source.numel() / _best_seconds(lambda: destination.copy_(source), 10) / 1e12
    return ceilings


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ceilings", description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the ceilings to this file")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda but no CUDA GPU is available")
        ceilings = cuda_ceilings()
    else:
        measured = CpuCeilings(args.threads).measure()
        ceilings = {"threads": measured.threads, **{f"{kind}_gflops": value for kind, value in measured.best.items()}}
    for key, value in ceilings.items():
        print(f"{key:<22} {value:,.2f}" if isinstance(value, float) else f"{key:<22} {value}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(ceilings, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
