// Every threshold that chooses a code path, in one header, each with the measurement that set it (float32 unless
// said; 2-core cloud VMs, 2 threads). docs/architecture.md's path table says where each is read.
#pragma once

#include <cstdint>

namespace fused_lstm {
namespace thresholds {

// The fused cell (cpu/cell_cpu.cpp, cell_forward_supported): up to kMaxDotRows batch rows the dot-product form
// (rows in registers, one horizontal sum per unit); with AVX-512 up to kMaxCellRows the batch-lanes form (rows in
// vector lanes); above, the per-step path's two library GEMMs. An LSTMCell at B = 64, H = 256 took 437 µs on the
// GEMMs and 334 µs in the lanes form (2-core Xeon); the dot form keeps one row per accumulator, so 16 rows (4
// blocks of 4) is where its register blocks stop paying for the lanes form's transposes.
constexpr int64_t kMaxDotRows = 16;
constexpr int64_t kMaxCellRows = 128;

// The float32 whole recurrence (cpu/lstm_recurrence_cpu.cpp, recurrence_forward_projects_input): from this many
// batch rows the tiles project x_t inside each step; below, streaming W_ih's panels every step costs more than
// the few multiply-adds they feed, and one GEMM over all T·B rows first is faster (set on a 2-core Xeon, B = 1
// to 8; bfloat16 tiles always project).
constexpr int64_t kMinRowsToProjectPerStep = 4;

// The bfloat16 backward on an AMX CPU (cpu/lstm_recurrence_cpu.cpp, backward_kernel): the vdpbf16ps tiles below
// this many multiply-adds a step (B·4H·H), the per-step path's AMX GEMMs (oneDNN) above, whose peak is far higher
// (6.7 against 0.23 TFLOP/s) once a step pays for a library call. Training step on a 2-core Xeon with AMX:
// B = 8, H = 128 2.4 ms on the tiles against 3.4 ms per step; B = 32, H = 256 28 against 21 ms.
constexpr int64_t kAmxPerStepMinMultiplyAdds = int64_t(1) << 21;

// CPU float32 GEMMs (gemm.cpp, use_onednn; only where oneDNN's matmul can run): oneDNN where it beat MKL on the
// development machines, inner and output dimensions of at least 256, at least 16 rows and 2M multiply-adds in
// all. Below 16 rows (a decoder's cell step) MKL is up to 2.5× faster (2-core Xeon: an LSTMCell's backward at
// B = 8, H = 1024).
constexpr int64_t kOneDnnMinDimension = 256;
constexpr int64_t kOneDnnMinRows = 16;
constexpr int64_t kOneDnnMinMultiplyAdds = int64_t(1) << 21;

}  // namespace thresholds
}  // namespace fused_lstm
