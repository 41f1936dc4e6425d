"""Samples of the raw ops' arguments, built in one place and keyed by the ops' schema argument names (so a
sample is passed as op(**sample)), the backward ops' arguments built from a forward's named outputs, calls
that return the outputs by their schema names, and the float64 reference of a sample (fused_lstm.reference
with autograd)."""

import torch

from fused_lstm import reference


def batch_sizes_of(steps, batch, lengths=None):
    """[T] int64: every step has all B rows (padded), or the rows still running for sorted `lengths`."""
    if lengths is None:
        return torch.full((steps,), batch, dtype=torch.int64)
    assert list(lengths) == sorted(lengths, reverse=True) and len(lengths) == batch and lengths[0] == steps
    return torch.tensor([sum(length > t for length in lengths) for t in range(steps)], dtype=torch.int64)


def _random(generator, dtype, scale):
    def random(*shape):
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype)

    return random


def _layer_batch_sizes(steps, batch, lengths, batch_sizes):
    if batch_sizes is None:
        return batch_sizes_of(steps, batch, lengths)
    return torch.tensor(list(batch_sizes), dtype=torch.int64)


def _requiring_grad(sample, requires_grad):
    """The sample, its floating-point tensors leaves that require grad if requires_grad."""
    if not requires_grad:
        return sample
    return {name: value.requires_grad_() if torch.is_tensor(value) and value.is_floating_point() else value
            for name, value in sample.items()}


def lstm_layer_sample(steps=4, batch=5, input_size=7, hidden=30, proj=0, bias=True, lengths=None,
                      dtype=torch.float32, seed=0, weight_scale=None, value_scale=0.5, batch_sizes=None,
                      requires_grad=False):
    """Arguments of fused_lstm::lstm_layer_forward but reverse and save_for_backward: input [N, C], batch_sizes
    [T], h0 [B, P], c0 [B, H], weight_ih [4H, C], weight_hh [4H, P], bias_ih and bias_hh [4H] or None, weight_hr [P, H] or
    None (P = proj or H). Drawn in float64 and rounded to dtype, so cast(sample, float64) is the same sample.
    Weights of scale weight_scale (default H^-0.5), the input, states and bias of scale value_scale.
    batch_sizes: the per-step batch sizes themselves (any non-increasing sizes: trailing zero steps, batch 0),
    instead of steps, batch and lengths. requires_grad: every floating-point tensor a leaf requiring grad."""
    generator = torch.Generator().manual_seed(seed)
    state = proj or hidden
    weight = _random(generator, dtype, weight_scale if weight_scale is not None else hidden ** -0.5)
    value = _random(generator, dtype, value_scale)
    batch_sizes = _layer_batch_sizes(steps, batch, lengths, batch_sizes)
    batch = int(batch_sizes[0])
    sample = dict(input=value(int(batch_sizes.sum()), input_size), batch_sizes=batch_sizes, h0=value(batch, state),
                  c0=value(batch, hidden), weight_ih=weight(4 * hidden, input_size),
                  weight_hh=weight(4 * hidden, state), bias_ih=value(4 * hidden) if bias else None,
                  bias_hh=value(4 * hidden) if bias else None,
                  weight_hr=weight(proj, hidden) if proj else None)
    return _requiring_grad(sample, requires_grad)


def gru_layer_sample(steps=4, batch=5, input_size=7, hidden=30, bias=True, lengths=None, dtype=torch.float32, seed=0,
                     weight_scale=None, value_scale=0.5, batch_sizes=None, requires_grad=False):
    """Arguments of fused_lstm::gru_layer_forward but reverse and save_for_backward: input [N, C], batch_sizes
    [T], h0 [B, H], weight_ih [3H, C], weight_hh [3H, H], bias_ih and bias_hh [3H] or None. The options are
    lstm_layer_sample's."""
    generator = torch.Generator().manual_seed(seed)
    weight = _random(generator, dtype, weight_scale if weight_scale is not None else hidden ** -0.5)
    value = _random(generator, dtype, value_scale)
    batch_sizes = _layer_batch_sizes(steps, batch, lengths, batch_sizes)
    batch = int(batch_sizes[0])
    sample = dict(input=value(int(batch_sizes.sum()), input_size), batch_sizes=batch_sizes, h0=value(batch, hidden),
                  weight_ih=weight(3 * hidden, input_size), weight_hh=weight(3 * hidden, hidden),
                  bias_ih=value(3 * hidden) if bias else None, bias_hh=value(3 * hidden) if bias else None)
    return _requiring_grad(sample, requires_grad)


