"""ONNX export: layer functions that become standard ONNX ``LSTM`` / ``GRU`` nodes.

While ``torch.onnx.export`` captures a model, the modules run these layer functions instead of the fused
ops (``call_rules.layer_impl``), so the exported graph holds one ONNX ``LSTM`` or ``GRU`` node per layer
and direction, which any ONNX runtime can run, instead of ``fused_lstm::`` ops that none can. Both
exporters are served:

- ``dynamo=True`` (torch.export): the node comes from ``torch.onnx.ops.symbolic_multi_out``;
- ``dynamo=False`` (TorchScript tracing): from the ``symbolic`` method of an autograd.Function, which
  the TorchScript exporter calls in place of the traced function.

Outside an export the functions compute what the ONNX node computes (the operator's equations, written
with plain tensor operations), so the layout conversion can be checked against ``reference`` eagerly.

Layouts. ONNX orders the LSTM gates i, o, f, c (PyTorch: i, f, g, o) and the GRU gates z, r, h (PyTorch:
r, z, n); its bias input B is [W_b; R_b] (PyTorch's b_ih and b_hh, reordered alike); PyTorch's GRU is
ONNX's ``linear_before_reset=1``. ONNX has no LSTM projection (``proj_size``), and packed sequences
would need ``sequence_lens``, which these functions do not emit: those raise at export time (see
``check_exportable``).
"""

import torch
from torch.nn.utils.rnn import PackedSequence

# Row blocks of PyTorch's stacked gate weights, in ONNX's gate order.
_LSTM_GATES_IN_ONNX_ORDER = (0, 3, 1, 2)  # PyTorch i, f, g, o -> ONNX i, o, f, c
_GRU_GATES_IN_ONNX_ORDER = (1, 0, 2)  # PyTorch r, z, n -> ONNX z, r, h
# The element types ONNX's LSTM and GRU accept (their type constraint T).
_ONNX_RNN_DTYPES = (torch.float16, torch.float32, torch.float64)


def check_exportable(module, input):
    """Raises where ONNX's LSTM / GRU cannot express what `module` would compute on `input`, so that an
    export fails instead of producing a wrong model."""
    name = type(module).__name__
    if getattr(module, "proj_size", 0) > 0:
        raise RuntimeError(f"fused_lstm.{name} with proj_size={module.proj_size} cannot be exported to ONNX: the "
                           "ONNX LSTM operator has no output projection")
    if isinstance(input, PackedSequence):
        raise RuntimeError(f"fused_lstm.{name}: exporting a PackedSequence input to ONNX is not supported (it would "
                           "need ONNX sequence_lens); export with a padded tensor input instead")
    # torch's TorchScript exporter refuses nn.LSTM dropout in training mode too; a Dropout node in the
    # graph would make the exported model random.
    if getattr(module, "dropout", 0) > 0 and module.training and module.num_layers > 1:
        raise RuntimeError(f"fused_lstm.{name}: cannot export dropout={module.dropout} in training mode to ONNX; "
                           "call model.eval() before torch.onnx.export")


def refuse_fused_op_in_export(op_name):
    """Called by the fused ops' fake kernels. torch.onnx.export(dynamo=True) retries a failed capture with
    torch.export's strict mode, where dynamo reads torch.onnx.is_in_onnx_export() as False, so the modules
    run the fused ops; failing that capture here (fake kernels run outside dynamo, where the flag is true)
    lets the exporter report the first capture's error (e.g. check_exportable's) instead of a missing ONNX
    function for fused_lstm::."""
    if torch.onnx.is_in_onnx_export():
        raise RuntimeError(f"fused_lstm::{op_name} cannot be exported to ONNX; the modules emit ONNX LSTM/GRU nodes "
                           "instead when torch.export runs in non-strict mode (torch.onnx.export's first attempt)")


def _check_dtype(input):
    if input.dtype not in _ONNX_RNN_DTYPES:
        raise RuntimeError(f"fused_lstm: ONNX LSTM and GRU operators do not accept {input.dtype}; export in float16, "
                           "float32 or float64")


def _padded_steps(input, batch_sizes, h0):
    """The rows [T·B, C] of padded input as ONNX's X [T, B, C]."""
    batch = h0.shape[0]
    # Packed rows of unequal lengths would need sequence_lens. Under TorchScript tracing sizes are traced
    # tensors (a check would be frozen into the trace); the modules refuse PackedSequence input before.
    if not torch.jit.is_tracing() and input.shape[0] != batch_sizes.shape[0] * batch:
        raise RuntimeError("fused_lstm.onnx_export: the layer functions take padded input (every batch size B); "
                           "packed sequences of unequal lengths are not supported")
    return input.reshape(-1, batch, input.shape[-1])


