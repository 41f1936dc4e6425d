"""CUDA-only behaviour of the LSTM and GRU kernels: both access paths (16-byte vectors and scalars)
against the CPU, float16/bfloat16 against float64 (no worse than nn.LSTM/nn.GRU in the same dtype),
autocast, CUDA graphs, torch.compile, tensors on the wrong device, a second GPU. The
device-parametrized tests of the other files cover the rest on CUDA."""

import copy
import functools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
import samples
from conftest import (BFLOAT16_COMPILED_AGAINST_EAGER_SCALE, CPU_AGAINST_CUDA_SCALE, assert_close,
                      assert_no_worse_than_torch)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = "cuda"
OPS = torch.ops.fused_lstm
HALF_DTYPES = [torch.float16, torch.bfloat16]


FUSED = {"LSTM": fused_lstm.LSTM, "GRU": fused_lstm.GRU}
TORCH = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}


def flat_results(module, x, hx):
    """[output, h_n, c_n] of an LSTM, [output, h_n] of a GRU; hx is (h0, c0) or (h0,)."""
    output, state = module(x, hx if module.mode == "LSTM" else hx[0])
    return [output, *state] if module.mode == "LSTM" else [output, state]


def outputs_and_grads(module, x, hx, seeds):
    """Forward, then the gradients of the results·seeds w.r.t. x, the initial states and every parameter."""
    results = flat_results(module, x, hx)
    grads = torch.autograd.grad(results, [x, *hx, *module.parameters()], seeds)
    return results, list(grads)


random_state = functools.partial(samples.random_states, requires_grad=True)


# ---------------------------------------------------------------------------------------------------
# Both access paths against the CPU kernels. H a multiple of 16 bytes' worth of elements takes the
# vector path (float32: 4, float64: 2), other H the scalar path; packed sequences of unequal lengths
# give steps with fewer rows.

SIZE_CASES = [("LSTM", 8, 0), ("LSTM", 64, 0), ("LSTM", 64, 8), ("LSTM", 7, 0), ("LSTM", 13, 5),
              ("GRU", 8, 0), ("GRU", 64, 0), ("GRU", 7, 0)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kind,hidden_size,proj_size", SIZE_CASES)
def test_matches_cpu_on_vector_and_scalar_paths(dtype, kind, hidden_size, proj_size):
    extra = dict(proj_size=proj_size) if proj_size else {}
    cpu_module = FUSED[kind](6, hidden_size, num_layers=2, bidirectional=True, dtype=dtype, **extra)
    cuda_module = copy.deepcopy(cpu_module).to(CUDA)
    steps, batch, lengths = 9, 4, [9, 7, 7, 2]
    source = torch.randn(steps, batch, 6, dtype=dtype)
    hx = random_state(cpu_module, batch, "cpu", dtype)
    results, seeds = [], None
    for device, module in (("cpu", cpu_module), (CUDA, cuda_module)):
        x = source.to(device).requires_grad_()
        state = tuple(s.detach().to(device).requires_grad_() for s in hx)
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        outputs = flat_results(module, packed, state)
        outputs[0] = outputs[0].data
        seeds = seeds or [torch.randn_like(t) for t in outputs]
        grads = torch.autograd.grad(outputs, [x, *state, *module.parameters()], [s.to(device) for s in seeds])
        with torch.no_grad():  # inference: nothing saved for backward, the same numbers
            inference_output = flat_results(module, packed, state)[0]
        assert_close(inference_output.data, outputs[0].detach())
        results.append([*outputs, *grads])
    scale = CPU_AGAINST_CUDA_SCALE if dtype == torch.float32 else 1.0
    for on_cpu, on_cuda in zip(*results):
        assert_close(on_cuda.cpu(), on_cpu, scale=scale)


@pytest.mark.parametrize("hidden_size", [1, 4])
def test_more_rows_than_one_grid_covers(hidden_size):
    """300k rows of a narrow cell exceed gridDim.y × blockDim.y: the row loop must stride."""
    cpu_cell = fused_lstm.LSTMCell(3, hidden_size, dtype=torch.float64)
    cuda_cell = copy.deepcopy(cpu_cell).to(CUDA)
    x = torch.randn(300_000, 3, dtype=torch.float64)
    h0, c0 = torch.randn(2, 300_000, hidden_size, dtype=torch.float64)
    seeds = torch.randn(2, 300_000, hidden_size, dtype=torch.float64)
    results = []
    for device, cell in (("cpu", cpu_cell), (CUDA, cuda_cell)):
        leaves = [t.detach().to(device).requires_grad_() for t in (x, h0, c0)]
        h_1, c_1 = cell(leaves[0], (leaves[1], leaves[2]))
        grads = torch.autograd.grad((h_1, c_1), leaves + list(cell.parameters()),
                                    (seeds[0].to(device), seeds[1].to(device)))
        results.append([h_1, c_1, *grads])
    for on_cpu, on_cuda in zip(*results):
        assert_close(on_cuda.cpu(), on_cpu)


def layer_sample(kind="lstm", dtype=torch.float32, hidden=16, input_size=5, batch_sizes=(4, 4, 3, 1)):
    """A raw layer op's sample (samples.py; standard normal values and weights, no projection) on the GPU."""
    sample_of = samples.lstm_layer_sample if kind == "lstm" else samples.gru_layer_sample
    return samples.to_device(sample_of(batch_sizes=batch_sizes, input_size=input_size, hidden=hidden, dtype=dtype,
                                       weight_scale=1.0, value_scale=1.0), CUDA)


def misaligned_copy(tensor):
    """The same values in a contiguous tensor whose data starts one element past a 16-byte boundary."""
    storage = torch.empty(tensor.numel() + 1, device=tensor.device, dtype=tensor.dtype)
    shifted = storage[1:].view(tensor.shape)
    shifted.copy_(tensor)
    return shifted


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *HALF_DTYPES], ids=str)
def test_misaligned_pointers_fall_back_to_scalar_accesses(dtype):
    """H allows vectors, but a bias (forward) or grad_output (backward) off the 16-byte grid must
    take the scalar path and give the same numbers."""
    sample = layer_sample("lstm", dtype=dtype, hidden=16)
    assert_misaligned_pointers_give_the_same_results("lstm", sample, "bias_ih", dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *HALF_DTYPES], ids=str)
