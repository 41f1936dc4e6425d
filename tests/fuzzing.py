"""What the property tests share (tests/test_fuzz_against_nn.py, tests/test_nonfinite.py, and the memory
layouts of tests/test_bad_arguments.py): hypothesis settings, strategies and coverage labels, memory layouts,
nn.LSTM / fused_lstm.LSTM pairs. See docs/robustness.md.

Hypothesis runs derandomized by default (the same examples on every run, no example database), with
a bounded example budget so that each file stays well under 2 minutes on a 2-core CPU. Environment knobs
for a longer, random exploration:
    FUSED_LSTM_FUZZ_RANDOM=1      random examples; a failure prints its seed: rerun with --hypothesis-seed=N
    FUSED_LSTM_FUZZ_EXAMPLES=K    multiply every example budget by K
    FUSED_LSTM_FUZZ_THREADS=N     intra-op threads while a property file runs (default 1; conftest's
                                  fuzz_intra_op_threads)
A failure also prints the falsifying example and a @reproduce_failure(...) blob.
"""

import functools
import os
import random

import hypothesis
import torch
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st

import samples

RANDOM_FUZZ = os.environ.get("FUSED_LSTM_FUZZ_RANDOM", "0") == "1"
EXAMPLE_FACTOR = int(os.environ.get("FUSED_LSTM_FUZZ_EXAMPLES", "1"))


# With FUSED_LSTM_FUZZ_RANDOM=1 every fuzz test runs from one seed: --hypothesis-seed's if given, else a fresh
# one applied with @hypothesis.seed (which seeds exactly as --hypothesis-seed does) and printed on failure.
FORCED_SEED = getattr(hypothesis.core, "global_force_seed", None)
FUZZ_SEED = (FORCED_SEED if FORCED_SEED is not None else random.SystemRandom().getrandbits(32)) if RANDOM_FUZZ \
    else None


def fuzz(max_examples):
    """The settings of every property test: a bounded budget, no deadline, derandomized unless
    FUSED_LSTM_FUZZ_RANDOM=1, failures printed with a reproduction blob."""
    def decorate(test):
        test = settings(max_examples=max_examples * EXAMPLE_FACTOR, deadline=None, derandomize=not RANDOM_FUZZ,
                        database=None, print_blob=True,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                               HealthCheck.function_scoped_fixture])(test)
        if RANDOM_FUZZ and FORCED_SEED is None:
            test = hypothesis.seed(FUZZ_SEED)(test)
        return test
    return decorate


def note_seed():
    """Printed with a falsifying example: how to rerun the same random exploration."""
    if RANDOM_FUZZ:
        note(f"random fuzz: rerun with FUSED_LSTM_FUZZ_RANDOM=1 FUSED_LSTM_FUZZ_EXAMPLES={EXAMPLE_FACTOR} "
             f"pytest ... --hypothesis-seed={FUZZ_SEED}")
    else:
        note("derandomized fuzz: rerunning the same command replays the same examples")


FLOAT_DTYPES = [torch.float32, torch.float64]


make_pair = functools.partial(samples.module_pair, "LSTM")


# ---------------------------------------------------------------------------------------------------
# Strided views: the same values in another memory layout


LAYOUTS = ["contiguous", "permuted", "sliced", "offset", "expanded"]


def with_layout(values, layout, expand_dim=0):
    """A tensor equal to `values` (same shape) laid out differently in memory, plus the leaf it is a view
    of (gradients are taken w.r.t. the leaf; floating-point leaves require grad). 'expanded' repeats one slice
    along `expand_dim` (stride 0), so it changes the values: the caller passes the result to both
    implementations."""
    values = values.detach()
    if values.dim() == 0:
        layout = "contiguous"
    dims = list(range(values.dim()))[::-1]
    every_other = tuple(slice(None, None, 2) for _ in range(values.dim()))
    if layout == "expanded" and values.size(expand_dim) == 0:
        layout = "contiguous"
    if layout == "contiguous":
        leaf = values.clone()
    elif layout == "permuted":  # memory order reversed: every stride differs from the contiguous one
        leaf = values.permute(dims).contiguous()
    elif layout == "sliced":  # every other element of every dimension
        leaf = values.new_zeros([2 * size for size in values.shape])
        leaf[every_other] = values
    elif layout == "offset":  # storage starting one element in: misaligned for vector loads
        leaf = torch.cat([values.new_zeros(1), values.reshape(-1)])
    elif layout == "expanded":
        leaf = values.narrow(expand_dim, 0, 1).clone()
    else:
        raise ValueError(layout)
    if leaf.is_floating_point() or leaf.is_complex():
        leaf.requires_grad_()
    view = {"contiguous": lambda: leaf, "permuted": lambda: leaf.permute(dims),
            "sliced": lambda: leaf[every_other], "offset": lambda: leaf[1:].view(values.shape),
            "expanded": lambda: leaf.expand(values.shape)}[layout]()
    return leaf, view


# ---------------------------------------------------------------------------------------------------
# Module configurations and coverage labels


@st.composite
def lstm_configs(draw, max_steps=64, max_batch=17, max_size=70):
    """Module arguments and sizes (the dtype is a pytest parameter of each test)."""
    hidden = draw(st.integers(1, max_size))
    return dict(
        steps=draw(st.integers(1, max_steps)),
        batch=draw(st.integers(0, max_batch)),
        input_size=draw(st.integers(1, max_size)),
        hidden_size=hidden,
        proj_size=draw(st.integers(0, hidden - 1)) if hidden > 1 and draw(st.booleans()) else 0,
        num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def record_events(config, **extra):
    """Coverage labels, shown by `pytest --hypothesis-show-statistics`; and the seed note."""
    note_seed()
    event(f"dtype={str(config['dtype']).replace('torch.', '')}")
    event(f"steps {'>32' if config['steps'] > 32 else '<=32'}")
    event(f"batch {'0' if config['batch'] == 0 else '>8' if config['batch'] > 8 else '1-8'}")
    event(f"hidden {'odd' if config['hidden_size'] % 2 else 'even'}, {'>32' if config['hidden_size'] > 32 else '<=32'}")
    event(f"proj {'on' if config['proj_size'] else 'off'}")
    event(f"layers={config['num_layers']} bidirectional={config['bidirectional']}")
    for key, value in extra.items():
        event(f"{key}={value}")


def module_kwargs(config):
    return {k: config[k] for k in ("proj_size", "num_layers", "bidirectional", "batch_first", "bias")}


def random_states(config, batch, device, generator):
    directions = 2 if config["bidirectional"] else 1
    rows = config["num_layers"] * directions
    out_size = config["proj_size"] or config["hidden_size"]
    h0 = torch.randn(rows, batch, out_size, generator=generator, dtype=config["dtype"]).to(device)
    c0 = torch.randn(rows, batch, config["hidden_size"], generator=generator, dtype=config["dtype"]).to(device)
    return h0, c0
