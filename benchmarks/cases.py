"""What is benchmarked: LSTM and GRU shapes, their FLOP counts, and the sweeps over them."""

from dataclasses import dataclass, field, replace

DTYPE_NAMES = ("float32", "bfloat16", "float16")
CELLS = ("lstm", "gru")
GATE_COUNTS = {"lstm": 4, "gru": 3}

# The shape of PyTorch's fastrnns LSTM benchmark: T=100, B=64, I=H=512, one layer.
FASTRNNS_DEFAULT = dict(seq_len=100, batch=64, input_size=512, hidden_size=512)


@dataclass(frozen=True)
class RecurrentCase:
    seq_len: int
    batch: int
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    dtype: str = "float32"
    cell: str = "lstm"  # "lstm" or "gru" (no projection)
    # The sweep axes this shape belongs to; a shape shared by several sweeps is run once.
    sweeps: tuple = field(default=(), compare=False)

    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    @property
    def gate_count(self):
        return GATE_COUNTS[self.cell]

    @property
    def output_size(self):
        return self.proj_size or self.hidden_size

    @property
    def tokens(self):
        return self.seq_len * self.batch

    @property
    def sequential_steps(self):
        """Steps a step-by-step implementation walks through one after the other."""
        return self.seq_len * self.num_layers * self.directions

    def forward_flops(self):
        """FLOPs of the forward GEMMs (a multiply-add counts 2); the pointwise gate math is left out.

        Per layer and direction: x·W_ihᵀ and h·W_hhᵀ are 2·T·B·(I_layer + P)·G·H with G = 4 gates for the
        LSTM and 3 for the GRU, and the projection h·W_hrᵀ adds 2·T·B·H·P, where P is proj_size or H and
        I_layer is the layer's input width."""
        total = 0
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else self.directions * self.output_size
            per_direction = 2 * self.tokens * (layer_input + self.output_size) * self.gate_count * self.hidden_size
            if self.proj_size:
                per_direction += 2 * self.tokens * self.hidden_size * self.proj_size
            total += self.directions * per_direction
        return total

    def flops(self, mode):
        # Backward runs two GEMMs (gradient of the input and of the weights) per forward GEMM, each
        # as large, so forward + backward is 3× the forward; with a data input, the first layer's
        # gradient of the input is not part of the work.
        if mode == "inference":
            return self.forward_flops()
        total = 3 * self.forward_flops()
        if mode == "training-data-input":
            total -= self.directions * 2 * self.tokens * self.input_size * self.gate_count * self.hidden_size
        return total

    def label(self):
        return shape_label(self)


def shape_label(shape):
    """'T=100 B=64 I=512 H=512 L=1' (+ ' bi', ' P=128'; 'GRU ' first for a GRU), for anything with a case's
    fields: a case, or a result row."""
    text = "GRU " if shape.cell == "gru" else ""
    text += f"T={shape.seq_len} B={shape.batch} I={shape.input_size} H={shape.hidden_size} L={shape.num_layers}"
    if shape.bidirectional:
        text += " bi"
    if shape.proj_size:
        text += f" P={shape.proj_size}"
    return text


def parse_sizes(text, dtypes):
    """Parses ``TxBxIxHxL[xbi][xpP],...`` (e.g. ``100x64x512x512x1,50x8x128x128x2xbi,100x8x256x512x1xp128``)
    into one case per size and dtype."""
    cases = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        fields = item.lower().split("x")
        if len(fields) < 5:
            raise ValueError(f"size {item!r} is not TxBxIxHxLayers[xbi][xpP]")
        seq_len, batch, input_size, hidden_size, num_layers = (int(value) for value in fields[:5])
        bidirectional, proj_size = False, 0
        for flag in fields[5:]:
            if flag == "bi":
                bidirectional = True
            elif flag.startswith("p") and flag[1:].isdigit():
                proj_size = int(flag[1:])
            else:
                raise ValueError(f"size {item!r}: unknown suffix {flag!r} (expected 'bi' or 'p<proj_size>')")
        base = RecurrentCase(seq_len, batch, input_size, hidden_size, num_layers, bidirectional, proj_size,
                        sweeps=("custom",))
        cases += [replace(base, dtype=dtype) for dtype in dtypes]
    return cases


