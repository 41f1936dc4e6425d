"""The machine's ceilings, measured at run time (the machines change): what a benchmark's rates are read against.

    python -m benchmarks.ceilings --device cuda [--json FILE]

CUDA: large matmuls in bfloat16, IEEE float32 and TF32 (TFLOP/s) and a device-to-device copy (TB/s), each the
best of several trials, so that a busy moment cannot lower a ceiling."""

import argparse
import json

import torch

TRIALS = 3


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
    parser.add_argument("--device", choices=("cuda",), default="cuda")
    parser.add_argument("--json", default=None, help="also write the ceilings to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA GPU is available")
    ceilings = cuda_ceilings()
    for key, value in ceilings.items():
        print(f"{key:<22} {value:.2f}" if isinstance(value, float) else f"{key:<22} {value}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(ceilings, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
