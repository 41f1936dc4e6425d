"""The suite's core on CPUs this machine is not. Which kernels and GEMMs run is chosen at run time from the CPU
(the register tiles need AVX2 and FMA, the AVX-512 forms AVX-512, oneDNN's float32 matmul AVX-512 or
AVX-NE-CONVERT), so a slice of the suite runs again under qemu-user's models of an AVX2 CPU without AVX-512
(Haswell-v4) and of an x86-64-v2 CPU without AVX (Nehalem): LSTM and GRU layers and cells, forward and backward,
float32, bfloat16 and float16, autocast, padded and packed, the automatic GEMM choice, and one size of the demo
with its correctness check, each against nn in the same process (with oneDNN off for nn: its JIT kernels crash
under qemu's CPU models; ours and ATen's do not: conftest.py). About 20 times slower than natively: the slice keeps
to small sizes. Skips where qemu-x86_64 is missing (make test installs it where it can)."""

import os
import shutil
import subprocess
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.dirname(TESTS)
QEMU = shutil.which("qemu-x86_64")

# (qemu CPU model): what torch and fused_lstm must see there.
CPU_MODELS = {
    "Haswell-v4": {"torch_capability": "AVX2", "best_cpu_isa": "avx2", "onednn_matmul_usable": False},
    "Nehalem": {"torch_capability": "DEFAULT", "best_cpu_isa": "none", "onednn_matmul_usable": False},
}

# The slice: test ids of the suite, as pytest takes them.
SLICE = [
    "tests/test_cpu_matrix.py::test_the_emulated_cpu_is_the_model_asked_for",
    "tests/test_lstm.py::test_matches_nn_lstm",
    "tests/test_lstm.py::test_packed_sequence",
    "tests/test_lstm.py::test_lstm_cell",
    "tests/test_gru.py::test_matches_nn_gru",
    "tests/test_gru.py::test_packed_sequence",
    "tests/test_gru.py::test_gru_cell",
    "tests/test_cells.py::test_one_step_layers_match_nn",
    "tests/test_half_cpu.py::test_bfloat16_layer_matches_float64_on_every_path",
    "tests/test_half_cpu.py::test_cpu_autocast_gives_the_dtypes_torch_gives",
    "tests/test_half_cpu.py::test_cpu_autocast_lstm_matches_the_module_in_bfloat16",
    *(f"tests/test_half_cpu.py::test_half_precision_is_no_worse_than_torch[{case}-torch.{dtype}]"
      for case in ("LSTM", "LSTM packed", "GRU", "GRU packed") for dtype in ("bfloat16", "float16")),
    "tests/test_whole_recurrence_cpu.py::test_whole_recurrence_matches_float64",
    "tests/test_gemm.py::test_automatic_gemm_choice_matches_nn_lstm",
    "tests/test_gemm.py::test_forcing_onednn_where_it_cannot_run_raises",
    "tests/test_gemm.py::test_the_automatic_choice_takes_onednn_for_large_products_exactly_where_it_can_run",
    "tests/test_options.py::test_recording_paths_names_the_path_of_every_call",
    "tests/test_benchmarks.py::test_the_demo_at_a_training_size_of_hidden_size_256_passes_its_correctness_check",
]

# Per model, in seconds: the slice takes about 3 minutes under Haswell-v4 on a 2-core AMD EPYC.
TIMEOUT = 1500


@pytest.mark.skipif(QEMU is None, reason="needs qemu-x86_64 (Debian's qemu-user; make test installs it as root)")
@pytest.mark.parametrize("model", CPU_MODELS)
def test_the_core_of_the_suite_passes_on_another_cpu(model, tmp_path):
    environment = dict(os.environ, FUSED_LSTM_CPU_MATRIX=model, PYTHONDONTWRITEBYTECODE="1")
    command = [QEMU, "-cpu", model, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-o", "addopts=", "-W", "ignore", *SLICE]
    run = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True,
                         timeout=TIMEOUT)
    report = "\n".join(line for line in (run.stdout + run.stderr).splitlines()
                       if not line.startswith("qemu-x86_64: warning"))
    assert run.returncode == 0, f"under qemu -cpu {model}:\n{report[-6000:]}"
    assert " passed" in run.stdout and " failed" not in run.stdout, report[-3000:]


def test_the_emulated_cpu_is_the_model_asked_for():
    """Runs inside the slice only: torch and fused_lstm see the CPU model qemu was asked for (a slice that ran on
    the host's CPU would prove nothing)."""
    model = os.environ.get("FUSED_LSTM_CPU_MATRIX")
    if not model:
        pytest.skip("runs under qemu, as part of test_the_core_of_the_suite_passes_on_another_cpu")
    import torch

    import fused_lstm

    expected = CPU_MODELS[model]
    assert torch.backends.cpu.get_cpu_capability() == expected["torch_capability"]
    assert fused_lstm.settings.best_cpu_isa() == expected["best_cpu_isa"]
    assert fused_lstm.settings.onednn_matmul_usable() == expected["onednn_matmul_usable"]
    assert not torch.backends.mkldnn.enabled  # conftest.py: nn on ATen's kernels, not oneDNN's JIT