def test_gru_misaligned_pointers_fall_back_to_scalar_accesses(dtype):
    sample = layer_sample("gru", dtype=dtype, hidden=16)
    assert_misaligned_pointers_give_the_same_results("gru", sample, "bias_ih", dtype)


def assert_misaligned_pointers_give_the_same_results(kind, sample, bias, dtype):
    """The forward with `bias` misaligned, and the backward with grad_output misaligned, give every output of
    the aligned call."""
    forward, backward = getattr(OPS, f"{kind}_layer_forward"), getattr(OPS, f"{kind}_layer_backward")
    backward_arguments = samples.lstm_backward_arguments if kind == "lstm" else samples.gru_backward_arguments
    aligned = samples.call(forward, **sample, reverse=False, save_for_backward=True)
    shifted = samples.call(forward, **dict(sample, **{bias: misaligned_copy(sample[bias])}), reverse=False,
                           save_for_backward=True)
    for name in aligned:
        assert_close(shifted[name], aligned[name], dtype=dtype)

    arguments = backward_arguments(sample, aligned, reverse=False)
    aligned = samples.call(backward, **arguments)
    shifted = samples.call(backward, **dict(arguments, grad_output=misaligned_copy(arguments["grad_output"])))
    for name in aligned:
        assert_close(shifted[name], aligned[name], dtype=dtype)


# ---------------------------------------------------------------------------------------------------
# float16 / bfloat16: against float64, no worse than nn.LSTM / nn.GRU (cuDNN) in the same dtype.


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("kind,hidden_size,proj_size", [("LSTM", 64, 0), ("LSTM", 64, 16), ("LSTM", 30, 0),
                                                        ("GRU", 64, 0), ("GRU", 30, 0)])
def test_half_precision_no_worse_than_torch(dtype, kind, hidden_size, proj_size):
    steps, batch, input_size = 16, 8, 32
    extra = dict(proj_size=proj_size) if proj_size else {}
    reference = TORCH[kind](input_size, hidden_size, num_layers=2, bidirectional=True, device=CUDA,
                            dtype=torch.float64, **extra)
    with torch.no_grad():  # every model starts from the same (representable) numbers
        for weight in reference.parameters():
            weight.copy_(weight.to(dtype))
    torch_half = copy.deepcopy(reference).to(dtype)
    fused_half = FUSED[kind](input_size, hidden_size, num_layers=2, bidirectional=True, device=CUDA, dtype=dtype,
                             **extra)
    fused_half.load_state_dict(torch_half.state_dict())

    x = torch.randn(steps, batch, input_size, device=CUDA).to(dtype).double().requires_grad_()
    hx = tuple(s.detach().to(dtype).double().requires_grad_() for s in random_state(reference, batch, CUDA, dtype))
    shapes = [t.shape for t in flat_results(reference, x, hx)]
    seeds = [torch.randn(shape, device=CUDA).to(dtype).double() for shape in shapes]
    expected = outputs_and_grads(reference, x, hx, seeds)

    def in_half(module):
        x_half = x.detach().to(dtype).requires_grad_()
        hx_half = tuple(s.detach().to(dtype).requires_grad_() for s in hx)
        return outputs_and_grads(module, x_half, hx_half, [s.to(dtype) for s in seeds])

    ours, theirs = in_half(fused_half), in_half(torch_half)
    names = (["output", "h_n", "c_n"][:len(shapes)],
             ["grad_x", "grad_h0", "grad_c0"][:len(hx) + 1] + [n for n, _ in reference.named_parameters()])
    for group in range(2):
        for name, a, t, e in zip(names[group], ours[group], theirs[group], expected[group]):
            assert a.dtype == dtype
            assert_no_worse_than_torch(name, a, t, e, dtype)


