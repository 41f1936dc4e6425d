"""The cells' weight gradients, the layers' outputs and the bfloat16 kernels' scratch on reused CPU memory
(csrc/gemm.h: weight_gradient_gemm, reusable_empty): blocks of 1 to 32 MiB that such tensors free are kept for
the next ones, so an unrolled cell's backward or a layer called again does not fault fresh pages in. Reuse must
never change a result: gradients equal nn's over an unroll (where autograd adds step after step and frees blocks
that come back) and over repeated .backward() calls, and a gradient, a view of it or an output that a caller
still holds is never overwritten by a later call."""

import pytest
import torch

import fused_lstm
from conftest import assert_close

# 4·320·320 and 3·320·320 float32 weights: 1.6 and 1.2 MiB, both kept.
SIZE, BATCH, STEPS = 320, 2, 6
CELLS = {"lstm": (fused_lstm.LSTMCell, torch.nn.LSTMCell), "gru": (fused_lstm.GRUCell, torch.nn.GRUCell)}


@pytest.fixture(autouse=True)
def no_kept_blocks():
    """Each test starts with no blocks kept (they are process-wide)."""
    fused_lstm.empty_cache()
    yield
    fused_lstm.empty_cache()


def cell_pair(kind):
    torch.manual_seed(0)
    fused_class, torch_class = CELLS[kind]
    reference = torch_class(SIZE, SIZE)
    fused = fused_class(SIZE, SIZE)
    fused.load_state_dict(reference.state_dict())
    return fused, reference


def unrolled_weight_gradients(module, seed, steps=STEPS):
    """dL/dW_ih and dL/dW_hh of L = Σ_t Σ h_t² over `steps` calls on inputs drawn from `seed`. With one step
    autograd hands the op's own gradients to the caller (the blocks the cache lends), with more it returns its
    sums."""
    generator = torch.Generator().manual_seed(seed)
    xs = [torch.randn(BATCH, SIZE, generator=generator) for _ in range(steps)]
    h0 = torch.randn(BATCH, SIZE, generator=generator)
    hx = (h0, torch.randn(BATCH, SIZE, generator=generator)) if isinstance(module, CELLS["lstm"]) else h0
    loss = 0
    for x in xs:
        hx = module(x, hx)
        h = hx[0] if isinstance(hx, tuple) else hx
        loss = loss + (h * h).sum()
    return torch.autograd.grad(loss, [module.weight_ih, module.weight_hh])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_unrolled_weight_gradients_match_nn_backward_after_backward(kind):
    fused, reference = cell_pair(kind)
    for seed in range(3):
        for actual, expected in zip(unrolled_weight_gradients(fused, seed), unrolled_weight_gradients(reference, seed)):
            assert_close(actual, expected)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_held_gradient_and_a_held_view_survive_later_backwards(kind):
    fused, _ = cell_pair(kind)
    held = unrolled_weight_gradients(fused, seed=0, steps=1)
    held_copies = [g.clone() for g in held]
    view = unrolled_weight_gradients(fused, seed=1, steps=1)[0][7:9]
    view_copy = view.clone()
    for seed in range(2, 5):
        unrolled_weight_gradients(fused, seed)
    for gradient, copy in zip(held, held_copies):
        assert torch.equal(gradient, copy)
    assert torch.equal(view, view_copy)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_backward_into_grad_matches_nn_with_grads_set_to_none_between(kind):
    fused, reference = cell_pair(kind)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        xs = [torch.randn(BATCH, SIZE, generator=generator) for _ in range(STEPS)]
        for module in (fused, reference):
            module.zero_grad(set_to_none=True)
            hx = None
            loss = 0
            for x in xs:
                hx = module(x, hx)
                h = hx[0] if isinstance(hx, tuple) else hx
                loss = loss + (h * h).sum()
            loss.backward()
        assert_close(fused.weight_ih.grad, reference.weight_ih.grad)
        assert_close(fused.weight_hh.grad, reference.weight_hh.grad)


