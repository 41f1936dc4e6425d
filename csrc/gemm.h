// The GEMMs of the layer loops (both backends). CPU float32 products that are large enough run on
// oneDNN's matmul, the JIT kernels behind nn.LSTM's own CPU path; the rest run on ATen's mm/addmm
// (MKL on the CPU, cuBLAS on CUDA). Measured on the project's 2-core AMD EPYC (AVX-512): oneDNN is
// 10-30% faster than MKL's sgemm once the inner and output dimensions reach 256, and slower for small
// products, where creating its primitive costs more than the product itself.
//
// oneDNN's matmul is reached through a torch-internal entry point whose precondition depends on the CPU:
// onednn_matmul_usable() checks it before any call, and without it every GEMM runs on ATen.
//
// The option cpu_gemm (options.h: aten, onednn, auto) overrides the choice, for benchmarking.
#pragma once

#include <ATen/ATen.h>

namespace fused_lstm {

// Whether float32 GEMMs can run on oneDNN's matmul in this process: this torch has the entry point and its
// precondition holds on this CPU (AVX-512 BW/VL/DQ or AVX-NE-CONVERT, as oneDNN sees it). Asked once.
bool onednn_matmul_usable();

// result [M, N] = beta·result + a [M, K] · b [K, N]; beta is 0 or 1. With beta = 0 result's old
// values are never read (it may be uninitialized).
void gemm_into(const at::Tensor& result, const at::Tensor& a, const at::Tensor& b, float beta);

// a [M, K] · b [K, N] as a new contiguous [M, N] tensor.
at::Tensor gemm(const at::Tensor& a, const at::Tensor& b);

// gemm, for a cell's weight gradient: on the CPU, into memory that earlier such gradients freed.
//
// Why: an unrolled cell's backward returns fresh [G·H, C] weight gradients at every step, which autograd adds
// into its buffer and frees at once. glibc returns such freed blocks (megabytes, two per step and adjacent) to
// the system and faults every page in again at the next step: at H = 1024 an LSTMCell's 50-step backward
// took 3× as long on the 2-core Xeon (400k page faults, against a handful with reuse). The blocks come from an
// allocator that keeps what its tensors free (at most 8 blocks of 1 to 32 MiB); empty_cache() frees them.
at::Tensor weight_gradient_gemm(const at::Tensor& a, const at::Tensor& b);

// An uninitialized contiguous [rows, cols] tensor; on the CPU, of 1 to 32 MiB, from the same kept blocks (else
// at::empty): a layer's output or a kernel's scratch of megabytes, which glibc would otherwise return to the
// system and fault in again at every call.
at::Tensor reusable_empty(int64_t rows, int64_t cols, const at::TensorOptions& options);

// Frees the blocks kept for weight_gradient_gemm and reusable_empty (blocks in use are not kept: they live on with
// their users).
void empty_cache();

}  // namespace fused_lstm