def _merge(sweeps):
    """Flattens {sweep name: [cases]} into a list in first-seen order, running a shape once and
    recording every sweep it belongs to."""
    merged = {}
    for sweep_name, cases in sweeps.items():
        for case in cases:
            key = replace(case, sweeps=())
            merged[key] = merged.get(key, ()) + (sweep_name,)
    return [replace(case, sweeps=names) for case, names in merged.items()]


def _dtype_sweep(shapes, dtypes):
    return [replace(shape, dtype=dtype) for shape in shapes for dtype in dtypes]


def full_sweep(device, dtypes):
    """Every axis of the issue; CPU gets fewer and smaller points so the sweep stays near 15 minutes
    on a small machine. The size sweeps run in the first dtype, the dtype sweep in all of them."""
    dtype = dtypes[0]
    default = RecurrentCase(**FASTRNNS_DEFAULT, dtype=dtype)
    if device == "cpu":
        small = dict(seq_len=100, batch=16, input_size=256, hidden_size=256, dtype=dtype)
        sweeps = {
            "default": [default],
            "batch": [RecurrentCase(100, batch, 256, 256, dtype=dtype) for batch in (1, 8, 32, 128, 256)],
            "hidden": [RecurrentCase(100, 16, hidden, hidden, dtype=dtype) for hidden in (128, 256, 512, 1024)],
            "seq_len": [RecurrentCase(seq_len, 16, 256, 256, dtype=dtype) for seq_len in (10, 100, 1000)],
            "layers": [RecurrentCase(**small, num_layers=layers) for layers in (1, 2, 4)],
            "bidirectional": [RecurrentCase(**small, num_layers=layers, bidirectional=True) for layers in (1, 2)],
            "projection": [RecurrentCase(100, 16, 256, 512, proj_size=128, dtype=dtype)],
            "dtype": _dtype_sweep([default], dtypes),
        }
    else:
        medium = dict(seq_len=100, batch=64, input_size=512, hidden_size=512, dtype=dtype)
        sweeps = {
            "default": [default],
            "batch": [RecurrentCase(100, batch, 512, 512, dtype=dtype) for batch in (1, 2, 4, 8, 16, 32, 64, 128, 256)],
            "hidden": [RecurrentCase(100, 64, hidden, hidden, dtype=dtype) for hidden in (128, 256, 512, 768, 1024)],
            "seq_len": [RecurrentCase(seq_len, 64, 512, 512, dtype=dtype) for seq_len in (10, 50, 100, 250, 500, 1000)],
            "layers": [RecurrentCase(**medium, num_layers=layers) for layers in (1, 2, 3, 4)],
            "bidirectional": [RecurrentCase(**medium, num_layers=layers, bidirectional=True) for layers in (1, 2, 4)],
            "projection": [RecurrentCase(100, 64, 1024, 1024, proj_size=256, dtype=dtype)],
            "dtype": _dtype_sweep([default, RecurrentCase(100, 256, 1024, 1024)], dtypes),
        }
    return _merge(sweeps)


def quick_sweep(device, dtypes):
    """A handful of sizes: under a minute on a 2-core CPU, under two minutes on an H100."""
    dtype = dtypes[0]
    if device == "cpu":
        sizes = [(50, 8, 128, 128, 1), (100, 32, 256, 256, 1), (100, 64, 512, 512, 1), (64, 16, 256, 256, 2)]
        return _merge({"quick": [RecurrentCase(t, b, i, h, layers, dtype=dtype) for t, b, i, h, layers in sizes]})
    return _merge({
        "dtype": _dtype_sweep([RecurrentCase(**FASTRNNS_DEFAULT), RecurrentCase(100, 256, 1024, 1024)], dtypes),
        # Small batches are where one fused kernel per step matters most: latency, not FLOPs.
        "small_batch": [RecurrentCase(seq_len, batch, hidden, hidden, dtype=dtype)
                        for hidden in (512, 1024) for seq_len in (100, 1000) for batch in (1, 8, 16, 64)],
    })


def for_cell(cases, cell):
    """The cases for one cell type. The GRU has no projection: the projection sweep is dropped, and a
    custom size with one is an error."""
    if cell == "lstm":
        return list(cases)
    projected = [case for case in cases if case.proj_size]
    if any("custom" in case.sweeps for case in projected):
        raise ValueError("a GRU has no projection: drop the xp<proj_size> suffix")
    return [replace(case, cell=cell) for case in cases if not case.proj_size]
