"""fused_lstm: fused LSTM and GRU kernels for PyTorch, as drop-in modules.

``fused_lstm.LSTM``, ``LSTMCell``, ``GRU`` and ``GRUCell`` replace their ``torch.nn`` namesakes; their
recurrences run on the fused C++/CUDA ops in ``torch.ops.fused_lstm``. ``options`` sets the switches that
choose code paths (csrc/options.h), ``recording_paths`` shows which path each call takes,
``empty_cache`` frees the CPU memory kept for reuse. ``convert(model)`` puts the fused modules in place of
torch.nn's inside an existing model (``revert`` puts torch's back).
"""

from . import ops, reference, settings, stack
from .convert import convert, revert
from .modules import GRU, LSTM, GRUCell, LSTMCell, run
from .settings import empty_cache, get_option, options, recording_paths, set_option

__all__ = ["LSTM", "LSTMCell", "GRU", "GRUCell", "run", "ops", "reference", "settings", "stack", "options",
           "get_option", "set_option", "recording_paths", "empty_cache", "convert", "revert"]