def one_step_weight_ih_gradient():
    """The raw op's dL/dW_ih for one LSTM step: a [4·SIZE, SIZE] block straight from the kept sizes."""
    fused, _ = cell_pair("lstm")
    x, h0, c0 = (torch.randn(BATCH, SIZE, generator=torch.Generator().manual_seed(i)) for i in range(3))
    weight_ih, weight_hh = fused.weight_ih.detach(), fused.weight_hh.detach()
    gates = torch.ops.fused_lstm.lstm_cell_forward(x, h0, c0, weight_ih, weight_hh, None, None, True)[2]
    ones = torch.ones(BATCH, SIZE)
    return lambda: torch.ops.fused_lstm.lstm_cell_backward(ones, ones, x, h0, c0, weight_ih, weight_hh, gates,
                                                           False)[3]


def test_a_freed_block_serves_the_next_gradient_and_a_held_one_does_not():
    """Dropped, a gradient's block serves the next gradient, even with a same-size allocation in between (which
    malloc would have handed that block); held, or held through a view, never."""
    weight_ih_gradient = one_step_weight_ih_gradient()
    first = weight_ih_gradient()
    address, expected = first.data_ptr(), first.clone()
    del first
    other_allocation = torch.empty(4 * SIZE, SIZE)
    again = weight_ih_gradient()
    assert again.data_ptr() == address and other_allocation.data_ptr() != address
    view = again[3:5]
    del again
    while_viewed = weight_ih_gradient()
    assert while_viewed.data_ptr() != address
    assert torch.equal(view, expected[3:5]) and torch.equal(while_viewed, expected)


def test_a_storage_object_taken_from_a_gradient_does_not_keep_its_block_from_reuse():
    weight_ih_gradient = one_step_weight_ih_gradient()
    first = weight_ih_gradient()
    address = first.data_ptr()
    first.untyped_storage()
    del first
    assert weight_ih_gradient().data_ptr() == address


# A layer's output [T·B, H] comes from the same kept blocks: 16·64·320 float32 is 1.25 MiB.
LAYER_STEPS, LAYER_BATCH = 16, 64


def test_a_layer_output_block_is_reused_once_dropped_and_never_while_held():
    """A CPU layer's output of the kept sizes: dropped, its block serves the next call's output (no pages faulted in
    again); held, never, and a held output keeps its values across later calls."""
    torch.manual_seed(0)
    layer = fused_lstm.LSTM(SIZE, SIZE)
    xs = [torch.randn(LAYER_STEPS, LAYER_BATCH, SIZE) for _ in range(3)]
    with torch.no_grad():
        first = layer(xs[0])[0]
        address = first.data_ptr()
        del first
        second = layer(xs[1])[0]
        assert second.data_ptr() == address
        expected = second.clone()
        third = layer(xs[2])[0]
        assert third.data_ptr() != address
    assert torch.equal(second, expected)
    reference = torch.nn.LSTM(SIZE, SIZE)
    reference.load_state_dict(layer.state_dict())
    with torch.no_grad():
        assert_close(third, reference(xs[2])[0])


def test_a_bfloat16_layer_matches_nn_call_after_call_on_reused_scratch():
    """The bfloat16 kernels' scratch (packed weights, projection tiles, h buffers) of the kept sizes is reused from
    call to call: results stay within bfloat16 tolerance of float64 nn.LSTM call after call, between shapes (the
    third pads its batch to whole row tiles)."""
    torch.manual_seed(0)
    layer = fused_lstm.LSTM(SIZE, SIZE).bfloat16()
    reference = torch.nn.LSTM(SIZE, SIZE).double()
    reference.load_state_dict(layer.state_dict())
    for steps, batch in [(LAYER_STEPS, LAYER_BATCH), (LAYER_STEPS, LAYER_BATCH), (2 * LAYER_STEPS, LAYER_BATCH // 2 - 2),
                         (LAYER_STEPS, LAYER_BATCH)]:
        x = torch.randn(steps, batch, SIZE).bfloat16()
        with torch.no_grad():
            ours = layer(x)[0]
            expected = reference(x.double())[0]
        assert ((ours.double() - expected).norm() / expected.norm()).item() < 1e-2
