"""The persistent recurrent forward kernel (csrc/cuda/lstm_persistent.cuh), switched on with the option
cuda_persistent (FUSED_LSTM_CUDA_PERSISTENT=1; off by default): one cooperative launch per layer and direction
for padded input without projection in float32, float16 and bfloat16.

Against nn.LSTM: outputs and every gradient, at inference and in training (the backward is the per-step
backward, consuming the gates and c_{t-1} the persistent forward saved). Against our own per-step path:
every tensor the forward op returns. Then the option (off by default, set in-process, a bad value raises), that
the kernel really runs (the path query names it, the profiler sees it), and that packed sequences, projections
and float64 stay on the per-step path with the option on."""

import copy

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
import samples
from conftest import (HALF_ROUNDED_PREACTIVATIONS_SCALE, PERSISTENT_SUMMATION_ORDER_SCALE, assert_close,
                      assert_no_worse_than_torch)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = "cuda"
OPS = torch.ops.fused_lstm
PERSISTENT_PATH = "whole recurrence (persistent kernel)"
KERNEL_NAME = "lstm_persistent_forward_kernel"
HALF_DTYPES = [torch.float16, torch.bfloat16]
INPUT_SIZE = 16
STEPS = [1, 7, 100]
BATCHES = [1, 8, 64]
HIDDEN_SIZES = [32, 256, 512]


def switch(value):
    fused_lstm.set_option("cuda_persistent", value)


@pytest.fixture(autouse=True)
def _option_restored():
    """Every test starts and ends with the option at its default (off)."""
    switch("0")
    yield
    switch("0")


@pytest.fixture
def persistent():
    switch("1")


def persistent_supported(module, steps, batch, dtype, batch_sizes=None):
    """What the CUDA dispatcher decides for the first layer of `module` on [steps, batch] padded input."""
    x = torch.empty(steps * batch, module.input_size, device=CUDA, dtype=dtype)
    h0 = torch.empty(batch, module.proj_size or module.hidden_size, device=CUDA, dtype=dtype)
    if batch_sizes is None:
        batch_sizes = torch.full((steps,), batch, dtype=torch.int64)
    weight_hr = module.weight_hr_l0.to(dtype) if module.proj_size > 0 else None
    forward, _ = OPS.layer_paths("lstm_layer", x, batch_sizes, h0, module.weight_ih_l0.to(dtype),
                                 module.weight_hh_l0.to(dtype), weight_hr)
    return forward == PERSISTENT_PATH


