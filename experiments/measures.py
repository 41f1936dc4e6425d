"""What experiments/why_lstm.py measures of a model besides its loss, on a readable unrolled pass (training never
uses it): the state-gradient profile over lags, and keep-gate and state statistics on the probe batch."""

import copy

import torch


def gradient_lags(seq_len):
    """The lags stored per state-gradient profile: about 25 evenly spaced, plus T/2 and T-1."""
    return sorted(set(range(0, seq_len, max(1, seq_len // 25))) | {seq_len // 2, seq_len - 1})


def state_gradient_profile(model, task, inputs, targets):
    """Per-sample ||dl/ds_t|| of the memory state s_t (c_t, or h_t for the RNN and the GRU), averaged
    over the probe batch; returned by lag T-1-t.  This is the total derivative through every path,
    computed in float64 on a copy of the weights."""
    model = copy.deepcopy(model).double()
    unrolled = model.recurrent.unroll(inputs.double())
    per_sample_losses = task.loss(model.readout(unrolled.last_hidden), targets.double() if not task.is_classification else targets,
                                  reduction="none")
    # Samples are independent, so the gradient of the sum holds each sample's own gradient.
    grads = torch.autograd.grad(per_sample_losses.sum(), unrolled.states)
    norms = torch.stack([grad.norm(dim=1).mean() for grad in grads])  # [T]
    return norms.flip(0).tolist()


@torch.no_grad()
def probe_statistics(model, inputs, first_relevant):
    """Keep-gate and state statistics on the probe batch (float32, the trained weights as they are):
    keep_gate_mean: mean keep gate (LSTM f, GRU z, gated network f) over samples, steps and units;
    retention_best_unit: max over units of the sample mean of prod_{t > t1} keep_t, the direct partial
      dc_T/dc_{t1} along the memory path from the first relevant step t1 to the end;
    state_abs_mean: mean |s_T|; state_tanh_grad_mean: mean 1 - tanh(s_t)^2 over all steps (how far a
      tanh read-out of the state is saturated)."""
    unrolled = model.recurrent.unroll(inputs)
    states = torch.stack(unrolled.states, 1)  # [B, T, H]
    stats = {
        "keep_gate_mean": "",
        "retention_best_unit": "",
        "state_abs_mean": states[:, -1].abs().mean().item(),
        "state_tanh_grad_mean": (1 - torch.tanh(states) ** 2).mean().item(),
    }
    if unrolled.keep_gates is not None:
        keep = unrolled.keep_gates
        after_first = torch.arange(keep.shape[1]).unsqueeze(0) > first_relevant.unsqueeze(1)  # [B, T]
        # float32 keep gates can round to 0; clamp to the smallest normal float32 so log stays finite.
        log_keep = torch.log(keep.clamp_min(torch.finfo(keep.dtype).tiny))
        log_retention = torch.where(after_first.unsqueeze(2), log_keep, 0.0).sum(1)  # [B, H]
        stats["keep_gate_mean"] = keep.mean().item()
        stats["retention_best_unit"] = log_retention.exp().mean(0).max().item()
    return stats