@pytest.mark.parametrize("autocast_dtype", HALF_DTYPES, ids=str)
def test_autocast_runs_in_the_autocast_dtype_like_nn_lstm(autocast_dtype):
    """float32 model and inputs under torch.autocast: results in the autocast dtype, float32 gradients
    for the float32 leaves, errors against a float64 run no worse than nn.LSTM's in that dtype."""
    torch_lstm = torch.nn.LSTM(16, 32, num_layers=2, device=CUDA)
    fused = fused_lstm.LSTM(16, 32, num_layers=2, device=CUDA)
    fused.load_state_dict(torch_lstm.state_dict())
    x = torch.randn(12, 4, 16, device=CUDA, requires_grad=True)
    hx = random_state(torch_lstm, 4, CUDA, torch.float32)
    # Seeds representable in the autocast dtype: every run differentiates the same function.
    seeds = [torch.randn(shape, device=CUDA).to(autocast_dtype).float()
             for shape in ((12, 4, 32), hx[0].shape, hx[1].shape)]

    def run(module, inputs, state, autocast):
        with torch.autocast("cuda", dtype=autocast_dtype, enabled=autocast):
            output, (h_n, c_n) = module(inputs, state)
        results = [output, h_n, c_n]
        grads = torch.autograd.grad(results, [inputs, *state, *module.parameters()],
                                    [s.to(t.dtype) for s, t in zip(seeds, results)])
        return results, list(grads)

    def leaves(dtype):
        return x.detach().to(dtype).requires_grad_(), tuple(s.detach().to(dtype).requires_grad_() for s in hx)

    expected = run(copy.deepcopy(torch_lstm).double(), *leaves(torch.float64), autocast=False)
    ours = run(fused, x, hx, autocast=True)
    theirs = run(torch_lstm, x, hx, autocast=True)
    assert all(t.dtype == autocast_dtype for t in ours[0])
    assert all(t.dtype == torch.float32 for t in ours[1])
    if theirs[0][0].dtype == autocast_dtype:
        assert [t.dtype for t in ours[0]] == [t.dtype for t in theirs[0]]
        assert [t.dtype for t in ours[1]] == [t.dtype for t in theirs[1]]
    else:
        # cuDNN's autocast wrapper (ATen's AutocastRNN.cpp) runs nn.LSTM in float16 whatever the
        # autocast dtype: the error yardstick is then nn.LSTM run in the autocast dtype outright.
        theirs = run(copy.deepcopy(torch_lstm).to(autocast_dtype), *leaves(autocast_dtype), autocast=False)
    names = ["output", "h_n", "c_n", "grad_x", "grad_h0", "grad_c0"] + [n for n, _ in torch_lstm.named_parameters()]
    for name, a, t, e in zip(names, ours[0] + ours[1], theirs[0] + theirs[1], expected[0] + expected[1]):
        assert_no_worse_than_torch(name, a, t, e, autocast_dtype)


