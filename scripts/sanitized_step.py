"""A short forward + backward through every CUDA kernel variant, for compute-sanitizer (scripts/gpu_check.sh):
LSTM and GRU, each dtype, the vector path (H = 64) and the scalar path (H = 30), a projection, packed rows,
inference, the cells; then the persistent kernel (option cuda_persistent on, padded input): float32 with
H = 30 and 64, bfloat16 with B = 5."""


import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm

torch.manual_seed(0)
for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
    for kind, hidden, proj in (("LSTM", 64, 0), ("LSTM", 64, 16), ("LSTM", 30, 0), ("GRU", 64, 0), ("GRU", 30, 0)):
        extra = dict(proj_size=proj) if proj else {}
        module = getattr(fused_lstm, kind)(24, hidden, num_layers=2, bidirectional=True, device="cuda",
                                           dtype=dtype, **extra)
        x = torch.randn(7, 5, 24, device="cuda", dtype=dtype, requires_grad=True)
        output, _ = module(pack_padded_sequence(x, [7, 6, 6, 3, 1]))
        torch.autograd.grad(output.data, [x, *module.parameters()], torch.randn_like(output.data))
        with torch.no_grad():
            module(x)
        cell = getattr(fused_lstm, kind + "Cell")(24, hidden, device="cuda", dtype=dtype)
        h_1 = cell(x[0])
        h_1 = h_1[0] if isinstance(h_1, tuple) else h_1
        torch.autograd.grad(h_1, [x, *cell.parameters()], torch.randn_like(h_1))
print("per-step kernels: forward + backward of every variant done", flush=True)

fused_lstm.set_option("cuda_persistent", "1")
for dtype, batch, hidden in ((torch.float32, 4, 30), (torch.float32, 4, 64), (torch.bfloat16, 5, 64)):
    module = fused_lstm.LSTM(16, hidden, device="cuda", dtype=dtype)
    x = torch.randn(6, batch, 16, device="cuda", dtype=dtype)
    h0 = torch.randn(1, batch, hidden, device="cuda", dtype=dtype)
    x.requires_grad_()
    with fused_lstm.recording_paths() as paths:
        output, _ = module(x, (h0, torch.zeros_like(h0)))
    assert paths[0]["forward"] == "whole recurrence (persistent kernel)", paths
    torch.autograd.grad(output, [x, *module.parameters()], torch.randn_like(output))
torch.cuda.synchronize()
print("persistent kernel: forward + backward done", flush=True)
