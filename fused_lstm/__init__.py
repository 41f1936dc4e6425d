"""fused_lstm: the fastest and most trustworthy LSTM for PyTorch.

``fused_lstm.LSTM``, ``LSTMCell``, ``GRU`` and ``GRUCell`` replace their ``torch.nn`` namesakes; their
recurrences run on the fused C++/CUDA ops in ``torch.ops.fused_lstm``.
"""

from . import ops, reference, stack
from .modules import GRU, LSTM, GRUCell, LSTMCell, run

__all__ = ["LSTM", "LSTMCell", "GRU", "GRUCell", "run", "ops", "reference", "stack"]
