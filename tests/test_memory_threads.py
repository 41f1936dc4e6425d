"""Memory, threads and determinism: what forward saves for backward (fused_lstm.LSTM vs nn.LSTM,
a deterministic byte count), no growth of process or CUDA memory over 1000 training iterations, the same
module called from several threads at once, bitwise-reproducible CPU results. See docs/robustness.md.

`python tests/test_memory_threads.py` prints the saved-for-backward table of docs/robustness.md.
"""

import functools
import gc
import hashlib
import os
import subprocess
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
import samples
from conftest import DEVICES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def one_intra_op_thread():
    """The byte counts do not depend on threads; one intra-op thread keeps the big sizes quick on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


make_pair = functools.partial(samples.module_pair, "LSTM")


# ---------------------------------------------------------------------------------------------------
# What forward saves for backward


def saved_for_backward(module, inputs):
    """Bytes of the distinct storages autograd saves during one training forward, in total and without the
    storages that exist anyway (the input and the parameters). Storages are deduplicated by data_ptr: views
    and tensors saved twice count once."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nn.LSTM's "projections are not supported with oneDNN"
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            output, _ = module(inputs)
    del output
    existing = {t.untyped_storage().data_ptr() for t in [inputs, *module.parameters()]}
    total = sum(storages.values())
    extra = sum(nbytes for pointer, nbytes in storages.items() if pointer not in existing)
    return total, extra


def fused_saved_bound(steps, batch, input_size, hidden, layers, directions=1, proj=0, element=4):
    """What each fused layer-direction saves besides the input and the parameters: output [N,P], gates [N,4H],
    c_{t-1} [N,H], o·tanh(c) [N,H] with a projection, h0 [B,P], c0 [B,H], b_ih + b_hh [4H] and batch_sizes [T]
    (int64); a layer > 0 also its input, the previous layer's directions concatenated, when bidirectional."""
    rows, out = steps * batch, proj or hidden
    per_direction = element * (rows * out + rows * 4 * hidden + rows * hidden + (rows * hidden if proj else 0)
                               + batch * out + batch * hidden + 4 * hidden) + 8 * steps
    concatenated = element * rows * out * directions if directions > 1 else 0
    return layers * directions * per_direction + (layers - 1) * concatenated


BENCHMARK_SIZES = [(50, 8, 128, 128, 1), (100, 32, 256, 256, 1), (100, 64, 512, 512, 1), (64, 16, 256, 256, 2)]


def saved_bytes_row(steps, batch, input_size, hidden, layers):
    torch.manual_seed(0)
    torch_lstm, fused = make_pair(input_size, hidden, num_layers=layers)
    x = torch.randn(steps, batch, input_size, requires_grad=True)
    return saved_for_backward(torch_lstm, x), saved_for_backward(fused, x)


@pytest.mark.parametrize("sizes", BENCHMARK_SIZES, ids=lambda s: "T{}-B{}-I{}-H{}-L{}".format(*s))
def test_fused_saves_no_more_than_nn_lstm(sizes, one_intra_op_thread):
    """At the benchmark sizes (float32, CPU): the fused LSTM keeps no more memory for backward than nn.LSTM,
    in total and beyond the input and parameters, and no more than what its design says it saves."""
    (torch_total, torch_extra), (fused_total, fused_extra) = saved_bytes_row(*sizes)
    assert fused_total <= torch_total, (fused_total, torch_total)
    assert fused_extra <= torch_extra, (fused_extra, torch_extra)
    steps, batch, input_size, hidden, layers = sizes
    assert fused_extra <= fused_saved_bound(steps, batch, input_size, hidden, layers)


@pytest.mark.parametrize("kwargs", [dict(bidirectional=True, num_layers=2), dict(proj_size=16, num_layers=2),
                                    dict(bidirectional=True, proj_size=16)])
