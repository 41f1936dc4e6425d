"""The fused ops' descriptions (csrc/op_descriptions.h, the one place they are written), read once from the
extension: for each forward op its arguments and results by name, which arguments take gradients, what the
backward op reads, and how the backward op's results map to gradients. The fake kernels, the autograd and the
vmap rules take every name from here."""

import functools
from dataclasses import dataclass

import torch

from . import _C  # loading the library registers torch.ops.fused_lstm.*

OPS = torch.ops.fused_lstm


def _tensor_argument(argument):
    return argument.type.isSubtypeOf(torch._C.OptionalType.ofTensor())


@dataclass(frozen=True)
class OpDescription:
    kind: str                    # lstm_layer, gru_layer, lstm_cell, gru_cell: the ops <kind>_forward, <kind>_backward
    differentiable: tuple        # the forward's arguments that take gradients, in schema order
    weights: tuple               # those whose gradients compute_grad_weights asks for
    outputs: tuple               # the forward's differentiable results, the leading ones
    saved_outputs: tuple         # its other results, which the backward op reads
    cotangent_like: dict         # output -> the saved tensor its zero cotangent is shaped like (where not itself)
    gradient_aliases: dict       # backward result -> the arguments it is the gradient of (where not grad_<argument>)

    # Read from the registered schemas:
    arguments: tuple             # the forward's argument names, in schema order
    returns: tuple               # its result names
    tensor_arguments: tuple      # its Tensor and Tensor? arguments
    backward_arguments: tuple    # the backward op's argument names
    backward_returns: tuple      # its result names

    @property
    def op(self):
        return f"{self.kind}_forward"

    @property
    def backward_op(self):
        return f"{self.kind}_backward"

    @functools.cached_property
    def saved(self):
        """What the forward saves for its backward, by name: its tensor arguments, its first output, the rest."""
        return (*self.tensor_arguments, self.outputs[0], *self.saved_outputs)

    @functools.cached_property
    def bias(self):
        """The argument whose presence the backward op's has_bias says."""
        return next(name for name in self.arguments if name.startswith("bias"))

    def gradient_targets(self, result):
        """The forward arguments the backward op's result `result` is the gradient of."""
        return self.gradient_aliases.get(result, (result[len("grad_"):],))


def _read():
    descriptions = {}
    for entry in _C.op_descriptions():
        aliases = {}
        for result, argument in entry["gradient_aliases"]:
            aliases[result] = (*aliases.get(result, ()), argument)
        forward = getattr(OPS, f"{entry['kind']}_forward").default._schema
        backward = getattr(OPS, f"{entry['kind']}_backward").default._schema
        description = OpDescription(
            entry["kind"], tuple(entry["differentiable"]), tuple(entry["weights"]), tuple(entry["outputs"]),
            tuple(entry["saved_outputs"]), dict(entry["cotangent_like"]), aliases,
            tuple(argument.name for argument in forward.arguments), tuple(result.name for result in forward.returns),
            tuple(argument.name for argument in forward.arguments if _tensor_argument(argument)),
            tuple(argument.name for argument in backward.arguments),
            tuple(result.name for result in backward.returns))
        descriptions[description.op] = description
    return descriptions


# forward op name -> its description
DESCRIPTIONS = _read()