def _gates_in_onnx_order(tensor, order):
    """Reorders the gate blocks along dim 0 of a stacked weight [G·H, K] or bias [G·H]."""
    # Slices rather than chunk: the exporters fold Slice + Concat of a parameter into one initializer,
    # while the dynamo exporter's optimizer leaves a multi-output Split in the graph.
    size = tensor.shape[0] // len(order)
    return torch.cat([tensor[index * size:(index + 1) * size] for index in order], dim=0)


def _onnx_weights(order, weight_ih, weight_hh, bias_ih, bias_hh):
    """ONNX's W [1, G·H, C], R [1, G·H, H] and B [1, 2·G·H] (or None) from PyTorch's weights."""
    W = _gates_in_onnx_order(weight_ih, order).unsqueeze(0)
    R = _gates_in_onnx_order(weight_hh, order).unsqueeze(0)
    if bias_ih is None:
        return W, R, None
    B = torch.cat([_gates_in_onnx_order(bias_ih, order), _gates_in_onnx_order(bias_hh, order)]).unsqueeze(0)
    return W, R, B


def _torchscript_optional(g, value):
    # An absent optional input, as torch's own RNN symbolics write it.
    if value is not None:
        return value
    absent = g.op("prim::Constant")
    absent.setType(torch._C.OptionalType.ofTensor())
    return absent


# ---------------------------------------------------------------------------------------------------
# The ONNX operators' equations in PyTorch, for one direction (https://onnx.ai/onnx/operators/onnx__LSTM.html,
# onnx__GRU.html; default activations, no peepholes, no clip, no sequence_lens). X: [T, B, C]; W, R, B and
# the states in ONNX layout with num_directions = 1. Outputs Y [T, 1, B, H] and the final states [1, B, H].


def _onnx_lstm_equations(X, W, R, B, initial_h, initial_c, reverse):
    Wi, Wo, Wf, Wc = W[0].chunk(4)
    Ri, Ro, Rf, Rc = R[0].chunk(4)
    if B is None:
        B = X.new_zeros(1, 8 * R.shape[-1])
    Wbi, Wbo, Wbf, Wbc, Rbi, Rbo, Rbf, Rbc = B[0].chunk(8)
    H, C = initial_h[0], initial_c[0]
    Y = [None] * X.shape[0]
    for t in (reversed(range(X.shape[0])) if reverse else range(X.shape[0])):
        Xt = X[t]
        i = torch.sigmoid(Xt @ Wi.t() + H @ Ri.t() + Wbi + Rbi)
        f = torch.sigmoid(Xt @ Wf.t() + H @ Rf.t() + Wbf + Rbf)
        c = torch.tanh(Xt @ Wc.t() + H @ Rc.t() + Wbc + Rbc)
        C = f * C + i * c
        o = torch.sigmoid(Xt @ Wo.t() + H @ Ro.t() + Wbo + Rbo)
        H = o * torch.tanh(C)
        Y[t] = H
    return torch.stack(Y).unsqueeze(1), H.unsqueeze(0), C.unsqueeze(0)


def _onnx_gru_equations(X, W, R, B, initial_h, reverse):
    Wz, Wr, Wh = W[0].chunk(3)
    Rz, Rr, Rh = R[0].chunk(3)
    if B is None:
        B = X.new_zeros(1, 6 * R.shape[-1])
    Wbz, Wbr, Wbh, Rbz, Rbr, Rbh = B[0].chunk(6)
    H = initial_h[0]
    Y = [None] * X.shape[0]
    for t in (reversed(range(X.shape[0])) if reverse else range(X.shape[0])):
        Xt = X[t]
        z = torch.sigmoid(Xt @ Wz.t() + H @ Rz.t() + Wbz + Rbz)
        r = torch.sigmoid(Xt @ Wr.t() + H @ Rr.t() + Wbr + Rbr)
        h = torch.tanh(Xt @ Wh.t() + r * (H @ Rh.t() + Rbh) + Wbh)  # linear_before_reset = 1
        H = (1 - z) * h + z * H
        Y[t] = H
    return torch.stack(Y).unsqueeze(1), H.unsqueeze(0)


# ---------------------------------------------------------------------------------------------------
# The TorchScript exporter replaces a traced autograd.Function by what its `symbolic` returns; `forward`
# gives the trace its values.


