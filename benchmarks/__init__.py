"""Benchmarks of fused_lstm.LSTM against torch.nn.LSTM and the package's reference loop.

Run ``python -m benchmarks.run --device cpu --quick`` (see ``benchmarks/run.py`` for every option).
The modules: ``cases`` (the shapes, their FLOP counts, the sweeps), ``candidates`` (the three LSTMs
with shared weights and inputs), ``measure`` (clocks, memory, GEMM peak, machine description),
``report`` (terminal table, CSV, markdown, plots) and ``run`` (the command line and the loop).
"""
