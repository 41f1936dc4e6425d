import contextlib
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

# ---------------------------------------------------------------------------------------------------
# Tolerances: the table by dtype, and every multiplier and bound the comparisons apply, named for why it exists.

# One tolerance table keyed by dtype: (rtol, atol) for comparisons against PyTorch and the reference.
TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (1e-2, 1e-2),
    torch.float16: (1e-2, 1e-2),
}

# Multipliers of TOLERANCES (assert_close's scale=), for comparisons that need more than the table.
# One float32 step (the fused CPU cell) against the same op in float64: the float32 dot products and gate math
# round, the float64 run serves as exact.
FLOAT32_CELL_AGAINST_FLOAT64_SCALE = 2.0
# A float32 layer, forward and backward over a few steps, against the float64 reference: every GEMM output and
# saved activation rounded to float32, as on a GPU (the CUDA kernels emulated on the CPU).
FLOAT32_LAYER_AGAINST_FLOAT64_SCALE = 4.0
# The persistent CUDA kernel in float32, up to 100 steps forward and backward, against float64 and against the
# per-step path: its FFMA dot products, cuBLAS' input GEMM and the backward sum in other orders.
PERSISTENT_SUMMATION_ORDER_SCALE = 10.0
# 2000 float32 steps against nn.LSTM: rounding errors accumulate along the sequence.
LONG_SEQUENCE_SCALE = 10.0
# The same float32 sums in another order: the fused CPU cell's register dot products against nn's GEMMs.
SUMMATION_ORDER_SCALE = 2.0
# float32 on the CPU against CUDA, two layers in both directions: MKL and cuBLAS sum in different orders.
CPU_AGAINST_CUDA_SCALE = 10.0
# torch.compile against eager in bfloat16: the compiled graph rounds the ops around the fused ones (direction
# concatenation, gradient sums) at other places.
BFLOAT16_COMPILED_AGAINST_EAGER_SCALE = 2.0
# The persistent CUDA kernel against the per-step path in float16/bfloat16: the per-step path rounds the
# pre-activations x·W_ih + h·W_hh to the dtype.
HALF_ROUNDED_PREACTIVATIONS_SCALE = 2.0
# Forward-mode derivatives (exact) against central differences with a step of 1e-6, which are exact to ~1e-6
# only: the float64 tolerance (1e-10) times 1e4.
CENTRAL_DIFFERENCES_SCALE = 1e4


def recurrence_scale(steps, batch, dtype, layers=1):
    """The multiplier for a float32 recurrence of `steps` steps over `batch` rows in `layers` layers against nn
    or the reference (the property tests): rounding errors grow with the square root of the rows summed (the
    weight gradients sum over every packed row, and every step adds its rounding), from 16 rows on, and in
    proportion to the depth (each layer starts from the previous layers' errors). float64 keeps the table's."""
    if dtype == torch.float64:
        return 1.0
    return max(1.0, math.sqrt(steps * max(batch, 1)) / 4) * layers


# Bounds on ‖ours − float64‖ / ‖float64‖ (relative_error) for the half types where every GEMM output and saved
# activation is rounded to the dtype, as on a GPU (the CUDA kernels emulated on the CPU). A kernel bug is off by
# order 1.
HALF_RELATIVE_ERROR = {torch.float16: 5e-3, torch.bfloat16: 4e-2}
# The half-precision rule (flash-attention's): our relative error against float64 at most this many times
# torch's own module's in the same dtype, plus one epsilon of the dtype (assert_no_worse_than_torch).
NO_WORSE_THAN_TORCH_FACTOR = 2.0

