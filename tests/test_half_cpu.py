"""bfloat16 and float16 on the CPU: every module option in both dtypes, outputs and gradients no further from
float64 than twice torch's own module in the same dtype (flash-attention's rule; the kernels compute in
float32 and keep the LSTM cell state in float32); parameter gradients in the parameters' dtype; the bfloat16
whole recurrence on AMX tiles, on AVX512-BF16 register tiles and per step against float64 at every tile edge;
torch.autocast("cpu") as torch's own modules do."""

import copy
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
import samples
from conftest import (BFLOAT16_CPU_LAYER_RELATIVE_ERROR, assert_close, assert_close_nan, assert_no_worse_than_torch,
                      assert_same_error, cpu_isa_or_skip, relative_error, run_counting_aten_gemms)
from test_nonfinite import gate_probe_pair

HALF_DTYPES = [torch.bfloat16, torch.float16]
# (module class name, constructor options, input shape T×B×C (or B×C for cells), packed lengths or None)
CASES = {
    "LSTM": ("LSTM", dict(), (12, 5, 8), None),
    "LSTM 2 layers bidirectional batch-first": ("LSTM", dict(num_layers=2, bidirectional=True, batch_first=True),
                                                (5, 12, 8), None),
    "LSTM no bias": ("LSTM", dict(bias=False), (12, 5, 8), None),
    "LSTM projection": ("LSTM", dict(proj_size=6), (12, 5, 8), None),
    "LSTM packed": ("LSTM", dict(num_layers=2), (12, 5, 8), [12, 9, 9, 4, 1]),
    "LSTM unbatched": ("LSTM", dict(), (12, 8), None),
    "GRU": ("GRU", dict(num_layers=2, bidirectional=True), (12, 5, 8), None),
    "GRU packed": ("GRU", dict(), (12, 5, 8), [12, 9, 9, 4, 1]),
    "LSTMCell": ("LSTMCell", dict(), (5, 8), None),
    "GRUCell": ("GRUCell", dict(bias=False), (5, 8), None),
}
HIDDEN = 24


def outputs_and_gradients(module, x, lengths):
    """Every output (states included) and the gradients of a fixed random weighting of them w.r.t. the input and
    every parameter."""
    leaf = x.detach().requires_grad_()
    out = module(pack_padded_sequence(leaf, lengths) if lengths else leaf)
    if isinstance(out, tuple):
        first, rest = out
        flat = [first.data if lengths else first, *(rest if isinstance(rest, tuple) else (rest,))]
    else:
        flat = [out]
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(t.shape, generator=generator, dtype=torch.float64) for t in flat]
    loss = sum((t.double() * w).sum() for t, w in zip(flat, weights))
    grads = torch.autograd.grad(loss, [leaf, *module.parameters()])
    return [t.detach() for t in flat], list(grads)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES)
def test_half_precision_is_no_worse_than_torch(dtype, case):
    name, options, shape, lengths = CASES[case]
    arguments = dict(input_size=8, hidden_size=HIDDEN, **options)
    torch.manual_seed(0)
    exact = getattr(torch.nn, name)(**arguments).double()
    theirs = copy.deepcopy(exact).to(dtype)
    ours = getattr(fused_lstm, name)(**arguments, dtype=dtype)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(*shape).to(dtype)
    expected = outputs_and_gradients(exact, x.double(), lengths)
    actual = outputs_and_gradients(ours, x, lengths)
    try:
        torch_results = outputs_and_gradients(theirs, x, lengths)
    except RuntimeError as error:  # torch's CPU kernels lack some half-precision cases
        pytest.skip(f"torch.nn.{name} does not run this case in {dtype}: {str(error)[:100]}")
    for kind, ours_list, theirs_list, exact_list in zip(("output", "gradient"), actual, torch_results, expected):
        for index, (a, t, e) in enumerate(zip(ours_list, theirs_list, exact_list)):
            assert a.dtype == dtype, (kind, index)  # parameter gradients in the parameters' dtype too
            assert_no_worse_than_torch(f"{kind} {index}", a, t, e, dtype)