def cell_sample(kind, batch=5, input_size=7, hidden=30, bias=True, dtype=torch.float32, seed=None,
                requires_grad=False):
    """Arguments of fused_lstm::<kind>_cell_forward but save_for_backward (kind "lstm" or "gru"): input [B, C],
    h0 [B, H], c0 [B, H] (LSTM), weight_ih [G·H, C], weight_hh [G·H, H], bias_ih and bias_hh [G·H] or None."""
    gates = 4 if kind == "lstm" else 3
    generator = torch.Generator().manual_seed(batch * 10000 + input_size * 100 + hidden if seed is None else seed)

    def random(*shape, scale=1.0):
        value = (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype)
        return value.requires_grad_(requires_grad)

    sample = dict(input=random(batch, input_size), h0=random(batch, hidden, scale=0.5))
    if kind == "lstm":
        sample["c0"] = random(batch, hidden, scale=0.5)
    sample.update(weight_ih=random(gates * hidden, input_size, scale=0.4),
                  weight_hh=random(gates * hidden, hidden, scale=0.4),
                  bias_ih=random(gates * hidden, scale=0.3) if bias else None,
                  bias_hh=random(gates * hidden, scale=0.3) if bias else None)
    return sample


def cell_backward_arguments(kind, sample, forward, grads=None, **flags):
    """Arguments of fused_lstm::<kind>_cell_backward by schema name, for a forward that saved for backward on
    the sample: `forward` its outputs by name (call()'s), `grads` grad_h1 (and grad_c1), cotangents() by
    default; flags compute_grad_input / compute_grad_weights if given (else the op's defaults)."""
    sample = {name: value.detach() if torch.is_tensor(value) else value for name, value in sample.items()}
    grads = grads if grads is not None else cotangents(forward, ["h1", "c1"] if kind == "lstm" else ["h1"])
    if kind == "lstm":
        return dict(grad_h1=grads["grad_h1"], grad_c1=grads["grad_c1"], input=sample["input"], h0=sample["h0"],
                    c0=sample["c0"], weight_ih=sample["weight_ih"], weight_hh=sample["weight_hh"],
                    gates=forward["gates"], has_bias=sample["bias_ih"] is not None, **flags)
    return dict(grad_h1=grads["grad_h1"], input=sample["input"], h0=sample["h0"], weight_ih=sample["weight_ih"],
                weight_hh=sample["weight_hh"], gates=forward["gates"], candidate_hidden=forward["candidate_hidden"],
                has_bias=sample["bias_ih"] is not None, **flags)


def cell_forward_and_backward(ops, kind, sample):
    """Forward (saving and not) and backward of ops.<kind>_cell_* on the sample, with the cotangents of
    cotangents(); every output by name (inference_* for the forward that saves nothing)."""
    forward = call(getattr(ops, f"{kind}_cell_forward"), **sample, save_for_backward=True)
    backward = call(getattr(ops, f"{kind}_cell_backward"), **cell_backward_arguments(kind, sample, forward))
    inference = call(getattr(ops, f"{kind}_cell_forward"), **sample, save_for_backward=False)
    return {**forward, **backward, **{f"inference_{name}": value for name, value in inference.items()
                                      if name in ("h1", "c1")}}


def cell_reference(kind, sample):
    """h1 (and c1) and the gradients of the float64 reference cell for the cotangents of
    cell_forward_and_backward; the LSTM's grad_bias is the gradient of b_ih (and of b_hh alike)."""
    dtype = sample["input"].dtype
    sample = cast({k: v.detach() if torch.is_tensor(v) else v for k, v in sample.items()}, torch.float64)
    names = [name for name, value in sample.items() if value is not None]
    leaves = {name: sample[name].requires_grad_() for name in names}
    if kind == "lstm":
        outputs = dict(zip(["h1", "c1"], reference.lstm_cell(**leaves)))
    else:
        outputs = {"h1": reference.gru_cell(**leaves)}
    grads = cotangents(outputs, list(outputs), rounded_to=dtype)
    gradients = torch.autograd.grad(list(outputs.values()), list(leaves.values()),
                                    [grads[f"grad_{name}"] for name in outputs])
    result = {name: value.detach() for name, value in outputs.items()}
    result.update({f"grad_{name}": gradient for name, gradient in zip(leaves, gradients)})
    if kind == "lstm":
        result.pop("grad_bias_hh", None)
        if "grad_bias_ih" in result:
            result["grad_bias"] = result.pop("grad_bias_ih")
    return result