# The CPU whole recurrence in float32 (register tiles, input projected in the steps) against the float64 reference.
WHOLE_RECURRENCE_AGAINST_FLOAT64_SCALE = 2.0
# Its backward over 70 steps in three blocks: dL/dx sums 70 steps of rounding, 3.4e-5 on an entry of 3.8 on an
# Intel Xeon with AMX (its MKL/oneDNN GEMMs sum in another order than on AMD), 9e-5 relative.
MANY_BLOCKS_SCALE = 4.0
# Its backward in blocks of one step of 520 rows: the weight gradients sum 1560 rows of float32 products, 1.5e-4
# on entries up to 75 (7e-5 with the per-step path's one GEMM), 3e-5 on an entry of 0.4.
ONE_STEP_BLOCKS_SCALE = 8.0
# oneDNN's or MKL's float32 GEMMs (the option cpu_gemm) against nn.LSTM: sums over 256-512 products per output in
# another order than oneDNN's RNN.
GEMM_CHOICE_AGAINST_NN_SCALE = 10.0
# bfloat16 layers on the CPU (float32 accumulation and cell state, h rounded to bfloat16 every step) against the
# float64 reference from the same bfloat16 values: bound on relative_error of the outputs (4× for gradients).
BFLOAT16_CPU_LAYER_RELATIVE_ERROR = 6e-3

# Not here: test_benchmarks.py's sanity bounds on the benchmark suite's own difference columns.

# cuDNN's float32 RNNs may run in TF32 (torch.backends.cudnn.allow_tf32 is True by default) while cuBLAS,
# which our GEMMs run on, does not: float32 comparisons with nn.LSTM/nn.GRU on CUDA would measure TF32.
torch.backends.cudnn.allow_tf32 = False

# tests/test_cpu_matrix.py runs a slice of the suite under qemu-user's models of other CPUs, where oneDNN's JIT
# kernels (nn.LSTM's and nn.GRU's CPU path) crash; there torch's modules run on ATen's own kernels instead.
if os.environ.get("FUSED_LSTM_CPU_MATRIX"):
    torch.backends.mkldnn.enabled = False

# Every test that takes `device` runs on the CPU here and on CUDA where a GPU is present.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs a CUDA GPU"))]


# ---------------------------------------------------------------------------------------------------
# Shared assertions


def assert_close(actual, expected, dtype=None, scale=1.0):
    rtol, atol = TOLERANCES[dtype or expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol * scale, atol=atol * scale)


def assert_close_nan(actual, expected, scale=1.0, what=""):
    """Same NaN positions (torch.isnan equality), then values within the conftest tolerance of the dtype
    (infinities must match exactly)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    nan_a, nan_e = torch.isnan(actual), torch.isnan(expected)
    assert torch.equal(nan_a, nan_e), (
        f"{what}: NaN positions differ: fused has {int(nan_a.sum())} NaN, nn.LSTM {int(nan_e.sum())}; "
        f"first differing index {tuple((nan_a != nan_e).nonzero()[0].tolist())}")
    rtol, atol = TOLERANCES[expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol * scale, atol=atol * scale, equal_nan=True,
                               msg=lambda m: f"{what}: {m}")


def relative_error(actual, reference):
    """‖actual − reference‖ / ‖reference‖ over the whole tensor: at rounding level the largest single
    element error is ruled by luck, and the ratio of two such maxima swings by 3× or more."""
    return ((actual.double() - reference).norm() / reference.norm().clamp_min(1e-30)).item()


def assert_no_worse_than_torch(name, ours, theirs, reference, dtype):
    """Our error against the float64 reference is at most twice PyTorch's in the same dtype
    (NO_WORSE_THAN_TORCH_FACTOR), plus one epsilon of the dtype (so that a case where PyTorch happens to be exact
    does not demand exactness)."""
    floor = torch.finfo(dtype).eps
    ours_error, torch_error = relative_error(ours, reference), relative_error(theirs, reference)
    assert ours_error <= NO_WORSE_THAN_TORCH_FACTOR * torch_error + floor, (
        f"{name}: fused_lstm's relative error {ours_error:.3g} exceeds {NO_WORSE_THAN_TORCH_FACTOR:g} × PyTorch's "
        f"{torch_error:.3g} + {floor:.2g}")


def assert_same_error(torch_call, fused_call):
    """torch_call() raises; fused_call() raises the same exception type, with a message. Returns both."""
    with pytest.raises(Exception) as expected:
        torch_call()
    with pytest.raises(type(expected.value)) as actual:
        fused_call()
    assert str(actual.value), "the error must say what is wrong"
    return expected.value, actual.value


# ---------------------------------------------------------------------------------------------------
# Fixtures and machine facts


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


@pytest.fixture(scope="module")
def fuzz_intra_op_threads():
    """One intra-op thread for the property files (pytestmark usefixtures): on a small, shared CPU two spinning
    OpenMP threads make each example up to 100x slower, and the sizes fuzzed are too small for intra-op
    parallelism to matter (FUSED_LSTM_FUZZ_THREADS=N to change it). Restored after the module."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("FUSED_LSTM_FUZZ_THREADS", "1")))
    yield
    torch.set_num_threads(previous)


