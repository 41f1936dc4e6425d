// The GEMMs of the layer loops (both backends). CPU float32 products that are large enough run on
// oneDNN's matmul, the JIT kernels behind nn.LSTM's own CPU path; the rest run on ATen's mm/addmm
// (MKL on the CPU, cuBLAS on CUDA). Measured on the project's 2-core AMD EPYC (AVX-512): oneDNN is
// 10-30% faster than MKL's sgemm once the inner and output dimensions reach 256, and slower for small
// products, where creating its primitive costs more than the product itself.
//
// The option cpu_gemm (options.h: aten, onednn, auto) overrides the choice, for benchmarking.
#pragma once

#include <ATen/ATen.h>

namespace fused_lstm {

// result [M, N] = beta·result + a [M, K] · b [K, N]; beta is 0 or 1. With beta = 0 result's old
// values are never read (it may be uninitialized).
void gemm_into(const at::Tensor& result, const at::Tensor& a, const at::Tensor& b, float beta);

// a [M, K] · b [K, N] as a new contiguous [M, N] tensor.
at::Tensor gemm(const at::Tensor& a, const at::Tensor& b);

}  // namespace fused_lstm
