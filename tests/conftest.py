import contextlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch

# One tolerance table keyed by dtype: (rtol, atol) for comparisons against PyTorch and the reference.
TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (1e-2, 1e-2),
    torch.float16: (1e-2, 1e-2),
}

# cuDNN's float32 RNNs may run in TF32 (torch.backends.cudnn.allow_tf32 is True by default) while cuBLAS,
# which our GEMMs run on, does not: float32 comparisons with nn.LSTM/nn.GRU on CUDA would measure TF32.
torch.backends.cudnn.allow_tf32 = False

# Every test that takes `device` runs on the CPU here and on CUDA where a GPU is present.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs a CUDA GPU"))]


def assert_close(actual, expected, dtype=None, scale=1.0):
    rtol, atol = TOLERANCES[dtype or expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol * scale, atol=atol * scale)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def run_python_child(code, **environment):
    """Runs `code` (dedented) in a fresh interpreter that can import the package and the test modules, with
    `environment` added to this process's; for switches the library reads once per process."""
    tests = os.path.dirname(os.path.abspath(__file__))
    prelude = f"import sys\nsys.path[:0] = {[os.path.dirname(tests), tests]!r}\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          env=dict(os.environ, **environment), capture_output=True, text=True, timeout=300)


def cpu_flags():
    """The instruction-set flags of this CPU (Linux), or an empty set where /proc/cpuinfo says nothing."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return set(next(line for line in cpuinfo if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return set()


def cpu_has(isa):
    """Whether this CPU has `isa` for fused_lstm's CPU kernels (fused_lstm.ops.CPU_ISAS), as the library sees it."""
    from fused_lstm import ops

    return ops.CPU_ISAS.index(ops.best_cpu_isa()) >= ops.CPU_ISAS.index(isa)


HAS_AVX2 = cpu_has("avx2")


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
