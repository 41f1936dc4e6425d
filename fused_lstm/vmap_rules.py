"""vmap rules of the fused ops: the vmapped dimension V is folded into the batch, so one call serves every vmapped
sample: per-sequence tensors [V, B, X] become [B·V, X] (sample v of sequence b is row b·V + v), and time-major
packed rows [V, N, X] become [N·V, X] with every batch size times V, which keeps each step's rows together. Where
weights are vmapped too (or per-sample weight gradients are asked for), the op runs once per sample instead."""

import torch

from .descriptions import OPS


def _schema_arguments(name):
    return [argument.name for argument in getattr(OPS, name).default._schema.arguments]


ROWS, BATCH, SHARED, PLAIN = "rows", "batch", "shared", "plain"  # how each argument and output folds


def _fold(tensor, kind, in_dim, size):
    if kind in (PLAIN, SHARED) or tensor is None or (tensor.numel() == 0 and in_dim is None):
        return tensor
    if in_dim is None:
        tensor = tensor.unsqueeze(0).expand(size, *tensor.shape)
    else:
        tensor = tensor.movedim(in_dim, 0)
    if tensor.shape[1:].numel() == 0:  # an empty placeholder (nothing saved, no projection)
        return tensor.new_empty(0)
    return tensor.transpose(0, 1).reshape(-1, *tensor.shape[2:])


def _unfold(tensor, size):
    if tensor.numel() == 0:
        return tensor, None
    return tensor.view(-1, size, *tensor.shape[1:]), 1


def _loop(op, size, in_dims, args):
    results = []
    for sample in range(size):
        results.append(op(*[arg if dim is None else arg.select(dim, sample) for arg, dim in zip(args, in_dims)]))
    outputs = tuple(torch.stack(outputs) for outputs in zip(*results))
    return outputs, (0,) * len(outputs)


def _register_vmap(name, argument_kinds, folds=lambda arguments: True):
    """`argument_kinds`: ROWS, BATCH, SHARED or PLAIN per argument in schema order (batch_sizes is PLAIN and
    scaled by V). `folds(arguments)`: whether this call may fold (e.g. not when per-sample weight gradients are
    wanted), from the arguments by name."""
    op = getattr(OPS, name)
    schema_arguments = op.default._schema.arguments
    names = _schema_arguments(name)

    def rule(info, in_dims, *args):
        size = info.batch_size
        # The dispatcher leaves out trailing arguments that equal their defaults.
        arguments = {argument.name: argument.default_value for argument in schema_arguments[len(args):]}
        arguments.update(zip(names, args))
        shared_batched = any(dim is not None for dim, kind in zip(in_dims, argument_kinds) if kind in (SHARED, PLAIN))
        if shared_batched or not folds(arguments):
            return _loop(op, size, in_dims, args)
        folded = [_fold(arg, kind, dim, size) for arg, kind, dim in zip(args, argument_kinds, in_dims)]
        if "batch_sizes" in names:
            index = names.index("batch_sizes")
            folded[index] = folded[index] * size
        outputs, out_dims = zip(*(_unfold(output, size) for output in op(*folded)))
        return tuple(outputs), tuple(out_dims)

    torch.library.register_vmap(f"fused_lstm::{name}", rule)




def _kinds(name, rows=(), batch=(), shared=()):
    kinds = []
    for argument in _schema_arguments(name):
        kinds.append(ROWS if argument in rows else BATCH if argument in batch else SHARED if argument in shared
                     else PLAIN)
    return kinds


_LAYER_SHARED = ("weight_ih", "weight_hh", "weight_hr", "bias_ih", "bias_hh")


def _no_weight_gradients(arguments):
    return not arguments["compute_grad_weights"]


_register_vmap("lstm_layer_forward", _kinds("lstm_layer_forward", rows=("input",), batch=("h0", "c0"),
                                            shared=_LAYER_SHARED))
_register_vmap("lstm_layer_backward", _kinds("lstm_layer_backward",
                                             rows=("grad_output", "input", "output", "gates", "cell_prev",
                                                   "proj_input"),
                                             batch=("grad_h_n", "grad_c_n", "h0"), shared=_LAYER_SHARED),
               _no_weight_gradients)
_register_vmap("gru_layer_forward", _kinds("gru_layer_forward", rows=("input",), batch=("h0",), shared=_LAYER_SHARED))
_register_vmap("gru_layer_backward", _kinds("gru_layer_backward",
                                            rows=("grad_output", "input", "output", "gates", "candidate_hidden"),
                                            batch=("grad_h_n", "h0"), shared=_LAYER_SHARED), _no_weight_gradients)
_register_vmap("lstm_cell_forward", _kinds("lstm_cell_forward", batch=("input", "h0", "c0"), shared=_LAYER_SHARED))
_register_vmap("lstm_cell_backward", _kinds("lstm_cell_backward",
                                            batch=("grad_h1", "grad_c1", "input", "h0", "c0", "gates"),
                                            shared=_LAYER_SHARED), _no_weight_gradients)
_register_vmap("gru_cell_forward", _kinds("gru_cell_forward", batch=("input", "h0"), shared=_LAYER_SHARED))
_register_vmap("gru_cell_backward", _kinds("gru_cell_backward",
                                           batch=("grad_h1", "input", "h0", "gates", "candidate_hidden"),
                                           shared=_LAYER_SHARED), _no_weight_gradients)

