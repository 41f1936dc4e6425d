"""Benchmarks of fused_lstm.LSTM (and GRU) against torch.nn.LSTM (GRU) and the package's reference loop.

Run ``python -m benchmarks.run --device cpu --quick [--cell gru]`` (see ``benchmarks/run.py`` for every option).
The modules: ``cases`` (the shapes, their FLOP counts, the sweeps), ``candidates`` (the three
implementations with shared weights and inputs), ``measure`` (clocks, memory, machine description),
``ceilings`` (the machine's arithmetic and GEMM ceilings), ``cells`` (LSTMCell/GRUCell step by step),
``report`` (terminal table, CSV, markdown, plots) and ``run`` (the command line and the loop).
"""
