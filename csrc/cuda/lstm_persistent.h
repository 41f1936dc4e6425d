// The persistent recurrent forward of one LSTM layer and direction on CUDA: ONE cooperative kernel runs
// every step (h_{t-1}·W_hhᵀ with W_hh held in shared memory, the cell update, a grid barrier per step)
// instead of a cuBLAS GEMM plus a pointwise kernel per step. The input projection x·W_ihᵀ of every step
// is one GEMM before the kernel, as on the per-step path (lstm_layer.cpp).
// Letters: T steps, B batch, H hidden size, Hc hidden units per CTA.
//
// Off by default: it runs only with the option cuda_persistent on (options.h); README.md says why.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstddef>
#include <cstdint>

#include "../params.h"

namespace fused_lstm {
namespace cuda {

// The backend hooks (LstmBackend::recurrence_forward_kernel / recurrence_forward).
//
// persistent_forward_kernel names the kernel ("persistent kernel") only when all of these hold, else it is
// none and lstm_layer_forward runs its per-step loop, i.e. our own cuBLAS GEMM + fused pointwise kernel
// per step (never a fallback to PyTorch's LSTM):
//   - the option cuda_persistent is on (options.h; FUSED_LSTM_CUDA_PERSISTENT=1);
//   - float32, float16 or bfloat16 (float64 stays per-step);
//   - uniform batch (padded input; packed sequences of unequal lengths stay per-step), no projection,
//     T >= 1, B >= 1;
//   - the current device supports cooperative launches, each CTA's W_hh slice plus at least one row
//     group of h fits in sharedMemPerBlockOptin, and all CTAs are co-resident (occupancy query).
// Uses the current device (the caller's device guard).
RecurrenceKernel persistent_forward_kernel(const LstmRecurrenceShape& shape, at::ScalarType dtype);

// Runs the recurrence on the current stream. Only for cases persistent_forward_kernel named.
void persistent_forward(const LstmRecurrenceForwardParams& params, at::ScalarType dtype,
                        const RecurrenceKernel& kernel);

// How one case maps onto the GPU (computed by the typed planner in lstm_persistent_<dtype>.cu).
struct PersistentPlan {
  bool fits = false;            // the slices fit in shared memory and every CTA is co-resident
  int units_per_block = 0;      // Hc: hidden units (and their 4 gate rows) per CTA
  int blocks = 0;               // ceil(H / Hc) CTAs, at most one per SM
  int rows_per_item = 0;        // batch rows per warp work item (1 for B < 4, else 4)
  int batch_tile = 0;           // rows of h_{t-1} staged in shared memory at once (a multiple of rows_per_item)
  std::size_t shared_bytes = 0; // dynamic shared memory per CTA
};

// scalar_t: float, c10::Half or c10::BFloat16.
template <typename scalar_t>
PersistentPlan plan_persistent_forward(int64_t batch, int64_t hidden);
template <typename scalar_t>
void launch_persistent_forward(const LstmRecurrenceForwardParams& params);

}  // namespace cuda
}  // namespace fused_lstm
