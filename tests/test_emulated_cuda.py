"""The CUDA kernels, executed without a GPU. The host emulation of CUDA (csrc/cuda/emulation/simt.h) compiles
the very kernel sources nvcc compiles and runs every CUDA thread as a fiber, in a random order between
barriers, with CUDA's barrier semantics and launch limits. Verified here, on every CI run:

1. the ops on the CUDA backend (torch.ops.fused_lstm_emulated.*: the shared drivers with every CUDA kernel
   emulated; only the GEMMs are ATen's CPU ones) against the float64 reference: LSTM and GRU, forward and
   backward, float32/float64/float16/bfloat16, padded and packed, H on the vector and on the scalar path,
   a projection; and the persistent kernel (option cuda_persistent on) over several CTAs and steps;
2. stand-alone builds (tests/emulated_cuda/): the emulator's own checks, and every kernel against a float64
   computation under AddressSanitizer (no out-of-bounds access) and ThreadSanitizer (no data race);
3. fault injection: mutated copies of the kernel sources (a barrier removed, an index shifted by one) fail.

What this cannot show (a GPU run must): timing, the memory model across SMs (L1 coherence, fences),
tensor cores, the device math functions (the emulation uses the host's), real occupancy (registers)."""

import os
import shutil

import pytest
import torch

import samples
from conftest import FLOAT32_LAYER_AGAINST_FLOAT64_SCALE, HALF_RELATIVE_ERROR, assert_close, relative_error
from emulated_cuda import build as programs

try:
    import fused_lstm._emulated_cuda  # noqa: F401  (registers torch.ops.fused_lstm_emulated)
except ImportError:
    if os.environ.get("FUSED_LSTM_EMULATION") == "1":
        raise  # make test builds it and says so: missing means a broken build, never a silent skip
    pytest.skip("the emulated CUDA kernels are built with FUSED_LSTM_EMULATION=1 (make test does)",
                allow_module_level=True)

EMULATED = torch.ops.fused_lstm_emulated
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
HALF_DTYPES = (torch.float16, torch.bfloat16)
# (steps, lengths): padded, and packed sequences of unequal lengths (fewer rows at later steps).
SEQUENCES = {"padded": (4, None), "packed": (4, [4, 3, 3, 1, 1])}
# H = 32 takes the 16-byte vector path in every dtype, H = 30 the scalar path.
HIDDEN_SIZES = [32, 30]
BUILD = os.path.join(programs.REPOSITORY, "build", "emulated_cuda")


def assert_matches_reference(results, expected, dtype, scale=1.0):
    """Every output of `expected` (float64) against the same name in `results`."""
    for name, value in expected.items():
        assert results[name].dtype == dtype, name
        if dtype in HALF_DTYPES:
            error = relative_error(results[name], value)
            assert error <= HALF_RELATIVE_ERROR[dtype] * scale, f"{name}: relative error {error:.3g}"
        else:
            layer_scale = FLOAT32_LAYER_AGAINST_FLOAT64_SCALE if dtype == torch.float32 else 1.0
            assert_close(results[name], value.to(dtype), scale=scale * layer_scale)


@pytest.fixture
def emulated_device():
    """The emulated device as it is by default (132 SMs), restored after the test."""
    yield
    EMULATED.configure(132, 0x5EEDF00D)


# Per cell: (sample builder, forward + backward of the ops, float64 reference).
CELLS = {"LSTM": (samples.lstm_layer_sample, samples.lstm_forward_and_backward, samples.lstm_reference),
         "GRU": (samples.gru_layer_sample, samples.gru_forward_and_backward, samples.gru_reference)}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sequence", SEQUENCES)
