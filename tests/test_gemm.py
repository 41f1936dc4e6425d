"""The CPU GEMM choice (csrc/gemm.cpp): float32 products with inner and output dimensions of 256 and more
run on oneDNN's matmul where it can run, the rest on ATen's MKL GEMM; the option cpu_gemm=aten|onednn forces one.
Both must give nn.LSTM's results. oneDNN's matmul is reached through a torch-internal entry point that runs float32
only where oneDNN has bfloat16 (AVX-512 BW/VL/DQ or AVX-NE-CONVERT, as oneDNN sees the CPU): on other CPUs every
GEMM runs on ATen and forcing oneDNN raises. Both sides run on every machine: ONEDNN_MAX_CPU_ISA=AVX2 makes an
AVX-512 CPU look like an AVX2 one to oneDNN (tests/test_cpu_matrix.py runs CPUs without AVX-512 under qemu)."""


import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
from conftest import GEMM_CHOICE_AGAINST_NN_SCALE, assert_close, run_counting_aten_gemms, run_python_child

ONEDNN_USABLE = fused_lstm.settings.onednn_matmul_usable()

# Sizes where the automatic choice takes oneDNN for the input GEMM, the per-step GEMMs (B·H·4H >= 2M
# multiply-adds) and the weight-gradient GEMMs; bidirectional and packed cover the reverse direction and
# per-step batch sizes (whose smaller steps fall back to ATen within the same call).
INPUT_SIZE, HIDDEN_SIZE, BATCH, STEPS = 256, 256, 32, 6


def compare_with_nn_lstm(packed):
    torch.manual_seed(0)
    reference = torch.nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, bidirectional=True)
    fused = fused_lstm.LSTM(INPUT_SIZE, HIDDEN_SIZE, bidirectional=True)
    fused.load_state_dict(reference.state_dict())
    x = torch.randn(STEPS, BATCH, INPUT_SIZE)
    lengths = torch.randint(1, STEPS + 1, (BATCH,))
    lengths[0] = STEPS
    results = []
    for module in (reference, fused):
        leaf = x.clone().requires_grad_()
        inputs = pack_padded_sequence(leaf, lengths, enforce_sorted=False) if packed else leaf
        output, (h_n, c_n) = module(inputs)
        data = output.data if packed else output
        weights = torch.Generator().manual_seed(1)
        loss = (data * torch.randn(data.shape, generator=weights)).sum() + h_n.sum() + c_n.sum()
        grads = torch.autograd.grad(loss, [leaf, *module.parameters()])
        results.append([data.detach(), h_n.detach(), c_n.detach(), *grads])
    for actual, expected in zip(results[1], results[0]):
        assert_close(actual, expected, scale=GEMM_CHOICE_AGAINST_NN_SCALE)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_automatic_gemm_choice_matches_nn_lstm(packed):
    compare_with_nn_lstm(packed)


@pytest.mark.parametrize("choice", ["aten", "onednn"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_forced_gemm_choice_matches_nn_lstm(choice, packed):
    if choice == "onednn" and not ONEDNN_USABLE:
        pytest.skip("oneDNN's float32 matmul cannot run on this CPU (test_forcing_onednn_where_it_cannot_run_raises)")
    with fused_lstm.options(cpu_gemm=choice):
        compare_with_nn_lstm(packed)
    assert fused_lstm.get_option("cpu_gemm") == "auto"


def onednn_usable_as_torch_sees_it():
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def test_onednn_is_usable_exactly_where_torch_says_its_bf16_path_runs():
    assert ONEDNN_USABLE == (onednn_usable_as_torch_sees_it() and torch.backends.mkldnn.is_available())


def test_forcing_onednn_where_it_cannot_run_raises():
    if ONEDNN_USABLE:
        pytest.skip("oneDNN's float32 matmul runs on this CPU (the capped side: test_an_avx2_cap_on_onednn_...)")
    with pytest.raises(RuntimeError, match="cpu_gemm=onednn but oneDNN's float32 matmul cannot run here"):
        fused_lstm.set_option("cpu_gemm", "onednn")
    assert fused_lstm.get_option("cpu_gemm") == "auto"


def aten_gemm_calls(choice):
    """ATen GEMM calls of a forward and backward at sizes where the automatic choice takes oneDNN."""
    lstm = fused_lstm.LSTM(INPUT_SIZE, HIDDEN_SIZE)
    x = torch.randn(STEPS, BATCH, INPUT_SIZE, requires_grad=True)
    with fused_lstm.options(cpu_gemm=choice):
        return run_counting_aten_gemms(lambda: lstm(x)[0].sum().backward())[1]


def test_the_automatic_choice_takes_onednn_for_large_products_exactly_where_it_can_run():
    if ONEDNN_USABLE:
        assert aten_gemm_calls("auto") < aten_gemm_calls("aten")
    else:
        assert aten_gemm_calls("auto") == aten_gemm_calls("aten")


CAPPED_CHILD = """
    import torch, fused_lstm, test_gemm
    assert not torch.ops.mkldnn._is_mkldnn_bf16_supported(), "the cap did not reach oneDNN"
    assert not fused_lstm.settings.onednn_matmul_usable()
    test_gemm.test_the_automatic_choice_takes_onednn_for_large_products_exactly_where_it_can_run()
    for packed in (False, True):
        test_gemm.compare_with_nn_lstm(packed)  # float32 training at H = 256: raised on AVX2 CPUs before the check
    try:
        fused_lstm.set_option("cpu_gemm", "onednn")
    except RuntimeError as error:
        print("raised:", error)
    print("capped ok")
"""


def test_an_avx2_cap_on_onednn_runs_every_gemm_on_aten_and_forcing_onednn_raises():
    """The other side of the check on an AVX-512 machine: oneDNN capped at AVX2 sees a CPU it cannot run float32
    matmuls on (torch's mkldnn_matmul raises there), as on an AVX2 CPU."""
    result = run_python_child(CAPPED_CHILD, ONEDNN_MAX_CPU_ISA="AVX2")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "raised: fused_lstm: option cpu_gemm=onednn but oneDNN's float32 matmul cannot run here" in result.stdout
    assert "capped ok" in result.stdout


def test_bad_gemm_choice_raises():
    with pytest.raises(RuntimeError, match="option cpu_gemm must be one of auto, aten, onednn, got 'mkl'"):
        fused_lstm.set_option("cpu_gemm", "mkl")
