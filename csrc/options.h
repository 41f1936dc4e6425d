// Every switch that chooses a code path, read in this one place. Each is taken from its environment variable
// at the first question (an unknown value raises then, and at every later question until it is fixed), and
// can be changed in-process: torch.ops.fused_lstm.set_option(name, value), or the Python context manager
// fused_lstm.options(name=value) that restores the old value. The query of which path a call takes is
// fused_lstm::layer_paths (op_descriptions.h).
//
// | option          | environment variable       | values                                   | default           |
// |-----------------|----------------------------|------------------------------------------|-------------------|
// | cpu_isa         | FUSED_LSTM_CPU_ISA         | auto, none, avx2, avx512, avx512_bf16,   | auto: the best    |
// |                 |                            | amx                                      | this CPU has      |
// | cpu_gemm        | FUSED_LSTM_CPU_GEMM        | auto, aten, onednn                       | auto              |
// | cuda_persistent | FUSED_LSTM_CUDA_PERSISTENT | 0, 1                                     | 0                 |
//
// cpu_isa caps the instruction set of the CPU's own kernels (cpu/isa.h): the float32 whole recurrence and
// fused cell need avx2 or more, the bfloat16 whole recurrence avx512_bf16 (vdpbf16ps) or amx; with "none"
// every layer runs per step (library GEMMs and the pointwise pass). Asking for more than the CPU has raises.
// cpu_gemm: which library runs the CPU's float32 GEMMs (gemm.h). cuda_persistent: the persistent kernel for
// the whole recurrence of CUDA LSTM forwards (cuda/lstm_persistent.h).
#pragma once

#include <torch/library.h>

#include <string>

#include "cpu/isa.h"

namespace fused_lstm {
namespace options {

enum class CpuGemm { kAuto, kAten, kOneDnn };

cpu::Isa cpu_isa();  // auto resolved to the CPU's best
CpuGemm cpu_gemm();
bool cuda_persistent();

// By option name (the table's first column); values as in the table. Raise on unknown names and values.
std::string get(const std::string& name);
void set(const std::string& name, const std::string& value);

// set_option, get_option, best_cpu_isa and onednn_matmul_usable, for a library's TORCH_LIBRARY block (the extension's and the CUDA emulation's).
void define_ops(torch::Library& m);

}  // namespace options
}  // namespace fused_lstm