@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_layer_on_emulated_cuda_matches_float64(cell, dtype, sequence, hidden, reverse):
    sample_of, forward_and_backward, reference = CELLS[cell]
    steps, lengths = SEQUENCES[sequence]
    sample = sample_of(steps=steps, lengths=lengths, hidden=hidden, dtype=dtype)
    launches = EMULATED.launch_count()
    results = forward_and_backward(EMULATED, sample, reverse)
    assert EMULATED.launch_count() - launches == 2 * steps  # one forward and one backward kernel per step
    assert_matches_reference(results, reference(sample, reverse), dtype)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layer_without_bias_on_emulated_cuda_matches_float64(cell, dtype):
    sample_of, forward_and_backward, reference = CELLS[cell]
    sample = sample_of(lengths=[4, 3, 3, 1, 1], bias=False, dtype=dtype)
    assert_matches_reference(forward_and_backward(EMULATED, sample, reverse=True), reference(sample, reverse=True),
                             dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sequence", SEQUENCES)
def test_projected_lstm_layer_on_emulated_cuda_matches_float64(dtype, sequence):
    steps, lengths = SEQUENCES[sequence]
    sample = samples.lstm_layer_sample(steps=steps, lengths=lengths, hidden=30, proj=16, dtype=dtype)
    results = samples.lstm_forward_and_backward(EMULATED, sample, reverse=False)
    assert_matches_reference(results, samples.lstm_reference(sample, reverse=False), dtype)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_cell_on_emulated_cuda_matches_float64(kind, dtype, hidden, bias):
    """The cell ops on CUDA: two GEMMs and the pointwise kernels of one step."""
    sample = samples.cell_sample(kind, batch=5, hidden=hidden, bias=bias, dtype=dtype)
    launches = EMULATED.launch_count()
    results = samples.cell_forward_and_backward(EMULATED, kind, sample)
    assert EMULATED.launch_count() - launches == 3  # forward (saving and not) and backward
    assert_matches_reference(results, samples.cell_reference(kind, sample), dtype)


# The persistent kernel: one cooperative launch per layer and direction. With 132 SMs every CTA owns one
# hidden unit (H CTAs); with 8 SMs each owns ceil(H / 8) units, so a CTA's warps take several units.
# B = 5 is a full row group of 4 and a partial one, B = 2 one-row items.
PERSISTENT_PATH = "whole recurrence (persistent kernel)"


def forward_path(sample):
    """The forward path the emulated CUDA backend takes for a lstm_layer_sample."""
    return samples.paths(EMULATED, sample)[0]


@pytest.fixture
def persistent_off():
    """The option cuda_persistent of the emulated library: off at the start, restored after."""
    EMULATED.set_option("cuda_persistent", "0")
    yield
    EMULATED.set_option("cuda_persistent", "0")


@pytest.fixture
def persistent_on(persistent_off):
    EMULATED.set_option("cuda_persistent", "1")


PERSISTENT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
PERSISTENT_CASES = [(5, 30), (2, 64), (8, 64)]  # (B, H)


@pytest.mark.parametrize("dtype", PERSISTENT_DTYPES, ids=str)
@pytest.mark.parametrize("batch, hidden", PERSISTENT_CASES)
@pytest.mark.parametrize("multiprocessors", [132, 8])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_persistent_forward_on_emulated_cuda_matches_float64(persistent_on, emulated_device, dtype, batch, hidden,
                                                             multiprocessors, reverse):
    EMULATED.configure(multiprocessors, 1000 + batch)
    sample = samples.lstm_layer_sample(steps=3, batch=batch, hidden=hidden, dtype=dtype)
    assert forward_path(sample) == PERSISTENT_PATH
    cooperative = EMULATED.cooperative_launch_count()
    # The backward is the per-step one, from the activations and c_{t-1} the persistent forward saved.
    results = samples.lstm_forward_and_backward(EMULATED, sample, reverse)
    assert EMULATED.cooperative_launch_count() - cooperative == 1
    assert_matches_reference(results, samples.lstm_reference(sample, reverse), dtype)


def test_persistent_forward_is_off_unless_switched_on_and_skips_what_it_does_not_cover(persistent_off):
    sample = samples.lstm_layer_sample()
    assert forward_path(sample) == "per step"
    EMULATED.set_option("cuda_persistent", "1")
    assert forward_path(sample) == PERSISTENT_PATH
    assert forward_path(samples.lstm_layer_sample(lengths=[4, 3, 3, 1, 1])) == "per step"  # packed
    assert forward_path(samples.lstm_layer_sample(proj=16)) == "per step"
    assert forward_path(samples.lstm_layer_sample(dtype=torch.float64)) == "per step"
    cooperative = EMULATED.cooperative_launch_count()
    samples.lstm_forward_and_backward(EMULATED, samples.lstm_layer_sample(lengths=[4, 3, 3, 1, 1]), reverse=False)
    assert EMULATED.cooperative_launch_count() == cooperative


# ---------------------------------------------------------------------------------------------------
# The stand-alone programs.


def assert_passed(completed):
    assert completed.returncode == 0 and completed.stdout.strip().endswith("0 failure(s)"), (
        completed.stdout[-4000:] + completed.stderr[-4000:])


def test_emulator_keeps_cuda_semantics_and_limits():
    """Coordinates, shared memory (starts as 0xFF; a missing barrier reads it too early), shuffles and votes,
    grid sync, deadlock detection, and the launch limits (threads, grid, shared memory opt-in and maximum,
    cooperative co-residency)."""
    assert_passed(programs.run(programs.build("emulator_checks", "plain", BUILD)))


def test_kernels_have_no_out_of_bounds_access_under_address_sanitizer():
    assert_passed(programs.run(programs.build("harness", "asan", BUILD)))


def test_kernels_have_no_data_race_under_thread_sanitizer():
    # 8 SMs: every ThreadSanitizer fiber costs memory; 8 CTAs of 256 threads still cover the persistent kernel.
    completed = programs.run(programs.build("harness", "tsan", BUILD), "--multiprocessors", "8")
    assert "ThreadSanitizer" not in completed.stderr, completed.stderr[-6000:]
    assert_passed(completed)


# Each mutation: (file under csrc/, text replaced (present exactly once), replacement, sanitizer build,
# what must show). The tests fail loudly if a kernel changes so that the text is gone.
MUTATIONS = {
    "persistent kernel without the barrier after staging a tile": (
        "cuda/lstm_persistent.cuh", "      __syncthreads();\n\n      const int groups", "\n      const int groups",
        "tsan", ["FAIL persistent", "ThreadSanitizer: data race"]),
    "persistent kernel without the grid barrier between steps": (
        "cuda/lstm_persistent.cuh", "    if (step + 1 < steps) grid.sync();\n", "", "plain", ["FAIL persistent"]),
    "pointwise kernels reading one column off": (
        "cuda/pointwise_cuda_common.cuh", "    const int64_t column = pack * kVec;\n",
        "    const int64_t column = pack * kVec + 1;\n",
        # A misaligned 16-byte access (a GPU's "misaligned address") or one past the buffer: either way an error.
        "asan", ["ERROR: AddressSanitizer"]),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_a_mutated_kernel_fails(tmp_path, mutation):
    path, old, new, variant, signs = MUTATIONS[mutation]
    csrc = tmp_path / "csrc"
    shutil.copytree(programs.CSRC, csrc)
    text = (csrc / path).read_text()
    assert text.count(old) == 1, f"the text to mutate is no longer in {path}"
    (csrc / path).write_text(text.replace(old, new))
    arguments = ["--multiprocessors", "8"] if variant == "tsan" else []
    completed = programs.run(programs.build("harness", variant, str(tmp_path / "build"), csrc=str(csrc)), *arguments)
    assert completed.returncode != 0
    for sign in signs:
        assert sign in completed.stdout + completed.stderr, sign