def test_fused_saved_bytes_with_projection_and_directions(kwargs):
    """Bidirectional and projected stacks keep within the design bound too."""
    steps, batch, input_size, hidden = 12, 5, 24, 40
    torch.manual_seed(0)
    _, fused = make_pair(input_size, hidden, **kwargs)
    x = torch.randn(steps, batch, input_size, requires_grad=True)
    _, extra = saved_for_backward(fused, x)
    directions = 2 if kwargs.get("bidirectional") else 1
    assert extra <= fused_saved_bound(steps, batch, input_size, hidden, kwargs.get("num_layers", 1), directions,
                                      kwargs.get("proj_size", 0))


def test_inference_saves_nothing():
    _, fused = make_pair(8, 16, num_layers=2, bidirectional=True)
    saved = []
    with torch.no_grad(), torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fused(torch.randn(5, 3, 8))
    assert saved == []


# ---------------------------------------------------------------------------------------------------
# No growth over 1000 iterations


def resident_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


T, B, I, H = 8, 4, 32, 64  # one leaked gates tensor per iteration would be 8·4·256·4 B = 32 KiB: 32 MiB over 1000


def training_step(module, device, packed=False):
    x = torch.randn(T, B, I, device=device, requires_grad=True)
    inputs = pack_padded_sequence(x, torch.tensor([T, T - 1, 3, 1]), enforce_sorted=False) if packed else x
    output, (h_n, c_n) = module(inputs)
    data = output.data if packed else output
    (data.sum() + h_n.sum() + c_n.sum()).backward()


def inference_step(module, device, packed=False):
    with torch.no_grad():
        module(torch.randn(T, B, I, device=device))


def failing_step(module, device, packed=False):
    """The error paths: raw ops that raise after their arguments were converted (c0 has a row too many)."""
    sample = samples.to_device(samples.lstm_layer_sample(steps=T, batch=B, input_size=I, hidden=H, bias=False),
                               device)
    try:
        torch.ops.fused_lstm.lstm_layer_forward(**dict(sample, c0=torch.randn(B + 1, H, device=device)),
                                                reverse=False, save_for_backward=True)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the bad call did not raise")


def cell_step(cell, device, packed=False):
    x = torch.randn(B, I, device=device, requires_grad=True)
    h, c = cell(x)
    (h.sum() + c.sum()).backward()


STEPS = {"training": training_step, "training packed": lambda m, d: training_step(m, d, packed=True),
         "inference": inference_step, "raising": failing_step, "cell": cell_step}


def module_for(kind, device):
    torch.manual_seed(0)
    if kind == "cell":
        return fused_lstm.LSTMCell(I, H, device=device)
    return fused_lstm.LSTM(I, H, num_layers=2, bidirectional=True, device=device)


@pytest.mark.parametrize("kind", list(STEPS))
def test_no_process_memory_growth_over_1000_iterations_cpu(kind, one_intra_op_thread):
    """RSS after 1000 more iterations stays within 8 MiB of the RSS after a 100-iteration warm-up (forward +
    backward of a 2-layer bidirectional LSTM, padded or packed; inference; raising raw-op calls; the cell)."""
    module, step = module_for(kind, "cpu"), STEPS[kind]
    for _ in range(100):
        step(module, "cpu")
    gc.collect()
    before = resident_bytes()
    for _ in range(1000):
        step(module, "cpu")
    gc.collect()
    growth = resident_bytes() - before
    assert growth < 8 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 1000 iterations"


@needs_cuda
@pytest.mark.parametrize("kind", list(STEPS))
def test_no_cuda_memory_growth_over_1000_iterations(kind):
    """torch.cuda.memory_allocated is exact: after a warm-up, 1000 more iterations leave it unchanged."""
    module, step = module_for(kind, "cuda"), STEPS[kind]
    for _ in range(20):
        step(module, "cuda")
    torch.cuda.synchronize()
    gc.collect()
    module.zero_grad(set_to_none=False)
    before = torch.cuda.memory_allocated()
    for _ in range(1000):
        step(module, "cuda")
    torch.cuda.synchronize()
    gc.collect()
    assert torch.cuda.memory_allocated() == before