def kernels_launched(function):
    """(function's result, names of the CUDA kernels it launched)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        result = function()
        torch.cuda.synchronize()
    return result, [event.name for event in profile.events()]


def random_state(module, batch, dtype):
    return samples.random_states(module, batch, CUDA, dtype)


def run(module, x, hx, seeds, training):
    """[output, h_n, c_n] and, in training, the gradients of Σ results·seeds w.r.t. x, h0, c0 and every
    parameter. At inference nothing requires gradients, so the forward op saves nothing."""
    if not training:
        with torch.no_grad():
            output, (h_n, c_n) = module(x, hx)
        return [output, h_n, c_n], []
    x = x.detach().requires_grad_()
    hx = tuple(s.detach().requires_grad_() for s in hx)
    output, (h_n, c_n) = module(x, hx)
    results = [output, h_n, c_n]
    grads = torch.autograd.grad(results, [x, *hx, *module.parameters()], seeds)
    return [r.detach() for r in results], list(grads)


CASES = [(steps, batch, hidden) for steps in STEPS for batch in BATCHES for hidden in HIDDEN_SIZES]
# The half-precision rule on corners of the float32 grid: GPU time is scarce, and the kernel's indexing
# does not depend on the dtype beyond the vector width, which these cover.
HALF_CASES = [(1, 1, 32), (7, 8, 256), (100, 64, 512), (100, 1, 256)]


def inference_and_training(module, x, hx, seeds):
    """The inference run (outputs) and the training run (outputs, gradients) of one module."""
    inference, _ = run(module, x, hx, seeds, training=False)
    return inference, run(module, x, hx, seeds, training=True)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("steps,batch,hidden_size", CASES)
def test_float32_matches_nn_lstm(persistent, steps, batch, hidden_size, bidirectional):
    """Inference (nothing saved) and training (outputs and every gradient)."""
    torch_lstm = torch.nn.LSTM(INPUT_SIZE, hidden_size, bidirectional=bidirectional, device=CUDA)
    fused = fused_lstm.LSTM(INPUT_SIZE, hidden_size, bidirectional=bidirectional, device=CUDA)
    fused.load_state_dict(torch_lstm.state_dict())
    assert persistent_supported(fused, steps, batch, torch.float32)
    # The float64 nn.LSTM is the reference (cuDNN's float32 RNN may use TF32).
    reference = copy.deepcopy(torch_lstm).double()
    x = torch.randn(steps, batch, INPUT_SIZE, device=CUDA)
    hx = random_state(torch_lstm, batch, torch.float32)
    seeds = [torch.randn(steps, batch, (2 if bidirectional else 1) * hidden_size, device=CUDA),
             torch.randn_like(hx[0]), torch.randn_like(hx[1])]
    inference, training = inference_and_training(fused, x, hx, seeds)
    expected = run(reference, x.double(), tuple(s.double() for s in hx), [s.double() for s in seeds], training=True)
    assert len(training[1]) == len(expected[1])
    for a, e in zip(inference + training[0] + training[1], expected[0] + expected[0] + expected[1]):
        assert a.dtype == torch.float32
        assert_close(a.double(), e, dtype=torch.float32, scale=PERSISTENT_SUMMATION_ORDER_SCALE)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("steps,batch,hidden_size", HALF_CASES)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_half_precision_no_worse_than_nn_lstm(persistent, dtype, steps, batch, hidden_size, bidirectional):
    """Inference and training: the error against float64 is at most twice nn.LSTM's own in the same dtype
    (plus one epsilon)."""
    reference = torch.nn.LSTM(INPUT_SIZE, hidden_size, bidirectional=bidirectional, device=CUDA,
                              dtype=torch.float64)
    with torch.no_grad():  # every model starts from the same (representable) numbers
        for weight in reference.parameters():
            weight.copy_(weight.to(dtype))
    torch_half = copy.deepcopy(reference).to(dtype)
    fused_half = fused_lstm.LSTM(INPUT_SIZE, hidden_size, bidirectional=bidirectional, device=CUDA, dtype=dtype)
    fused_half.load_state_dict(torch_half.state_dict())
    assert persistent_supported(fused_half, steps, batch, dtype)

    x = torch.randn(steps, batch, INPUT_SIZE, device=CUDA).to(dtype)
    hx = random_state(torch_half, batch, dtype)
    seeds = [torch.randn(steps, batch, (2 if bidirectional else 1) * hidden_size, device=CUDA).to(dtype),
             torch.randn_like(hx[0]), torch.randn_like(hx[1])]
    expected = run(reference, x.double(), tuple(s.double() for s in hx), [s.double() for s in seeds], training=True)
    ours_inference, ours = inference_and_training(fused_half, x, hx, seeds)
    theirs_inference, theirs = inference_and_training(torch_half, x, hx, seeds)
    outputs = ["output", "h_n", "c_n"]
    gradients = ["grad_x", "grad_h0", "grad_c0"] + [n for n, _ in reference.named_parameters()]
    checks = [(f"{n} (inference)", *t) for n, *t in zip(outputs, ours_inference, theirs_inference, expected[0])]
    checks += list(zip(outputs, ours[0], theirs[0], expected[0]))
    checks += list(zip(gradients, ours[1], theirs[1], expected[1]))
    assert len(ours[1]) == len(expected[1])
    for name, a, t, e in checks:
        assert a.dtype == dtype
        assert_no_worse_than_torch(name, a, t, e, dtype)


def layer_sample(dtype, steps, batch, hidden, device=CUDA):
    """The raw layer op's sample (samples.py) on padded input, without projection: standard normal values,
    weights of scale H^-0.5."""
    return samples.to_device(samples.lstm_layer_sample(steps=steps, batch=batch, input_size=INPUT_SIZE, hidden=hidden,
                                                       dtype=dtype, value_scale=1.0), device)


# Odd H (no 16-byte vectors, padded shared rows), batches that leave a partial row group (5) or take the
# one-row work items (1, 3), and fp32 H = 1024 / 1312 (the largest on an H100/H200) with B = 64: h staged in
# several batch tiles.
OP_CASES = [(7, 5, 30), (7, 3, 256), (7, 1, 33), (20, 64, 128), (5, 64, 1024), (3, 64, 1312)]


@pytest.mark.parametrize("save_for_backward", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("steps,batch,hidden", OP_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, *HALF_DTYPES], ids=str)
def test_op_writes_what_the_per_step_path_writes(dtype, steps, batch, hidden, reverse,
                                                 save_for_backward):
    """Every tensor of lstm_layer_forward (output, h_n, c_n, activated gates, c_{t-1} in the accumulation
    dtype, the empty proj_input) with the persistent kernel and with the per-step loop."""
    if dtype != torch.float32 and hidden > 512:
        pytest.skip("float32 covers the batch tiles")
    sample = layer_sample(dtype, steps, batch, hidden)
    results = {}
    for value in ("0", "1"):
        switch(value)
        supported = samples.paths(OPS, sample)[0] == PERSISTENT_PATH
        if value == "1" and not supported and hidden > 512:
            pytest.skip(f"H = {hidden} does not fit this GPU's shared memory (H100/H200: up to 1312 in float32)")
        assert supported == (value == "1")
        results[value] = samples.call(OPS.lstm_layer_forward, **sample, reverse=reverse,
                                      save_for_backward=save_for_backward)
    per_step, persistent = results["0"], results["1"]
    scale = PERSISTENT_SUMMATION_ORDER_SCALE if dtype == torch.float32 else HALF_ROUNDED_PREACTIVATIONS_SCALE
    for name, e in per_step.items():
        a = persistent[name]
        assert a.dtype == e.dtype and a.shape == e.shape, name
        if e.numel():
            assert_close(a, e, dtype=dtype, scale=scale)
    if not save_for_backward:
        assert all(persistent[name].numel() == 0 for name in ("gates", "cell_prev", "proj_input"))


def test_the_persistent_kernel_runs_only_when_switched_on():
    fused = fused_lstm.LSTM(INPUT_SIZE, 64, bidirectional=True, device=CUDA)
    x = torch.randn(9, 4, INPUT_SIZE, device=CUDA)
    assert not persistent_supported(fused, 9, 4, torch.float32)
    (unset, _), names = kernels_launched(lambda: fused(x))
    assert not any(KERNEL_NAME in name for name in names)

    switch("1")  # set in-process: no restart needed
    assert persistent_supported(fused, 9, 4, torch.float32)
    (switched, _), names = kernels_launched(lambda: fused(x))
    assert sum(KERNEL_NAME in name for name in names) == 2, names  # one launch per direction
    assert_close(switched, unset, scale=PERSISTENT_SUMMATION_ORDER_SCALE)

    switch("0")
    (off, _), names = kernels_launched(lambda: fused(x))
    assert not any(KERNEL_NAME in name for name in names)
    assert torch.equal(off, unset)


def test_default_is_the_per_step_path():
    """By default nothing changes: the same numbers as with the option set to 0, bit for bit, forward and
    backward."""
    fused = fused_lstm.LSTM(INPUT_SIZE, 48, num_layers=2, bidirectional=True, device=CUDA)
    x = torch.randn(11, 6, INPUT_SIZE, device=CUDA)
    hx = random_state(fused, 6, torch.float32)
    seeds = [torch.randn(11, 6, 96, device=CUDA), torch.randn_like(hx[0]), torch.randn_like(hx[1])]
    assert fused_lstm.get_option("cuda_persistent") == "0"
    unset = run(fused, x, hx, seeds, training=True)
    switch("0")
    off = run(fused, x, hx, seeds, training=True)
    for a, b in zip(unset[0] + unset[1], off[0] + off[1]):
        assert torch.equal(a, b)


def test_two_layers_match_the_per_step_path():
    fused = fused_lstm.LSTM(INPUT_SIZE, 96, num_layers=2, bidirectional=True, device=CUDA)
    x = torch.randn(13, 8, INPUT_SIZE, device=CUDA)
    hx = random_state(fused, 8, torch.float32)
    seeds = [torch.randn(13, 8, 192, device=CUDA), torch.randn_like(hx[0]), torch.randn_like(hx[1])]
    results = []
    for value in ("0", "1"):
        switch(value)
        results.append(run(fused, x, hx, seeds, training=True))
    for a, e in zip(results[1][0] + results[1][1], results[0][0] + results[0][1]):
        assert_close(a, e, scale=PERSISTENT_SUMMATION_ORDER_SCALE)


def test_bad_option_value_raises():
    with pytest.raises(RuntimeError, match="option cuda_persistent must be one of 0, 1, got 'yes'"):
        switch("yes")
    assert fused_lstm.get_option("cuda_persistent") == "0"


@pytest.mark.parametrize("case", ["packed", "projection", "float64"])
def test_out_of_scope_cases_stay_on_the_per_step_path(persistent, case):
    """With the variable set, packed sequences of unequal lengths, projections and float64 run our own
    per-step kernels (by design, not a fallback to PyTorch): not the persistent kernel, and the same numbers
    as with the variable unset."""
    dtype = torch.float64 if case == "float64" else torch.float32
    extra = dict(proj_size=8) if case == "projection" else {}
    fused = fused_lstm.LSTM(INPUT_SIZE, 32, bidirectional=True, device=CUDA, dtype=dtype, **extra)
    steps, batch = 9, 4
    x = torch.randn(steps, batch, INPUT_SIZE, device=CUDA, dtype=dtype)
    batch_sizes = None
    if case == "packed":
        lengths = [9, 7, 7, 2]
        x = pack_padded_sequence(x, lengths)
        batch_sizes = x.batch_sizes
    assert not persistent_supported(fused, steps, batch, dtype, batch_sizes=batch_sizes)

    def forward():
        output, (h_n, c_n) = fused(x)
        return [output.data if case == "packed" else output, h_n, c_n]

    switched, names = kernels_launched(forward)
    assert not any(KERNEL_NAME in name for name in names)
    switch("0")
    for a, b in zip(switched, forward()):
        assert torch.equal(a, b)


def test_supported_is_false_off_cuda(persistent):
    sample = layer_sample(torch.float32, 3, 2, 8, device="cpu")
    assert samples.paths(OPS, sample)[0] != PERSISTENT_PATH

