"""The CPU GEMM choice (csrc/gemm.cpp): float32 products with inner and output dimensions of 256 and more
run on oneDNN's matmul, the rest on ATen's MKL GEMM; the option cpu_gemm=aten|onednn forces one. Both must give
nn.LSTM's results."""


import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
from conftest import GEMM_CHOICE_AGAINST_NN_SCALE, assert_close

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
    with fused_lstm.options(cpu_gemm=choice):
        compare_with_nn_lstm(packed)
    assert fused_lstm.get_option("cpu_gemm") == "auto"


def test_bad_gemm_choice_raises():
    with pytest.raises(RuntimeError, match="option cpu_gemm must be one of auto, aten, onednn, got 'mkl'"):
        fused_lstm.set_option("cpu_gemm", "mkl")
