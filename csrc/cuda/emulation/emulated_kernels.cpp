// The CUDA kernels, compiled by the host compiler for the emulation (simt.h): the very files nvcc compiles,
// one instantiation file per dtype, included here into one translation unit.
#include "../lstm_persistent_bf16.cu"
#include "../lstm_persistent_fp16.cu"
#include "../lstm_persistent_fp32.cu"
#include "../pointwise_bf16.cu"
#include "../pointwise_fp16.cu"
#include "../pointwise_fp32.cu"
#include "../pointwise_fp64.cu"
