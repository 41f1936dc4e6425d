"""Bad arguments to the raw ops: every tensor argument of lstm_layer_forward/backward and
gru_layer_forward/backward replaced by a wrong one (in a child process, so that a crash fails a test instead
of killing the run) raises a Python exception that names the op and the argument; meta tensors give meta
results, or raise when mixed with CPU tensors; an argument on another device raises. See docs/robustness.md.
"""

import json
import re

import pytest
import torch

import fused_lstm
import samples
from conftest import TOLERANCES, run_python_child
from fuzzing import with_layout

pytestmark = pytest.mark.usefixtures("fuzz_intra_op_threads")


# ---------------------------------------------------------------------------------------------------
# Bad arguments to the raw ops, generated systematically and run in a child process


# Small valid calls: the layer samples (samples.py) of these sizes, and the direction. GRU calls use the same
# sizes without the projection.
BASELINES = {
    "padded": (dict(batch_sizes=(2, 2, 2), input_size=4, hidden=5, proj=0, bias=True), False),
    "packed_proj": (dict(batch_sizes=(3, 2, 2, 1), input_size=4, hidden=5, proj=3, bias=True), True),
    "packed_nobias": (dict(batch_sizes=(3, 3, 1), input_size=3, hidden=2, proj=0, bias=False), False),
}
OPS = ["lstm_layer_forward", "lstm_layer_backward", "gru_layer_forward", "gru_layer_backward"]


def op_tensor_arguments(op_name):
    """The op's Tensor and Tensor? arguments, in schema order."""
    schema = getattr(torch.ops.fused_lstm, op_name).default._schema
    return [a.name for a in schema.arguments if "Tensor" in str(a.type)]


def baseline_arguments(name):
    """Valid arguments (by schema name) of every op for one baseline: {op name: arguments}."""
    sizes, reverse = BASELINES[name]
    lstm = dict(samples.lstm_layer_sample(**sizes), reverse=reverse, save_for_backward=True)
    lstm_outputs = samples.call(torch.ops.fused_lstm.lstm_layer_forward, **lstm)
    gru = dict(samples.gru_layer_sample(**{k: v for k, v in sizes.items() if k != "proj"}), reverse=reverse,
               save_for_backward=True)
    gru_outputs = samples.call(torch.ops.fused_lstm.gru_layer_forward, **gru)
    return {"lstm_layer_forward": lstm,
            "lstm_layer_backward": samples.lstm_backward_arguments(lstm, lstm_outputs, reverse),
            "gru_layer_forward": gru,
            "gru_layer_backward": samples.gru_backward_arguments(gru, gru_outputs, reverse)}


def tensor_mutations(name, value):
    """(label, replacement, expectation) for one tensor argument: 'raise' (a clear error), 'same' (must run and
    give the baseline's results: another memory layout of the same values) or 'run' (must run: an argument
    the op ignores)."""
    if value is None:
        return []
    is_index = name == "batch_sizes"
    rank_changes = [("0-D", value.reshape(-1)[:1].reshape(()) if value.numel() else torch.zeros((), dtype=value.dtype)),
                    ("rank+1", value.unsqueeze(0)),
                    ("rank+1 (trailing)", value.unsqueeze(-1))]
    if value.dim() >= 2:
        rank_changes.append(("flattened", value.reshape(-1)))
    mutations = [(f"{name}: {label}", replacement, "raise") for label, replacement in rank_changes]
    for dim in range(value.dim()):
        for delta in (+1, -1, "zero"):
            shape = list(value.shape)
            shape[dim] = 0 if delta == "zero" else shape[dim] + delta
            if shape[dim] < 0 or shape == list(value.shape):
                continue
            if is_index:
                replacement = torch.ones(shape, dtype=value.dtype)  # keeps the non-increasing property
            else:
                replacement = torch.randn(shape, dtype=value.dtype, device=value.device)
            mutations.append((f"{name}: dim {dim} {'size 0' if delta == 'zero' else f'{delta:+d}'}", replacement,
                              "raise"))
    dtypes = [torch.int32, torch.float32, torch.float64, torch.uint8, torch.bool] if is_index else \
        [torch.float64 if value.dtype == torch.float32 else torch.float32, torch.float16, torch.bfloat16,
         torch.int64, torch.int32, torch.bool, torch.complex64]
    for dtype in dtypes:
        if dtype != value.dtype:
            mutations.append((f"{name}: dtype {str(dtype).replace('torch.', '')}", value.to(dtype), "raise"))
    mutations.append((f"{name}: empty 1-D", torch.empty(0, dtype=value.dtype, device=value.device), "raise"))
    mutations.append((f"{name}: None", None, "raise"))
    if value.dim() >= 1 and value.numel() > 1:
        mutations.append((f"{name}: strided view of the same values", with_layout(value, "sliced")[1].detach(),
                          "same"))
        mutations.append((f"{name}: misaligned view of the same values", with_layout(value, "offset")[1].detach(),
                          "same"))
    if value.dim() == 2 and value.numel() > 1:
        mutations.append((f"{name}: transposed storage of the same values", value.t().contiguous().t(), "same"))
    return mutations