# ---------------------------------------------------------------------------------------------------
# CUDA graphs and torch.compile: no host syncs, no allocations outside the caching allocator.


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("training", [False, True])
def test_cuda_graph_replay_matches_eager(kind, training):
    module = FUSED[kind](16, 32, num_layers=2, bidirectional=True, device=CUDA)
    x = torch.randn(12, 4, 16, device=CUDA, requires_grad=training)
    hx = tuple(s.detach() for s in random_state(module, 4, CUDA, torch.float32))
    seed = torch.randn(12, 4, 64, device=CUDA)

    def step():
        with torch.set_grad_enabled(training):
            results = flat_results(module, x, hx)
        if not training:
            return results
        return results + list(torch.autograd.grad(results[0], [x, *module.parameters()], seed))

    side_stream = torch.cuda.Stream()  # warm-up off the capture stream, as torch.cuda.graphs asks
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side_stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()

    for _ in range(2):
        with torch.no_grad():
            for static_input in (x, *hx, seed):
                static_input.copy_(torch.randn_like(static_input))
        graph.replay()
        eager = step()
        for a, e in zip(captured, eager):
            assert_close(a, e)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_torch_compile_fullgraph_bfloat16(mode):
    torch._dynamo.reset()
    fused = fused_lstm.LSTM(16, 32, num_layers=2, bidirectional=True, device=CUDA, dtype=torch.bfloat16)
    compiled = torch.compile(fused, fullgraph=True, mode=mode)
    for _ in range(3):  # reduce-overhead records its CUDA graph after the first runs
        x = torch.randn(10, 4, 16, device=CUDA, dtype=torch.bfloat16, requires_grad=True)
        seed = torch.randn(10, 4, 64, device=CUDA, dtype=torch.bfloat16)
        compiled_output, _ = compiled(x)
        compiled_grads = torch.autograd.grad(compiled_output, [x, *fused.parameters()], seed)
        compiled_results = [t.clone() for t in (compiled_output, *compiled_grads)]
        eager_output, _ = fused(x)
        eager_grads = torch.autograd.grad(eager_output, [x, *fused.parameters()], seed)
        for a, e in zip(compiled_results, (eager_output, *eager_grads)):
            assert_close(a, e, scale=BFLOAT16_COMPILED_AGAINST_EAGER_SCALE)


# ---------------------------------------------------------------------------------------------------
# Devices.


@pytest.mark.parametrize("misplaced", ["input", "h0", "c0", "weight_ih", "weight_hh", "bias_ih"])
def test_raw_forward_op_rejects_a_tensor_on_another_device(misplaced):
    arguments = layer_sample()
    arguments[misplaced] = arguments[misplaced].cpu()
    with pytest.raises(RuntimeError, match="device|CUDA"):
        OPS.lstm_layer_forward(**arguments, reverse=False, save_for_backward=False)


def test_raw_forward_op_rejects_batch_sizes_on_cuda():
    arguments = layer_sample()
    arguments["batch_sizes"] = arguments["batch_sizes"].to(CUDA)
    with pytest.raises(RuntimeError, match="batch_sizes"):
        OPS.lstm_layer_forward(**arguments, reverse=False, save_for_backward=False)


@pytest.mark.parametrize("misplaced", ["grad_output", "gates", "cell_prev"])
def test_raw_backward_op_rejects_a_tensor_on_another_device(misplaced):
    sample = layer_sample()
    forward = samples.call(OPS.lstm_layer_forward, **sample, reverse=False, save_for_backward=True)
    arguments = samples.lstm_backward_arguments(sample, forward, reverse=False)
    arguments[misplaced] = arguments[misplaced].cpu()
    with pytest.raises(RuntimeError, match="device"):
        OPS.lstm_layer_backward(**arguments)


@pytest.mark.parametrize("misplaced", ["input", "h0", "weight_hh", "bias_ih", "bias_hh"])
def test_raw_gru_forward_op_rejects_a_tensor_on_another_device(misplaced):
    arguments = layer_sample("gru", hidden=8, batch_sizes=(3, 2, 1))
    arguments[misplaced] = arguments[misplaced].cpu()
    with pytest.raises(RuntimeError, match="device|CUDA"):
        OPS.gru_layer_forward(**arguments, reverse=False, save_for_backward=False)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("which", [0, 1])
def test_module_rejects_state_on_the_cpu(autocast, which):
    fused = fused_lstm.LSTM(5, 8, device=CUDA)
    x = torch.randn(6, 3, 5, device=CUDA)
    hx = [torch.randn(1, 3, 8, device=CUDA), torch.randn(1, 3, 8, device=CUDA)]
    hx[which] = hx[which].cpu()
    with torch.autocast("cuda", enabled=autocast), pytest.raises(RuntimeError):
        fused(x, tuple(hx))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_runs_on_the_second_gpu():
    cpu_lstm = fused_lstm.LSTM(5, 16, num_layers=2, bidirectional=True)
    second_gpu = torch.device("cuda", 1)
    gpu_lstm = copy.deepcopy(cpu_lstm).to(second_gpu)
    x = torch.randn(7, 3, 5)
    results = []
    for device, module in (("cpu", cpu_lstm), (second_gpu, gpu_lstm)):
        leaf = x.to(device).requires_grad_()
        output, (h_n, c_n) = module(leaf)
        grads = torch.autograd.grad(output.sum() + c_n.sum(), [leaf, *module.parameters()])
        results.append([output, h_n, c_n, *grads])
    assert torch.cuda.current_device() == 0  # the device guard restored it
    for on_cpu, on_gpu in zip(*results):
        assert on_gpu.device == second_gpu
        assert_close(on_gpu.cpu(), on_cpu, scale=CPU_AGAINST_CUDA_SCALE)