def run_python_child(code, timeout=300, **environment):
    """Runs `code` (dedented) in a fresh interpreter that can import the package and the test modules, with
    `environment` added to this process's: for switches the library reads once per process, and for calls that
    could crash the interpreter."""
    tests = os.path.dirname(os.path.abspath(__file__))
    prelude = f"import sys\nsys.path[:0] = {[os.path.dirname(tests), tests]!r}\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=os.path.dirname(tests),
                          env=dict(os.environ, **environment), capture_output=True, text=True, timeout=timeout)


def cpu_flags():
    """The instruction-set flags of this CPU (Linux), or an empty set where /proc/cpuinfo says nothing."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return set(next(line for line in cpuinfo if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return set()


def cpu_has(isa):
    """Whether this CPU has `isa` for fused_lstm's CPU kernels (fused_lstm.settings.CPU_ISAS), as the library sees it."""
    from fused_lstm import settings

    return settings.CPU_ISAS.index(settings.best_cpu_isa()) >= settings.CPU_ISAS.index(isa)


HAS_AVX2 = cpu_has("avx2")
HAS_AVX512 = cpu_has("avx512")


def run_counting_aten_gemms(fn):
    """Runs fn() under the CPU profiler; returns (its result, how many aten GEMM calls it made). The large
    float32 products that csrc/gemm.cpp hands to oneDNN's matmul directly do not show as aten ops."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        result = fn()
    return result, sum(event.name in ("aten::mm", "aten::addmm", "aten::addmm_") for event in profile.events())


def gradients_counting_aten_gemms(modules, parameters_need_grad, inputs, run):
    """For each module: sets whether its parameters need gradients, then takes the gradients of
    sum(output²) (output = run(module)) with respect to those of `inputs` and of its parameters that need
    one, counting aten GEMMs. Returns ([gradients of each module], [GEMM count of each module])."""
    gradients, gemms = [], []
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(parameters_need_grad)
        leaves = [t for t in (*inputs, *module.parameters()) if t.requires_grad]

        def forward_and_backward():
            output = run(module)
            return torch.autograd.grad((output * output).sum(), leaves)

        module_gradients, module_gemms = run_counting_aten_gemms(forward_and_backward)
        gradients.append(module_gradients)
        gemms.append(module_gemms)
    return gradients, gemms


@contextlib.contextmanager
def cpu_isa_or_skip(isa):
    """Runs the block with fused_lstm.options(cpu_isa=isa); skips the test where this CPU lacks `isa`."""
    import fused_lstm

    try:
        previous = fused_lstm.get_option("cpu_isa")
        fused_lstm.set_option("cpu_isa", isa)
    except RuntimeError as error:
        if "does not have it" not in str(error):
            raise
        pytest.skip(f"this CPU lacks {isa}")
    try:
        yield
    finally:
        fused_lstm.set_option("cpu_isa", previous)
