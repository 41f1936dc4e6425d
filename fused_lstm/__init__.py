"""fused_lstm: the fastest and most trustworthy LSTM for PyTorch.

``fused_lstm.LSTM`` and ``fused_lstm.LSTMCell`` replace ``torch.nn.LSTM`` and ``torch.nn.LSTMCell``;
their recurrences run on the fused C++/CUDA ops in ``torch.ops.fused_lstm``.
"""

from . import ops, reference
from .modules import LSTM, LSTMCell

__all__ = ["LSTM", "LSTMCell", "ops", "reference"]
