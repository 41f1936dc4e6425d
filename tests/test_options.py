"""The options that choose code paths (csrc/options.h: cpu_isa, cpu_gemm, cuda_persistent): each read from its
environment variable once, at the first question, and settable in-process (set_option, the options context
manager, which restores); unknown names and values raise with the allowed values. And the path query:
recording_paths and the layer_paths op name the path every fused op takes."""

import pytest
import torch

import fused_lstm
import samples
from conftest import cpu_has, run_python_child

DEFAULTS = {"cpu_isa": "auto", "cpu_gemm": "auto", "cuda_persistent": "0"}


@pytest.mark.parametrize("name, value", [("cpu_isa", "none"), ("cpu_gemm", "aten"), ("cuda_persistent", "1")])
def test_options_set_in_a_block_are_restored_after_it(name, value):
    assert fused_lstm.get_option(name) == DEFAULTS[name]
    with fused_lstm.options(**{name: value}):
        assert fused_lstm.get_option(name) == value
    assert fused_lstm.get_option(name) == DEFAULTS[name]


def test_options_are_restored_when_the_block_raises():
    with pytest.raises(ZeroDivisionError):
        with fused_lstm.options(cpu_gemm="aten", cuda_persistent=True):
            1 / 0
    assert fused_lstm.get_option("cpu_gemm") == "auto" and fused_lstm.get_option("cuda_persistent") == "0"


@pytest.mark.parametrize("name, value, allowed", [
    ("cpu_isa", "sse4", "auto, none, avx2, avx512, avx512_bf16, amx"),
    ("cpu_gemm", "mkl", "auto, aten, onednn"),
    ("cuda_persistent", "yes", "0, 1"),
])
def test_a_bad_value_raises_with_the_allowed_values_and_changes_nothing(name, value, allowed):
    with pytest.raises(RuntimeError, match=f"option {name} must be one of {allowed}, got '{value}'"):
        fused_lstm.set_option(name, value)
    assert fused_lstm.get_option(name) == DEFAULTS[name]


def test_an_unknown_option_raises():
    with pytest.raises(RuntimeError, match="unknown option 'fast'"):
        fused_lstm.set_option("fast", "1")
    with pytest.raises(RuntimeError, match="unknown option 'fast'"):
        fused_lstm.get_option("fast")


ENVIRONMENT_CHILD = """
    import torch, fused_lstm
    print("cpu_isa", fused_lstm.get_option("cpu_isa"), "cpu_gemm", fused_lstm.get_option("cpu_gemm"),
          "cuda_persistent", fused_lstm.get_option("cuda_persistent"))
    with fused_lstm.recording_paths() as paths:
        fused_lstm.LSTM(4, 8)(torch.randn(3, 2, 4))
    print("path", paths[0]["forward"])
"""


def test_environment_variables_set_the_options_at_the_first_question():
    result = run_python_child(ENVIRONMENT_CHILD, FUSED_LSTM_CPU_ISA="none", FUSED_LSTM_CPU_GEMM="aten",
                              FUSED_LSTM_CUDA_PERSISTENT="1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cpu_isa none cpu_gemm aten cuda_persistent 1" in result.stdout
    assert "path per step" in result.stdout


def test_a_bad_environment_value_raises_naming_the_variable():
    result = run_python_child(ENVIRONMENT_CHILD, FUSED_LSTM_CPU_ISA="fastest")
    assert result.returncode != 0
    assert "FUSED_LSTM_CPU_ISA must be one of auto, none, avx2, avx512, avx512_bf16, amx, got 'fastest'" in (
        result.stderr)


def test_auto_is_the_best_instruction_set_of_this_cpu():
    best = fused_lstm.settings.best_cpu_isa()
    assert best in fused_lstm.settings.CPU_ISAS and cpu_has(best)
    with fused_lstm.options(cpu_isa=best), fused_lstm.recording_paths() as explicit:
        fused_lstm.LSTM(4, 8)(torch.randn(3, 2, 4))
    with fused_lstm.recording_paths() as automatic:
        fused_lstm.LSTM(4, 8)(torch.randn(3, 2, 4))
    assert explicit == automatic


# (module, input, the paths on a CPU with AVX2 and on one without)
def modules_and_inputs():
    return {
        "LSTM padded": (fused_lstm.LSTM(4, 8, bidirectional=True), torch.randn(3, 2, 4)),
        "LSTM one step": (fused_lstm.LSTM(4, 8), torch.randn(1, 2, 4)),
        "LSTM packed": (fused_lstm.LSTM(4, 8), torch.nn.utils.rnn.pack_sequence([torch.randn(3, 4),
                                                                                 torch.randn(2, 4)])),
        "LSTM projection": (fused_lstm.LSTM(4, 8, proj_size=3), torch.randn(3, 2, 4)),
        "GRU": (fused_lstm.GRU(4, 8), torch.randn(3, 2, 4)),
        "GRU one step": (fused_lstm.GRU(4, 8), torch.randn(1, 2, 4)),
        "LSTMCell": (fused_lstm.LSTMCell(4, 8), torch.randn(2, 4)),
        "GRUCell big batch": (fused_lstm.GRUCell(4, 8), torch.randn(129, 4)),
    }


EXPECTED_WITH_AVX2 = {
    "LSTM padded": [("lstm_layer", "whole recurrence", "whole recurrence")] * 2,
    "LSTM one step": [("lstm_layer", "fused cell", "whole recurrence")],
    "LSTM packed": [("lstm_layer", "per step", "per step")],
    "LSTM projection": [("lstm_layer", "per step", "per step")],
    "GRU": [("gru_layer", "per step", "per step")],
    "GRU one step": [("gru_layer", "fused cell", "per step")],
    "LSTMCell": [("lstm_cell", "fused cell", "per step")],
    "GRUCell big batch": [("gru_cell", "per step", "per step")],
}


@pytest.mark.parametrize("case", EXPECTED_WITH_AVX2)
@pytest.mark.parametrize("isa", ["auto", "none"])
def test_recording_paths_names_the_path_of_every_call(case, isa):
    module, x = modules_and_inputs()[case]
    if isa == "auto" and not cpu_has("avx2"):
        pytest.skip("the CPU kernels need AVX2")
    with fused_lstm.options(cpu_isa=isa), fused_lstm.recording_paths() as paths:
        module(x)
    recorded = [(p["op"], p["forward"].split(" (")[0], p["backward"].split(" (")[0]) for p in paths]
    expected = EXPECTED_WITH_AVX2[case]
    if isa == "none":
        expected = [(op, "per step", "per step") for op, _, _ in expected]
    assert recorded == expected


def test_nothing_is_recorded_outside_the_block():
    with fused_lstm.recording_paths() as paths:
        pass
    fused_lstm.LSTM(4, 8)(torch.randn(3, 2, 4))
    assert paths == [] and fused_lstm.settings._path_records is None


def test_layer_paths_rejects_an_unknown_kind_and_a_projected_gru():
    sample = samples.lstm_layer_sample()
    arguments = [sample[name] for name in ("input", "batch_sizes", "h0", "weight_ih", "weight_hh")]
    with pytest.raises(RuntimeError, match="kind must be lstm_layer, gru_layer, lstm_cell or gru_cell"):
        torch.ops.fused_lstm.layer_paths("rnn_layer", *arguments, None)
    with pytest.raises(RuntimeError, match="only an LSTM layer has a projection"):
        torch.ops.fused_lstm.layer_paths("gru_layer", *arguments, torch.randn(3, 30))
