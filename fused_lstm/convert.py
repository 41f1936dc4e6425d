"""convert(model) puts fused_lstm's modules in place of every torch.nn.LSTM, GRU, LSTMCell and GRUCell inside a
model, and revert(model) puts torch's back: adoption without rewriting the model.

The new module takes over the old one's Parameter objects (an optimizer built before the call keeps updating the
weights the model uses), so device, dtype and values come along; so do the training flag and every hook (the same
hook dictionaries, so that handles taken before still remove them). A module used in several places stays one
shared module. What cannot be carried over is left alone and listed (a subclass with a forward of its own: the
model may rely on it) or refused before anything changes (parametrizations, and parameters or buffers that
torch's module does not have, such as the old weight_norm's and spectral_norm's).
"""

import copy
import dataclasses
import warnings
from typing import Dict, List, Tuple

from torch import nn

from .modules import GRU, LSTM, GRUCell, LSTMCell

# torch.nn's module -> fused_lstm's, and back.
FUSED = {nn.LSTM: LSTM, nn.GRU: GRU, nn.LSTMCell: LSTMCell, nn.GRUCell: GRUCell}
TORCH = {fused: original for original, fused in FUSED.items()}

# The constructor arguments of each kind, read from the module being replaced.
_LAYER_ARGUMENTS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")
_CELL_ARGUMENTS = ("input_size", "hidden_size", "bias")

# Where nn.Module keeps hooks: shared with the new module, so handles taken before the call still work.
_HOOK_DICTIONARIES = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                      "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
                      "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
                      "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


@dataclasses.dataclass
class Conversion:
    """What convert() or revert() did. model: the converted model (the same object, unless the model itself was
    one of the modules replaced, or inplace=False); replaced: the qualified names of the modules replaced, with
    the old and new class names; left_alone: qualified name -> why it was not replaced."""

    model: nn.Module
    replaced: Dict[str, Tuple[str, str]]
    left_alone: Dict[str, str]


def convert(model, *, inplace=True):
    """Replaces every torch.nn.LSTM, GRU, LSTMCell and GRUCell in `model` (the model itself included, at any
    depth, in ModuleList, ModuleDict and Sequential too) by fused_lstm's module of the same configuration, holding
    the same Parameter objects. inplace=False converts a deep copy. Returns a Conversion; raises ValueError,
    changing nothing, where a module cannot be carried over."""
    return _swap(model, FUSED, "fused_lstm.convert", inplace)


def revert(model, *, inplace=True):
    """The inverse of convert(): torch.nn's modules in place of fused_lstm's, with the same Parameter objects."""
    return _swap(model, TORCH, "fused_lstm.revert", inplace)


def _qualified(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _target_class(module, mapping):
    """The class to put in place of `module` (None: not one of ours to replace), and why it is left alone."""
    for original, replacement in mapping.items():
        if type(module) is original:
            return replacement, None
        if isinstance(module, original):
            if type(module).forward is not original.forward:
                return None, f"{type(module).__name__} subclasses {original.__name__} with a forward of its own"
            return replacement, None
    return None, None


def _expected_tensors(module, original_class):
    """The parameter names a module of `original_class` with this configuration has."""
    if original_class in (nn.LSTMCell, nn.GRUCell, LSTMCell, GRUCell):
        return {"weight_ih", "weight_hh"} | ({"bias_ih", "bias_hh"} if module.bias else set())
    return set(module._flat_weights_names)


def _check_carried_over(name, module, what):
    from torch.nn.utils import parametrize

    if parametrize.is_parametrized(module):
        raise ValueError(f"{what}: {name or 'the model'} ({type(module).__name__}) has parametrizations on "
                         f"{', '.join(module.parametrizations.keys())}; they cannot be carried over to another "
                         "module without new parameters. Remove them first "
                         "(torch.nn.utils.parametrize.remove_parametrizations), convert, then register them again")
    expected = _expected_tensors(module, type(module))
    present = {key for key, value in module._parameters.items() if value is not None}
    extra = sorted((present - expected) | {key for key, value in module._buffers.items() if value is not None})
    if extra or present != expected:
        raise ValueError(f"{what}: {name or 'the model'} ({type(module).__name__}) has parameters or buffers its "
                         f"class does not define ({', '.join(extra) or 'missing ' + ', '.join(expected - present)}),"
                         " e.g. from torch.nn.utils.weight_norm or spectral_norm; remove them first")


def _replacement(module, new_class):
    """A module of new_class configured like `module`, holding its Parameter objects, training flag and hooks."""
    is_cell = new_class in (LSTMCell, GRUCell, nn.LSTMCell, nn.GRUCell)
    arguments = {key: getattr(module, key) for key in (_CELL_ARGUMENTS if is_cell else _LAYER_ARGUMENTS)}
    if new_class in (LSTM, nn.LSTM):
        arguments["proj_size"] = module.proj_size
    with warnings.catch_warnings():  # the module being replaced gave its constructor warnings already
        warnings.simplefilter("ignore")
        new = new_class(**arguments, device="meta")
    for key, parameter in module._parameters.items():
        if parameter is not None:
            setattr(new, key, parameter)
    new.train(module.training)
    for dictionary in _HOOK_DICTIONARIES:
        if hasattr(module, dictionary):
            setattr(new, dictionary, getattr(module, dictionary))
    return new


def _swap(model, mapping, what, inplace):
    if not inplace:
        model = copy.deepcopy(model)
    # First every check, so that a refusal changes nothing; then the replacements.
    plan: List[Tuple[nn.Module, str, str, nn.Module, type]] = []  # (parent, child name, qualified, module, class)
    left_alone: Dict[str, str] = {}
    seen = set()

    def visit(parent, name, qualified, module):
        new_class, reason = _target_class(module, mapping)
        if reason:
            left_alone[qualified] = reason
        if new_class is not None:
            if id(module) not in seen:
                _check_carried_over(qualified, module, what)
            seen.add(id(module))
            plan.append((parent, name, qualified, module, new_class))
            return
        if id(module) in seen:
            return
        seen.add(id(module))
        for child_name, child in module._modules.items():
            if child is not None:
                visit(module, child_name, _qualified(qualified, child_name), child)

    visit(None, "", "", model)
    replacements = {}  # id(old module) -> new module: a shared module stays shared
    replaced = {}
    for parent, name, qualified, module, new_class in plan:
        if id(module) not in replacements:
            replacements[id(module)] = _replacement(module, new_class)
        new = replacements[id(module)]
        replaced[qualified or "(the model)"] = (type(module).__name__, type(new).__name__)
        if parent is None:
            model = new
        else:
            parent._modules[name] = new
    return Conversion(model=model, replaced=replaced, left_alone=left_alone)
