// The ops of fused_lstm (described in op_descriptions.h) and their CPU kernels: the shared sequence drivers with
// the CPU backend. The CUDA kernels of the same ops are registered in cuda/; fake kernels, the Python autograd
// and vmap rules live in fused_lstm/ (fake_kernels.py, autograd.py, vmap_rules.py).
#include <Python.h>
#include <torch/library.h>

#include <initializer_list>

#include "eager_autograd.h"
#include "checks.h"
#include "gemm.h"
#include "cpu/cell_cpu.h"
#include "cpu/pointwise_cpu.h"
#include "cpu/lstm_recurrence_cpu.h"
#include "layer_ops.h"
#include "op_descriptions.h"
#include "options.h"

// Importing fused_lstm._C loads this library, which registers the ops; the module itself holds the cells' eager
// autograd (eager_autograd.h).
PYBIND11_MODULE(_C, module) { fused_lstm::bind_eager_autograd(module); }

namespace fused_lstm {
namespace {

struct CpuDevice {
  static void check_devices(const char* op, const at::Tensor& input, const at::Tensor* batch_sizes,
                            std::initializer_list<NamedTensor> tensors) {
    fused_lstm::check_devices(op, "the CPU kernels", at::kCPU, input, batch_sizes, tensors);
  }
  using Guard = NoDeviceGuard;
  static const LstmBackend& lstm_backend() {
    static const LstmBackend backend = [] {
      LstmBackend b;
      b.forward = &cpu::forward_pointwise;
      b.backward = &cpu::backward_pointwise;
      b.recurrence_forward_kernel = &cpu::recurrence_forward_kernel;
      b.recurrence_forward = &cpu::recurrence_forward;
      b.recurrence_forward_projects_input = &cpu::recurrence_forward_projects_input;
      b.recurrence_backward_kernel = &cpu::recurrence_backward_kernel;
      b.recurrence_backward_prepare_weight = &cpu::recurrence_backward_prepare_weight;
      b.recurrence_backward = &cpu::recurrence_backward;
      b.cell_forward_supported = &cpu::cell_forward_supported;
      b.cell_forward = &cpu::lstm_cell_forward;
      return b;
    }();
    return backend;
  }
  static const GruBackend& gru_backend() {
    static const GruBackend backend = [] {
      GruBackend b;
      b.forward = &cpu::gru_forward_pointwise;
      b.backward = &cpu::gru_backward_pointwise;
      b.cell_forward_supported = &cpu::cell_forward_supported;
      b.cell_forward = &cpu::gru_cell_forward;
      return b;
    }();
    return backend;
  }
};

}  // namespace

TORCH_LIBRARY(fused_lstm, m) {
  define_ops(m);
  options::define_ops(m);
  // Frees the CPU weight-gradient blocks kept for reuse (gemm.h: weight_gradient_gemm).
  m.def("empty_cache() -> ()", &empty_cache);
}

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) { register_layer_ops<CpuDevice>(m); }

}  // namespace fused_lstm