def batch_size_value_mutations(batch_sizes):
    """Bad values in a well-formed batch_sizes (every baseline has at least three steps)."""
    sizes = batch_sizes.tolist()
    rising = [sizes[0], sizes[0] - 1, sizes[0]] + sizes[3:]  # step 2 > step 1 (checked before the sum)
    return [
        ("batch_sizes: increasing", torch.tensor(rising), "raise"),
        ("batch_sizes: one negative", torch.tensor(sizes[:-1] + [-1]), "raise"),
        ("batch_sizes: first too big", torch.tensor([sizes[0] + 1] + sizes[1:]), "raise"),
        ("batch_sizes: first 0", torch.tensor([0] + sizes[1:]), "raise"),
        ("batch_sizes: sum one short", torch.tensor(sizes[:-1] + [sizes[-1] - 1]), "raise"),
        ("batch_sizes: sum one long", torch.tensor(sizes + [1]), "raise"),
        ("batch_sizes: 2^62 everywhere", torch.tensor([2**62] * len(sizes)), "raise"),
        ("batch_sizes: int64 max first", torch.tensor([2**63 - 1] + sizes[1:]), "raise"),
        ("batch_sizes: a trailing zero step", torch.tensor(sizes + [0]), "same"),
        ("batch_sizes: non-contiguous", torch.tensor([[size, 0] for size in sizes])[:, 0], "same"),
    ]


def overflowing_call():
    """lstm_layer_forward's arguments: batch_sizes that sum to 2^64 (0 after int64 wrap-around) with a 0-row
    input and expanded (stride 0) states of 2^62 rows: the row-count check passes by overflow; what follows must
    raise, not crash."""
    big, hidden = 2**62, 1
    states = torch.zeros(1, hidden).expand(big, hidden)
    sample = samples.lstm_layer_sample(batch_sizes=[0] * 4, input_size=2, hidden=hidden, bias=False)
    return dict(sample, batch_sizes=torch.tensor([big] * 4), h0=states, c0=states, reverse=False,
                save_for_backward=False)


OPTIONAL_TENSORS = {"weight_hr", "bias_ih", "bias_hh"}