def cast(sample, dtype):
    """The sample with every floating-point tensor converted to dtype."""
    return {name: value.to(dtype) if torch.is_tensor(value) and value.is_floating_point() else value
            for name, value in sample.items()}


def to_device(sample, device):
    """The sample with every tensor but batch_sizes (which the ops read on the CPU, as PackedSequence keeps it)
    on `device`; leaves that required grad are leaves that require grad there."""
    return {name: value.detach().to(device).requires_grad_(value.requires_grad)
            if torch.is_tensor(value) and name != "batch_sizes" else value for name, value in sample.items()}


def _packet(op):
    return op.default if hasattr(op, "default") else op


def call(op, **arguments):
    """op(**arguments) with its outputs in a dict keyed by the schema's return names."""
    result = op(**arguments)
    result = result if isinstance(result, (tuple, list)) else (result,)
    return dict(zip((ret.name for ret in _packet(op)._schema.returns), result))


def in_schema_order(op, arguments):
    """The arguments (a dict by name) as a tuple in the op's schema order, for what takes positions
    (torch.library.opcheck's args). Only the schema's trailing arguments, which have defaults, may be left out."""
    names = [argument.name for argument in _packet(op)._schema.arguments]
    assert set(arguments) <= set(names), sorted(set(arguments) - set(names))
    assert set(names[:len(arguments)]) == set(arguments), f"only trailing arguments may be left out: {names}"
    return tuple(arguments[name] for name in names[:len(arguments)])


def cotangents(outputs, names, rounded_to=None, seed=7):
    """Random gradients of the named outputs (dL/d output), drawn in float64 and rounded to `rounded_to`
    (default: each output's dtype), in each output's dtype and on its device."""
    generator = torch.Generator().manual_seed(seed)
    return {f"grad_{name}": torch.randn(outputs[name].shape, generator=generator, dtype=torch.float64)
            .to(rounded_to or outputs[name].dtype).to(device=outputs[name].device, dtype=outputs[name].dtype)
            for name in names}


def lstm_backward_arguments(sample, forward, reverse, grads=None, **flags):
    """Arguments of fused_lstm::lstm_layer_backward by schema name, for a forward on the sample that saved for
    backward: `forward` its outputs by name (call()'s); `grads` grad_output, grad_h_n and grad_c_n, cotangents()
    by default; flags compute_grad_input / compute_grad_weights if given (else the op's defaults)."""
    sample = {name: value.detach() if torch.is_tensor(value) else value for name, value in sample.items()}
    grads = grads if grads is not None else cotangents(forward, ["output", "h_n", "c_n"])
    return dict(grad_output=grads["grad_output"], grad_h_n=grads["grad_h_n"], grad_c_n=grads["grad_c_n"],
                input=sample["input"], batch_sizes=sample["batch_sizes"], h0=sample["h0"],
                weight_ih=sample["weight_ih"], weight_hh=sample["weight_hh"], weight_hr=sample["weight_hr"],
                output=forward["output"], gates=forward["gates"], cell_prev=forward["cell_prev"],
                proj_input=forward["proj_input"], reverse=reverse, has_bias=sample["bias_ih"] is not None, **flags)


def gru_backward_arguments(sample, forward, reverse, grads=None, **flags):
    """As lstm_backward_arguments, for fused_lstm::gru_layer_backward (grads: grad_output and grad_h_n)."""
    sample = {name: value.detach() if torch.is_tensor(value) else value for name, value in sample.items()}
    grads = grads if grads is not None else cotangents(forward, ["output", "h_n"])
    return dict(grad_output=grads["grad_output"], grad_h_n=grads["grad_h_n"], input=sample["input"],
                batch_sizes=sample["batch_sizes"], h0=sample["h0"], weight_ih=sample["weight_ih"],
                weight_hh=sample["weight_hh"], output=forward["output"], gates=forward["gates"],
                candidate_hidden=forward["candidate_hidden"], reverse=reverse,
                has_bias=sample["bias_ih"] is not None, **flags)


# compute_grad_input and compute_grad_weights of the backward ops: every way of skipping some of the gradients.
GRADIENT_SKIPS = [dict(compute_grad_input=False, compute_grad_weights=True),
                  dict(compute_grad_input=True, compute_grad_weights=False),
                  dict(compute_grad_input=False, compute_grad_weights=False)]


def is_computed(name, flags):
    """Whether a backward op computes its output `name` under `flags` (compute_grad_input, compute_grad_weights):
    the weight gradients only with compute_grad_weights, dL/dx only with compute_grad_input, the states' always."""
    if name.startswith(("grad_weight", "grad_bias")):
        return flags["compute_grad_weights"]
    return flags["compute_grad_input"] or name != "grad_input"


