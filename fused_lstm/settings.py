"""The options that choose code paths (csrc/options.h has the table), what this CPU offers, and the paths calls
take (recording_paths)."""

import contextlib

import torch

from .descriptions import OPS


def get_option(name):
    """The value of option `name` (cpu_isa, cpu_gemm, cuda_persistent), as a string."""
    return OPS.get_option(name)


def set_option(name, value):
    """Sets option `name` for this process (True/False for cuda_persistent); raises on an unknown name or value."""
    OPS.set_option(name, str(int(value)) if isinstance(value, bool) else str(value))


def empty_cache():
    """Frees the memory fused_lstm keeps for reuse: CPU blocks that cells' weight gradients used and let go (at
    most eight of 1 to 32 MiB, kept because glibc would otherwise return them to the system and fault them in
    at every step). Memory in use is never kept, so this frees only blocks no tensor holds."""
    OPS.empty_cache()


# cpu_isa's values from the least to the most: each implies the ones before it.
CPU_ISAS = ("none", "avx2", "avx512", "avx512_bf16", "amx")


def best_cpu_isa():
    """The best instruction set this CPU has for fused_lstm's CPU kernels (what cpu_isa="auto" uses)."""
    return OPS.best_cpu_isa()


@torch.compiler.assume_constant_result  # a compiled graph reads it once, at trace time
def cpu_computes_half_in_float32(dtype_name):
    """Whether the modules run a "bfloat16" or "float16" layer or cell on the CPU on the float32 kernels (inputs,
    states and weights converted at the call, results rounded to the dtype): where no kernel computes in that
    dtype at speed. bfloat16 has register tiles with AVX512-BF16 and AMX (cpu_isa avx512_bf16 or amx); below
    that, ATen's bfloat16 GEMMs run at a twentieth of float32's (2.8 against 62 GFLOP/s with oneDNN capped at
    AVX2 on a 2-core AMD EPYC). float16 has no CPU kernel of its own: always float32."""
    if dtype_name == "float16":
        return True
    option = get_option("cpu_isa")
    isa = best_cpu_isa() if option == "auto" else option
    return CPU_ISAS.index(isa) < CPU_ISAS.index("avx512_bf16")


def onednn_matmul_usable():
    """Whether float32 GEMMs can run on oneDNN's matmul here (cpu_gemm="onednn" can be set; "auto" uses it for
    large products): torch's entry point needs AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT as oneDNN sees the CPU."""
    return OPS.onednn_matmul_usable()


@contextlib.contextmanager
def options(**values):
    """Sets options for the block, e.g. ``with fused_lstm.options(cpu_isa="avx2"): ...``, then restores them."""
    old = {name: get_option(name) for name in values}
    try:
        for name, value in values.items():
            set_option(name, value)
        yield
    finally:
        for name, value in old.items():
            set_option(name, value)


# While fused_lstm.paths records: the paths of every fused call, in order.
_path_records = None


def one_step(input):
    """batch_sizes for a cell's call when paths are recorded (a cell is one step of input.shape[0] rows)."""
    return torch.full([1], input.shape[0], dtype=torch.int64) if _path_records is not None else None


def record_path(kind, input, batch_sizes, h0, weight_ih, weight_hh, weight_hr=None):
    if _path_records is not None:
        forward, backward = OPS.layer_paths(kind, input, batch_sizes, h0, weight_ih, weight_hh, weight_hr)
        _path_records.append({"op": kind, "dtype": str(input.dtype).split(".")[-1], "forward": forward,
                              "backward": backward})


@contextlib.contextmanager
def recording_paths():
    """Yields a list that receives, for each fused op called in the block, {"op", "dtype", "forward", "backward"}:
    the dtype the op runs in ("float32" for a bfloat16 module on a CPU without bfloat16 kernels: see
    cpu_computes_half_in_float32) and the paths its forward and its backward take ("fused cell", "whole
    recurrence (<kernel>)" or "per step")."""
    global _path_records
    _path_records = []
    try:
        yield _path_records
    finally:
        _path_records = None