def mutation_cases(op_name, baseline):
    """Every (label, arguments, expectation) of one op and baseline."""
    arguments = baseline_arguments(baseline)[op_name]
    projected = arguments.get("weight_hr") is not None
    gates = 4 if op_name.startswith("lstm") else 3
    hidden = arguments["weight_ih"].shape[0] // gates
    cases = []
    for name in op_tensor_arguments(op_name):
        mutations = tensor_mutations(name, arguments[name])
        if name == "batch_sizes":
            mutations += batch_size_value_mutations(arguments[name])
        if name == "proj_input" and not projected:
            mutations = [(label, value, "run") for label, value, _ in mutations]  # ignored without a projection
        if name in OPTIONAL_TENSORS:
            mutations = [m for m in mutations if not m[0].endswith(": None")]
        if name == "weight_hr":
            if projected:
                mutations.append(("weight_hr: None for a projected layer", None, "raise"))
            else:
                mutations += [("weight_hr: [H, H] given to a layer without projection", torch.randn(hidden, hidden),
                               "raise"),
                              ("weight_hr: [H, H-1] given to a layer without projection",
                               torch.randn(hidden, max(hidden - 1, 1)), "raise")]
        if name in ("bias_ih", "bias_hh"):
            if arguments[name] is not None:
                mutations.append((f"{name}: None while the other bias is given", None, "raise"))
            else:
                mutations.append((f"{name}: given while the other bias is None", torch.randn(gates * hidden), "raise"))
        for label, value, expectation in mutations:
            cases.append((label, dict(arguments, **{name: value}), expectation))
    steps, rows = len(arguments["batch_sizes"]), arguments["input"].shape[0]
    if op_name.endswith("forward"):
        cases.append(("reverse: not a bool", dict(arguments, reverse="yes"), "raise"))
        if rows % steps == 0:
            padded = arguments["input"].reshape(steps, rows // steps, -1)
            cases.append(("input: a [T, B, C] tensor instead of packed rows", dict(arguments, input=padded), "raise"))
    if op_name.endswith("backward"):
        wider = torch.randn(arguments["gates"].shape[0], arguments["gates"].shape[1] + gates)
        cases.append(("gates: from a layer with another hidden size", dict(arguments, gates=wider), "raise"))
        saved = [name for name in ("gates", "cell_prev", "candidate_hidden") if name in arguments]
        cases.append((f"{', '.join(saved)}: empty (forward ran with save_for_backward=False)",
                      dict(arguments, **{name: torch.empty(0) for name in saved}), "raise"))
    return cases


def meta_cases(op_name, baseline):
    """One argument on the meta device, the rest on the CPU."""
    arguments = baseline_arguments(baseline)[op_name]
    return [(f"{name}: on meta, the rest on cpu", dict(arguments, **{name: arguments[name].to("meta")}))
            for name in op_tensor_arguments(op_name) if arguments[name] is not None]


def _describe(results):
    return [(tuple(t.shape), str(t.dtype).replace("torch.", ""), t.device.type) for t in results]


def _run_case(op, arguments, baseline_results):
    """Runs one call; returns (outcome, detail). Outcomes: raised, returned close (to the baseline's
    results), returned different, returned."""
    try:
        results = op(**arguments)
    except Exception as error:  # noqa: BLE001 -- any Python exception is the wanted outcome
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return "raised", f"{type(error).__name__}: {message}"
    described = str(_describe(results))
    if all(t.device.type == "cpu" for t in results) and \
            all(a.shape == b.shape and torch.allclose(a, b, *TOLERANCES[torch.float32]) for a, b in
                zip(results, baseline_results)):
        return "returned close", described
    return "returned", described


def child_cases(op_name, baseline, kind):
    if kind == "mutations":
        cases = mutation_cases(op_name, baseline)
        if op_name == "lstm_layer_forward" and baseline == "padded":
            cases.append(("batch_sizes: sum overflows int64 (expanded 2^62-row states)", overflowing_call(),
                          "raise"))
        return cases
    if kind == "meta":
        return [(label, arguments, "raise") for label, arguments in meta_cases(op_name, baseline)]
    if kind == "cuda":  # a second real device: each argument alone on the GPU
        arguments = baseline_arguments(baseline)[op_name]
        return [(f"{name}: on cuda, the rest on cpu", dict(arguments, **{name: arguments[name].to("cuda")}), "raise")
                for name in op_tensor_arguments(op_name) if arguments[name] is not None]
    raise ValueError(kind)


def mutation_child(kinds):
    """Child-process entry point: every op x baseline x kind; one JSON line per case, flushed before the next
    case starts, so that the parent knows in which case a crash happened."""
    torch.set_num_threads(1)
    for kind in kinds:
        for op_name in OPS:
            op = getattr(torch.ops.fused_lstm, op_name)
            for baseline in BASELINES:
                baseline_results = op(**baseline_arguments(baseline)[op_name])
                for label, arguments, expectation in child_cases(op_name, baseline, kind):
                    key = dict(kind=kind, op=op_name, baseline=baseline, case=label)
                    print(json.dumps(dict(key, start=True)), flush=True)
                    outcome, detail = _run_case(op, arguments, baseline_results)
                    print(json.dumps(dict(key, expect=expectation, outcome=outcome, detail=detail)), flush=True)
    print(json.dumps({"done": True}), flush=True)


def run_child(function, *args, timeout=600):
    """Runs test_bad_arguments.<function>(*args) in a fresh interpreter; returns (returncode, records, stderr)."""
    result = run_python_child(f"import test_bad_arguments as m; m.{function}(*{args!r})", timeout=timeout)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, records, result.stderr


@pytest.fixture(scope="module")
def bad_call_records():
    """All bad raw-op calls, run once per session in one child process (a crash there fails the tests that
    use these records, naming the case it died in, instead of killing pytest)."""
    kinds = ["mutations", "meta"] + (["cuda"] if torch.cuda.is_available() else [])
    returncode, records, stderr = run_child("mutation_child", kinds)
    finished = {(r["kind"], r["op"], r["baseline"], r["case"]) for r in records if "outcome" in r}
    crashed = [r for r in records if r.get("start") and (r["kind"], r["op"], r["baseline"], r["case"]) not in finished]
    if returncode != 0 or not records or not records[-1].get("done"):
        pytest.fail(f"the child process died (exit status {returncode}) in {crashed[:1]}; stderr tail:\n"
                    f"{stderr[-3000:]}")
    return [r for r in records if "outcome" in r]


def schema_argument_names(op_name):
    return [argument.name for argument in getattr(torch.ops.fused_lstm, op_name).default._schema.arguments]


# The argument checks say "fused_lstm[.lstm_layer_<op>]: <argument> must ...".
NAMED_CHECK = re.compile(r"fused_lstm(?:\.\w+_layer_\w+)?: (\S+) must ")


CLEAR_MESSAGE_WORDS = ("fused_lstm", "_layer_forward", "_layer_backward")


@pytest.mark.parametrize("op_name", OPS)
def test_raw_op_bad_arguments_raise(bad_call_records, op_name):
    """Each tensor argument replaced by: wrong rank (0-D, an extra leading or trailing dimension, flattened),
    each dimension +1, -1 and 0, every other dtype, an empty tensor, None; batch_sizes with bad values
    (increasing, negative, first != batch, wrong sum, 2^62, int64 max, a sum that overflows int64); argument
    mix-ups; saved tensors of another layer or none (forward with save_for_backward=False). On three baselines
    (padded, packed with projection, packed without bias). Every such call raises a RuntimeError that names
    the op (never a crash: the calls run in a child process); the same values in another memory layout
    (strided, misaligned, transposed storage) give the baseline's results; arguments the op ignores
    (proj_input without a projection) may be anything."""
    problems, count = [], 0
    for record in bad_call_records:
        if record["kind"] != "mutations" or record["op"] != op_name:
            continue
        count += 1
        where = f"[{record['baseline']}] {record['case']}"
        expect, outcome, detail = record["expect"], record["outcome"], record["detail"]
        if expect == "raise":
            if outcome != "raised":
                problems.append(f"{where}: did not raise, returned {detail}")
            elif not detail.startswith("RuntimeError: "):
                problems.append(f"{where}: raised another exception than RuntimeError: {detail!r}")
            elif not any(word in detail for word in CLEAR_MESSAGE_WORDS):
                problems.append(f"{where}: unclear message {detail!r}")
        elif expect == "same" and outcome != "returned close":
            problems.append(f"{where}: {outcome} {detail}")
        elif expect == "run" and not outcome.startswith("returned"):
            problems.append(f"{where}: {outcome} {detail}")
    assert count > 150
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("op_name", OPS)
def test_raw_op_error_messages_name_the_argument(bad_call_records, op_name):
    """'fused_lstm: X must ...' messages: X is one of the op's argument names."""
    arguments = schema_argument_names(op_name)
    unclear = sorted({f"{r['case']}: {r['detail']}" for r in bad_call_records
                      if r["kind"] == "mutations" and r["op"] == op_name and r["outcome"] == "raised"
                      and any(name not in arguments for name in NAMED_CHECK.findall(r["detail"]))})
    assert not unclear, "\n".join(unclear)


@pytest.mark.parametrize("op_name", OPS)
def test_raw_op_none_for_a_required_tensor_names_it(bad_call_records, op_name):
    """None for a required tensor (an undefined tensor in C++): '<op>: <argument> is required'."""
    unclear = sorted({f"{r['case']}: {r['detail']}" for r in bad_call_records
                      if r["kind"] == "mutations" and r["op"] == op_name and r["case"].endswith(": None")
                      and r["expect"] == "raise" and not ("fused_lstm" in r["detail"] and "required" in r["detail"])})
    assert not unclear, "\n".join(unclear)


def test_batch_sizes_sum_overflow_is_reported_as_such(bad_call_records):
    """Four steps of 2^62 rows would wrap an int64 sum to 0 and pass the row-count check: the check compares
    before adding and names batch_sizes."""
    (record,) = [r for r in bad_call_records if "overflows int64" in r["case"]]
    assert record["outcome"] == "raised"
    assert "fused_lstm" in record["detail"] and "batch_sizes" in record["detail"], record["detail"]


@pytest.mark.parametrize("op_name", OPS)
def test_meta_tensors_everywhere_give_meta_results(op_name):
    """Every tensor on the meta device (batch_sizes on meta or on the CPU): the fake kernel gives the real
    kernel's shapes and dtypes, on meta."""
    op = getattr(torch.ops.fused_lstm, op_name)
    for baseline in BASELINES:
        arguments = baseline_arguments(baseline)[op_name]
        cpu_results = op(**arguments)
        for sizes_device in ("cpu", "meta"):
            meta = {k: (v.to("meta") if torch.is_tensor(v) else v) for k, v in arguments.items()}
            meta["batch_sizes"] = arguments["batch_sizes"].to(sizes_device)
            results = op(**meta)
            assert [(r.shape, r.dtype) for r in results] == [(r.shape, r.dtype) for r in cpu_results]
            assert all(r.device.type == "meta" for r in results)


@pytest.mark.parametrize("op_name", OPS)
def test_meta_tensor_among_cpu_arguments_raises(bad_call_records, op_name):
    """One argument on meta, the rest on the CPU: Meta wins dispatch, so the fake kernel serves the call; it
    must raise naming the op, never return uninitialized CPU tensors."""
    problems = [f"[{r['baseline']}] {r['case']}: {r['outcome']} {r['detail']}" for r in bad_call_records
                if r["kind"] == "meta" and r["op"] == op_name
                and (r["outcome"] != "raised" or not any(w in r["detail"] for w in CLEAR_MESSAGE_WORDS))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_module_with_meta_parameters_and_cpu_input_raises(name):
    """nn.LSTM / nn.GRU / nn.LSTMCell raise here, and so do the fused modules (they check the parameters'
    device as nn.LSTM does)."""
    x = torch.randn(3, 2, 4)[0] if name.endswith("Cell") else torch.randn(3, 2, 4)
    with pytest.raises(RuntimeError):
        getattr(torch.nn, name)(4, 5, device="meta")(x)
    with pytest.raises(RuntimeError):
        getattr(fused_lstm, name)(4, 5, device="meta")(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (a second real device)")
@pytest.mark.parametrize("op_name", OPS)
def test_raw_op_argument_on_cuda_with_the_rest_on_the_cpu_raises(bad_call_records, op_name):
    problems = [f"[{r['baseline']}] {r['case']}: {r['outcome']} {r['detail']}" for r in bad_call_records
                if r["kind"] == "cuda" and r["op"] == op_name
                and (r["outcome"] != "raised" or not any(w in r["detail"] for w in CLEAR_MESSAGE_WORDS))]
    assert not problems, "\n".join(problems)