# ---------------------------------------------------------------------------------------------------
# Threads


def thread_inputs(device, count=8):
    generator = torch.Generator().manual_seed(1)
    inputs = []
    for index in range(count):
        steps, batch = 3 + index, 1 + index % 4
        x = torch.randn(steps, batch, 12, generator=generator).to(device)
        if index % 3 == 2 and batch > 1:  # some packed inputs, unsorted lengths
            lengths = torch.tensor([steps] + [max(1, steps - 2 * k) for k in range(1, batch)])[torch.randperm(
                batch, generator=generator)]
            x = pack_padded_sequence(x, lengths, enforce_sorted=False)
        inputs.append(x)
    return inputs


def flat_results(output, state):
    data = output.data if hasattr(output, "batch_sizes") else output
    return [data, *state]


def run_concurrently(function, items, workers=4, repeats=3):
    """Calls function(item) for every item `repeats` times from `workers` threads started together."""
    barrier = threading.Barrier(workers)

    def worker(offset):
        barrier.wait()
        return [(index, function(items[index])) for _ in range(repeats)
                for index in list(range(offset, len(items))) + list(range(offset))]

    with ThreadPoolExecutor(workers) as pool:
        return [pair for results in pool.map(worker, range(workers)) for pair in results]


@pytest.mark.parametrize("device", DEVICES)
def test_threads_inference_matches_serial_bitwise(device):
    """One module (2 layers, bidirectional, projection), 4 threads started together under no_grad, padded and
    packed (unsorted) inputs of different shapes: every result equals the serial one bitwise."""
    torch.manual_seed(0)
    fused = fused_lstm.LSTM(12, 20, num_layers=2, bidirectional=True, proj_size=7, device=device).eval()
    inputs = thread_inputs(device)

    def infer(x):
        with torch.no_grad():
            output, state = fused(x)
        return flat_results(output, state)

    serial = [infer(x) for x in inputs]
    for index, results in run_concurrently(infer, inputs):
        for actual, expected in zip(results, serial[index]):
            assert torch.equal(actual, expected), f"input {index}"


@pytest.mark.parametrize("device", DEVICES)
def test_threads_gradients_match_serial_bitwise(device):
    """torch.autograd.grad (no .grad accumulation) in several threads at once on one module: forward results and
    every gradient equal the serial ones bitwise."""
    torch.manual_seed(0)
    fused = fused_lstm.LSTM(12, 16, num_layers=2, bidirectional=True, device=device)
    inputs = [x for x in thread_inputs(device) if torch.is_tensor(x)]

    def train(x):
        leaf = x.detach().clone().requires_grad_()
        output, state = fused(leaf)
        results = flat_results(output, state)
        loss = sum((t * t).sum() for t in results)
        return [t.detach() for t in results] + list(torch.autograd.grad(loss, [leaf, *fused.parameters()]))

    serial = [train(x) for x in inputs]
    for index, results in run_concurrently(train, inputs, repeats=2):
        for actual, expected in zip(results, serial[index]):
            assert torch.equal(actual, expected), f"input {index}"


@pytest.mark.parametrize("device", DEVICES)
def test_threads_cell_matches_serial_bitwise(device):
    torch.manual_seed(0)
    cell = fused_lstm.LSTMCell(12, 20, device=device)
    generator = torch.Generator().manual_seed(2)
    inputs = [torch.randn(1 + k, 12, generator=generator).to(device) for k in range(8)]

    def step(x):
        with torch.no_grad():
            return list(cell(x))

    serial = [step(x) for x in inputs]
    for index, results in run_concurrently(step, inputs, repeats=20):
        for actual, expected in zip(results, serial[index]):
            assert torch.equal(actual, expected)


# ---------------------------------------------------------------------------------------------------
# Determinism