def paths(ops, sample):
    """The (forward, backward) paths ops.lstm_layer_* (a torch.ops namespace) take for an LSTM layer sample: the
    layer_paths op (e.g. "whole recurrence (persistent kernel)", "per step")."""
    return ops.layer_paths("lstm_layer", sample["input"], sample["batch_sizes"], sample["h0"], sample["weight_ih"],
                           sample["weight_hh"], sample["weight_hr"])


def lstm_forward_and_backward(ops, sample, reverse, compute_grad_input=True, compute_grad_weights=True):
    """Forward (saving) then backward of ops.lstm_layer_* (a torch.ops namespace) on the sample, with the
    cotangents of cotangents(); returns every output of both ops by name."""
    forward = call(ops.lstm_layer_forward, **sample, reverse=reverse, save_for_backward=True)
    backward = call(ops.lstm_layer_backward, **lstm_backward_arguments(
        sample, forward, reverse, compute_grad_input=compute_grad_input, compute_grad_weights=compute_grad_weights))
    return {**forward, **backward}


def gru_forward_and_backward(ops, sample, reverse, compute_grad_input=True, compute_grad_weights=True):
    """As lstm_forward_and_backward, for ops.gru_layer_*."""
    forward = call(ops.gru_layer_forward, **sample, reverse=reverse, save_for_backward=True)
    backward = call(ops.gru_layer_backward, **gru_backward_arguments(
        sample, forward, reverse, compute_grad_input=compute_grad_input, compute_grad_weights=compute_grad_weights))
    return {**forward, **backward}


def _reference_with_gradients(layer, sample, reverse, output_names, differentiable):
    dtype = sample["input"].dtype  # the cotangents are rounded as those of the sample's own dtype
    sample = cast(sample, torch.float64)
    leaves = {name: sample[name].detach().requires_grad_() for name in differentiable if sample[name] is not None}
    outputs = dict(zip(output_names, layer(**{**sample, **leaves}, reverse=reverse)))
    grads = cotangents(outputs, output_names, rounded_to=dtype)
    gradients = torch.autograd.grad([outputs[name] for name in output_names], list(leaves.values()),
                                    [grads[f"grad_{name}"] for name in output_names])
    result = {name: value.detach() for name, value in outputs.items()}
    result.update({f"grad_{name}": gradient for name, gradient in zip(leaves, gradients)})
    return result


def lstm_reference(sample, reverse):
    """output, h_n, c_n and the gradients grad_<argument> of the float64 reference on the sample (in float64)
    for the same cotangents as lstm_forward_and_backward's: what that returns (grad_input, ..., grad_bias)."""
    result = _reference_with_gradients(reference.lstm_layer, sample, reverse, ["output", "h_n", "c_n"],
                                       ["input", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                        "weight_hr"])
    # The op's grad_bias is the gradient of b_ih and of b_hh alike.
    result.pop("grad_bias_hh", None)
    if "grad_bias_ih" in result:
        result["grad_bias"] = result.pop("grad_bias_ih")
    return result


def gru_reference(sample, reverse):
    """As lstm_reference, for the GRU."""
    return _reference_with_gradients(reference.gru_layer, sample, reverse, ["output", "h_n"],
                                     ["input", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"])


# ---------------------------------------------------------------------------------------------------
# Modules and their states.


def module_pair(kind, input_size, hidden_size, device="cpu", dtype=torch.float32, **kwargs):
    """torch.nn's <kind> ("LSTM", "GRU", "LSTMCell", "GRUCell") and fused_lstm's with the same random weights:
    (torch's, ours)."""
    import fused_lstm

    theirs = getattr(torch.nn, kind)(input_size, hidden_size, device=device, dtype=dtype, **kwargs)
    ours = getattr(fused_lstm, kind)(input_size, hidden_size, device=device, dtype=dtype, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def random_states(module, batch, device="cpu", dtype=torch.float32, requires_grad=False):
    """Random initial states of a layer module (torch's or ours): (h0, c0) for an LSTM, (h0,) for a GRU."""
    rows = module.num_layers * (2 if module.bidirectional else 1)
    sizes = [module.proj_size or module.hidden_size] + ([module.hidden_size] if module.mode == "LSTM" else [])
    return tuple(torch.randn(rows, batch, size, device=device, dtype=dtype).requires_grad_(requires_grad)
                 for size in sizes)