class _TorchScriptLSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X, W, R, B, initial_h, initial_c, reverse):
        return _onnx_lstm_equations(X, W, R, B, initial_h, initial_c, reverse)

    @staticmethod
    def symbolic(g, X, W, R, B, initial_h, initial_c, reverse):
        # R comes from a parameter, so its traced type has static sizes: [1, 4H, H].
        return g.op("LSTM", X, W, R, _torchscript_optional(g, B), _torchscript_optional(g, None), initial_h,
                    initial_c, hidden_size_i=R.type().sizes()[-1], direction_s="reverse" if reverse else "forward",
                    outputs=3)


class _TorchScriptGRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X, W, R, B, initial_h, reverse):
        return _onnx_gru_equations(X, W, R, B, initial_h, reverse)

    @staticmethod
    def symbolic(g, X, W, R, B, initial_h, reverse):
        return g.op("GRU", X, W, R, _torchscript_optional(g, B), _torchscript_optional(g, None), initial_h,
                    hidden_size_i=R.type().sizes()[-1], linear_before_reset_i=1,
                    direction_s="reverse" if reverse else "forward", outputs=2)


def _onnx_rnn(op_type, X, W, R, B, initial_states, reverse):
    """One ONNX LSTM / GRU node for one direction (or, outside an export, what it computes).
    Returns (Y [T, 1, B, H], *final states [1, B, H])."""
    if torch.jit.is_tracing():  # the TorchScript exporter
        function = _TorchScriptLSTM if op_type == "LSTM" else _TorchScriptGRU
        return function.apply(X, W, R, B, *initial_states, reverse)
    if torch.onnx.is_in_onnx_export():  # the torch.export-based exporter
        steps, batch = X.shape[0], X.shape[1]
        hidden = R.shape[-1]
        attributes = {"hidden_size": hidden, "direction": "reverse" if reverse else "forward"}
        if op_type == "GRU":
            attributes["linear_before_reset"] = 1
        return tuple(torch.onnx.ops.symbolic_multi_out(
            op_type, [X, W, R, B, None, *initial_states], attributes,
            dtypes=[X.dtype] * (1 + len(initial_states)),
            shapes=[[steps, 1, batch, hidden]] + [[1, batch, hidden]] * len(initial_states)))
    if op_type == "LSTM":
        return _onnx_lstm_equations(X, W, R, B, *initial_states, reverse)
    return _onnx_gru_equations(X, W, R, B, *initial_states, reverse)


def lstm_layer(input, batch_sizes, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, weight_hr=None,
               reverse=False):
    """One LSTM layer in one direction as one ONNX ``LSTM`` node, for padded (not packed) input.

    input: [N, C] rows of T steps of B rows each (N = T·B); batch_sizes: [T] (all B; unused); h0, c0: [B, H];
    weight_ih: [4H, C]; weight_hh: [4H, H]; bias_ih, bias_hh: [4H] or both None; weight_hr must be None
    (ONNX has no projection). Returns (output [N, H], h_n [B, H], c_n [B, H]).
    """
    if weight_hr is not None:
        raise RuntimeError("fused_lstm: an LSTM with a projection (proj_size > 0) cannot be exported to ONNX: the "
                           "ONNX LSTM operator has no output projection")
    _check_dtype(input)
    W, R, B = _onnx_weights(_LSTM_GATES_IN_ONNX_ORDER, weight_ih, weight_hh, bias_ih, bias_hh)
    X = _padded_steps(input, batch_sizes, h0)
    Y, Y_h, Y_c = _onnx_rnn("LSTM", X, W, R, B, (h0.unsqueeze(0), c0.unsqueeze(0)), reverse)
    return Y.reshape(-1, Y.shape[-1]), Y_h.squeeze(0), Y_c.squeeze(0)


def gru_layer(input, batch_sizes, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, reverse=False):
    """One GRU layer in one direction as one ONNX ``GRU`` node (``linear_before_reset=1``), for padded input.

    input: [N, C] rows of T steps of B rows each; batch_sizes: [T] (unused); h0: [B, H]; weight_ih: [3H, C];
    weight_hh: [3H, H]; bias_ih, bias_hh: [3H] or both None. Returns (output [N, H], h_n [B, H]).
    """
    _check_dtype(input)
    W, R, B = _onnx_weights(_GRU_GATES_IN_ONNX_ORDER, weight_ih, weight_hh, bias_ih, bias_hh)
    X = _padded_steps(input, batch_sizes, h0)
    Y, Y_h = _onnx_rnn("GRU", X, W, R, B, (h0.unsqueeze(0),), reverse)
    return Y.reshape(-1, Y.shape[-1]), Y_h.squeeze(0)