DIGEST_CONFIGS = [  # (steps, lengths or batch, input, hidden, module kwargs)
    (23, 6, 10, 17, dict()),
    (23, 6, 10, 17, dict(num_layers=2, bidirectional=True)),
    (23, 6, 10, 17, dict(proj_size=5, num_layers=2)),
    # 2100 rows per step with H = 16: in float64 the CPU pointwise pass splits the rows over the intra-op
    # threads; float32 runs the whole recurrence, whose results do not depend on the thread count either.
    (3, 2100, 8, 16, dict()),
]


def determinism_digest(device="cpu", threads=1, configs=None):
    """SHA-256 over the outputs and all gradients of DIGEST_CONFIGS (or those indices), padded and packed,
    float32 and float64, computed with `threads` intra-op threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    digest = hashlib.sha256()
    try:
        for dtype in (torch.float32, torch.float64):
            for index, (steps, batch, input_size, hidden, kwargs) in enumerate(DIGEST_CONFIGS):
                if configs is not None and index not in configs:
                    continue
                torch.manual_seed(3)
                fused = fused_lstm.LSTM(input_size, hidden, device=device, dtype=dtype, **kwargs)
                x = torch.randn(steps, batch, input_size, device=device, dtype=dtype, requires_grad=True)
                lengths = torch.randint(1, steps + 1, (batch,))
                lengths[0] = steps
                for packed in (False, True):
                    inputs = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x
                    output, (h_n, c_n) = fused(inputs)
                    data = output.data if packed else output
                    weights = torch.linspace(-1, 1, data.numel(), device=device, dtype=dtype).view_as(data)
                    loss = (data * weights).sum() + h_n.sum() + c_n.pow(2).sum()
                    grads = torch.autograd.grad(loss, [x, *fused.parameters()])
                    for tensor in (data, h_n, c_n, *grads):
                        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    finally:
        torch.set_num_threads(previous)
    return digest.hexdigest()


def print_determinism_digest(device, threads, configs):
    if device == "cuda":
        torch.use_deterministic_algorithms(True)
    print("DIGEST", determinism_digest(device, threads, configs))


def digest_in_child(device, threads=1, configs=None, extra_env=None):
    code = f"import test_memory_threads as m; m.print_determinism_digest({device!r}, {threads}, {configs!r})"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]), **(extra_env or {}))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("DIGEST")]
    return line.split()[1]


@pytest.mark.parametrize("threads,configs", [(1, None), (2, [3])], ids=["1 thread", "2 threads, big batch"])
def test_cpu_results_are_bitwise_reproducible(threads, configs):
    """Forward outputs and every gradient, padded and packed, float32 and float64: identical bits run to run in
    one process, and in two fresh processes (other allocation addresses and alignments); with 2 intra-op
    threads on a batch the pointwise pass splits between them."""
    first = determinism_digest("cpu", threads, configs)
    assert determinism_digest("cpu", threads, configs) == first
    assert digest_in_child("cpu", threads, configs) == digest_in_child("cpu", threads, configs) == first


@needs_cuda
def test_cuda_results_are_bitwise_reproducible_in_deterministic_mode():
    """With torch.use_deterministic_algorithms(True) and CUBLAS_WORKSPACE_CONFIG=:4096:8, two runs in one
    process and two fresh processes give identical bits (forward and gradients)."""
    env = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    first = digest_in_child("cuda", extra_env=env)
    assert digest_in_child("cuda", extra_env=env) == first


def main():
    torch.set_num_threads(1)
    print("| T | B | I | H | layers | nn.LSTM saved (MiB) | fused saved (MiB) | ratio | nn.LSTM beyond input+params "
          "(MiB) | fused beyond input+params (MiB) | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for sizes in BENCHMARK_SIZES:
        (torch_total, torch_extra), (fused_total, fused_extra) = saved_bytes_row(*sizes)
        mib = 2**20
        print("| {} | {} | {} | {} | {} | ".format(*sizes)
              + f"{torch_total / mib:.2f} | {fused_total / mib:.2f} | {fused_total / torch_total:.2f} | "
              f"{torch_extra / mib:.2f} | {fused_extra / mib:.2f} | {fused_extra / torch_extra:.2f} |")


if __name__ == "__main__":
    main()