# The dtype the modules' ops run a half-precision call in, by cpu_isa: bfloat16 where its tiles exist
# (avx512_bf16, amx), float32 below (no kernel computes in bfloat16 at speed there); float16 always in float32.
KERNEL_DTYPE_BY_ISA = {"none": torch.float32, "avx2": torch.float32, "avx512": torch.float32,
                       "avx512_bf16": torch.bfloat16, "amx": torch.bfloat16}


def dtypes_of_the_ops(module, x):
    """The dtypes the fused ops of a call of `module` run in, as recording_paths names them."""
    with fused_lstm.recording_paths() as paths:
        module(x)
    return {(record["op"], record["dtype"]) for record in paths}


@pytest.mark.parametrize("isa", list(KERNEL_DTYPE_BY_ISA))
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("name", ["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_half_precision_runs_on_the_float32_kernels_where_the_cpu_has_none_for_it(name, dtype, isa):
    """Both sides of the rule (fused_lstm.settings.cpu_computes_half_in_float32) on one CPU, by capping cpu_isa: the
    ops run in float32 (inputs, states and weights converted at the call) where no kernel computes in the dtype,
    and the module still returns, and differentiates into, the dtype; no worse than torch's own error in it."""
    arguments = dict(input_size=8, hidden_size=HIDDEN)
    shape = (5, 8) if name.endswith("Cell") else (12, 5, 8)
    torch.manual_seed(0)
    exact = getattr(torch.nn, name)(**arguments).double()
    ours = getattr(fused_lstm, name)(**arguments, dtype=dtype)
    ours.load_state_dict(exact.state_dict())
    x = torch.randn(*shape).to(dtype)
    with cpu_isa_or_skip(isa):
        expected_dtype = KERNEL_DTYPE_BY_ISA[isa] if dtype == torch.bfloat16 else torch.float32
        assert fused_lstm.settings.cpu_computes_half_in_float32(str(dtype)[6:]) == (expected_dtype == torch.float32)
        op = {"LSTM": "lstm_layer", "GRU": "gru_layer", "LSTMCell": "lstm_cell", "GRUCell": "gru_cell"}[name]
        assert dtypes_of_the_ops(ours, x) == {(op, str(expected_dtype)[6:])}
        actual = outputs_and_gradients(ours, x, None)
    theirs = copy.deepcopy(exact).to(dtype)
    torch_results = outputs_and_gradients(theirs, x, None)
    expected = outputs_and_gradients(exact, x.double(), None)
    for kind, ours_list, theirs_list, exact_list in zip(("output", "gradient"), actual, torch_results, expected):
        for index, (a, t, e) in enumerate(zip(ours_list, theirs_list, exact_list)):
            assert a.dtype == dtype, (kind, index)
            assert_no_worse_than_torch(f"{kind} {index}", a, t, e, dtype)


@pytest.mark.parametrize("isa", ["auto", "avx2"])
@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell"])
def test_a_cell_whose_input_dtype_differs_from_its_weights_raises_on_both_sides_of_the_rule(name, isa):
    """Converting a call to float32 for the kernels must not hide a dtype mistake that torch's cell rejects."""
    arguments = dict(input_size=8, hidden_size=HIDDEN)
    x = torch.randn(5, 8, dtype=torch.bfloat16)
    with cpu_isa_or_skip(isa):
        assert_same_error(lambda: getattr(torch.nn, name)(**arguments)(x),
                          lambda: getattr(fused_lstm, name)(**arguments)(x))


# The bfloat16 whole recurrence on each instruction set: AMX tiles (batch rows in tiles of 16, inputs and hidden
# units in chunks of 32, units in blocks of 16), AVX512-BF16 register tiles (up to 6 rows, 16 units, K in pairs:
# odd C and H leave a single last value), and the per-step path; against the float64 reference from the same
# bfloat16 values.
BF16_SIZES = [(1, 1, 1, 1), (5, 3, 7, 20), (4, 16, 32, 32), (3, 17, 33, 48), (2, 20, 0, 17), (3, 64, 64, 96),
              (4, 7, 5, 31), (3, 13, 1, 2)]
BF16_TILES = "whole recurrence (avx512_bf16 register tiles)"
# (forward, backward) of each cpu_isa. The backward has no AMX version: on an AMX CPU it runs the vdpbf16ps tiles
# below 2^21 multiply-adds a step (B·4H·H), per step (AMX GEMMs) above.
BF16_PATHS = {"amx": lambda B, H: ("whole recurrence (amx tiles)", BF16_TILES if B * 4 * H * H < 2 ** 21 else "per step"),
              "avx512_bf16": lambda B, H: (BF16_TILES, BF16_TILES),
              "none": lambda B, H: ("per step", "per step")}


@pytest.fixture(params=list(BF16_PATHS))
def bf16_isa(request):
    """Runs the test with the option cpu_isa set for each bfloat16 path; skips the ones this CPU lacks."""
    with cpu_isa_or_skip(request.param):
        yield request.param


def bf16_forward_matches_float64(size, reverse, bias, tolerance=BFLOAT16_CPU_LAYER_RELATIVE_ERROR):
    T, B, C, H = size
    sample = samples.lstm_layer_sample(steps=T, batch=B, input_size=C, hidden=H, bias=bias, dtype=torch.bfloat16)
    exact = samples.lstm_reference(sample, reverse)
    forward = samples.call(torch.ops.fused_lstm.lstm_layer_forward, **sample, reverse=reverse, save_for_backward=True)
    for name in ("output", "h_n", "c_n"):
        assert relative_error(forward[name], exact[name]) < tolerance, name
    results = samples.lstm_forward_and_backward(torch.ops.fused_lstm, sample, reverse)
    for name, value in exact.items():
        assert relative_error(results[name], value) < 4 * tolerance, name


@pytest.mark.parametrize("size", BF16_SIZES, ids=lambda s: "T{}-B{}-C{}-H{}".format(*s))
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_bfloat16_layer_matches_float64_on_every_path(bf16_isa, size, reverse, bias):
    sample = samples.lstm_layer_sample(steps=size[0], batch=size[1], input_size=size[2], hidden=size[3],
                                       dtype=torch.bfloat16)
    assert samples.paths(torch.ops.fused_lstm, sample) == BF16_PATHS[bf16_isa](size[1], size[3])
    bf16_forward_matches_float64(size, reverse, bias)


def test_bfloat16_paths_agree_to_rounding(bf16_isa):
    """Every path computes the same float32 sums of bfloat16 products; they differ in summation order only."""
    sample = samples.lstm_layer_sample(steps=20, batch=9, input_size=35, hidden=40, dtype=torch.bfloat16)
    with fused_lstm.options(cpu_isa="none"):
        per_step = samples.call(torch.ops.fused_lstm.lstm_layer_forward, **sample, reverse=False,
                                save_for_backward=False)
    ours = samples.call(torch.ops.fused_lstm.lstm_layer_forward, **sample, reverse=False, save_for_backward=False)
    for name in ("output", "h_n", "c_n"):
        assert relative_error(ours[name], per_step[name].double()) < BFLOAT16_CPU_LAYER_RELATIVE_ERROR, name


NAN, INF = float("nan"), float("inf")
EXTREME_BF16_PREACTIVATIONS = [-INF, -1e30, -88.5, -20.0, -1.0, 0.0, 1.0, 20.0, 88.5, 1e30, INF, NAN]
EXTREME_BF16_CELLS = [-INF, -1e38, -1.0, 0.0, 1.0, 1e38, INF]


def test_bfloat16_extreme_and_nonfinite_gates_match_float64(bf16_isa):
    """Pre-activations (i, f, g, o) in ±{0, 1, 20, 88.5, 1e30, inf} and NaN with c0 in ±{0, 1, 1e38, inf}, one
    batch row each, on each bfloat16 path: NaN exactly where nn.LSTM in float64 (from the same bfloat16 values) has
    NaN (sigmoid(-inf) is 0, so a closed forget gate times an infinite cell state is NaN), infinities equal, values
    within bfloat16 tolerance."""
    torch_lstm, fused = gate_probe_pair("cpu", torch.float64)
    fused.bfloat16()
    rows = itertools.product(*[EXTREME_BF16_PREACTIVATIONS] * 4, EXTREME_BF16_CELLS)
    grid = torch.tensor(list(rows), dtype=torch.bfloat16)
    x, c0 = grid[:, :4].unsqueeze(0), grid[:, 4].reshape(1, -1, 1)
    h0 = torch.zeros_like(c0)
    with torch.no_grad():
        expected_out, (expected_h, expected_c) = torch_lstm(x.double(), (h0.double(), c0.double()))
        out, (h_n, c_n) = fused(x, (h0, c0))
    forward_path = torch.ops.fused_lstm.layer_paths("lstm_layer", x[0], samples.batch_sizes_of(1, x.shape[1]), h0[0],
                                                    fused.weight_ih_l0, fused.weight_hh_l0, None)[0]
    assert forward_path == BF16_PATHS[bf16_isa](x.shape[1], 1)[0]
    assert_close_nan(out, expected_out.bfloat16(), what="output")
    assert_close_nan(h_n, expected_h.bfloat16(), what="h_n")
    assert_close_nan(c_n, expected_c.bfloat16(), what="c_n")


@pytest.mark.parametrize("isa", ["amx", "avx512_bf16"])
def test_bfloat16_whole_recurrence_runs_no_library_gemm(isa):
    sample = samples.lstm_layer_sample(steps=5, batch=4, input_size=16, hidden=32, dtype=torch.bfloat16)
    with cpu_isa_or_skip(isa):
        _, gemms = run_counting_aten_gemms(lambda: torch.ops.fused_lstm.lstm_layer_forward(
            **sample, reverse=False, save_for_backward=False))
    assert gemms == 0


def torch_lstm_runs_on_onednn_in(dtype):
    """Whether nn.LSTM under CPU autocast runs oneDNN's RNN in `dtype` here. torch's own checks (oneDNN on, and
    its bfloat16 or float16 support as _is_mkldnn_*_supported reports it) are not enough: on a Xeon with
    AVX512-FP16 they say float16 and oneDNN then fails to create the LSTM primitive, so the call is tried."""
    supported = {torch.bfloat16: torch.ops.mkldnn._is_mkldnn_bf16_supported,
                 torch.float16: torch.ops.mkldnn._is_mkldnn_fp16_supported}[dtype]
    if not (torch.backends.mkldnn.enabled and torch.backends.mkldnn.is_available() and supported()):
        return False
    try:
        with torch.autocast("cpu", dtype=dtype):
            torch.nn.LSTM(4, 4)(torch.randn(2, 1, 4))
    except RuntimeError as error:
        assert "primitive" in str(error), error  # oneDNN's refusal, not another failure
        return False
    return True


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("name", ["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_cpu_autocast_gives_the_dtypes_torch_gives(dtype, name):
    """Under CPU autocast nn.LSTM computes in the autocast dtype where oneDNN's RNN has it, and the other modules in
    float32. Where oneDNN lacks the dtype (an AVX2 CPU: float16 on most CPUs) nn.LSTM raises or, with oneDNN off,
    stays in float32: that depends on the CPU, the fused modules do not, and give the autocast dtype."""
    arguments = dict(input_size=8, hidden_size=HIDDEN)
    shape = (5, 8) if name.endswith("Cell") else (12, 5, 8)
    theirs = getattr(torch.nn, name)(**arguments)
    ours = getattr(fused_lstm, name)(**arguments)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(*shape)

    def dtypes(module):
        with torch.autocast("cpu", dtype=dtype):
            out = module(x)
        flat = [out[0], *out[1]] if isinstance(out, tuple) and isinstance(out[1], tuple) else (
            list(out) if isinstance(out, tuple) else [out])
        return [t.dtype for t in flat]

    expected = [dtype] * 3 if name == "LSTM" else dtypes(theirs)
    if name == "LSTM" and torch_lstm_runs_on_onednn_in(dtype):
        assert dtypes(theirs) == expected
    if name != "LSTM":
        assert all(t == torch.float32 for t in expected)
    assert dtypes(ours) == expected


def test_cpu_autocast_lstm_matches_the_module_in_bfloat16():
    ours = fused_lstm.LSTM(8, HIDDEN, num_layers=2)
    x = torch.randn(12, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_output, (h_n, c_n) = ours(x)
    bfloat16 = copy.deepcopy(ours).bfloat16()
    expected, (expected_h, expected_c) = bfloat16(x.bfloat16())
    assert_close(autocast_output, expected, dtype=torch.bfloat16)
    assert_close(c_n, expected_c, dtype=torch.bfloat16)
