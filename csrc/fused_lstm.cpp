// The op schemas of fused_lstm (op_schemas.h) and their CPU kernels: the shared sequence drivers with the CPU
// backend. The CUDA kernels of the same schemas are registered in cuda/; fake kernels and autograd live in
// fused_lstm/ops.py.
#include <Python.h>
#include <torch/library.h>

#include <initializer_list>

#include "checks.h"
#include "cpu/cell_cpu.h"
#include "cpu/lstm_pointwise_cpu.h"
#include "cpu/lstm_sequence_cpu.h"
#include "layer_ops.h"
#include "op_schemas.h"

// Importing fused_lstm._C loads this library, which registers the ops; the module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

namespace fused_lstm {
namespace {

struct CpuDevice {
  // Every tensor's device and dtype is checked against input's by the driver.
  static void check_devices(const char* op, const at::Tensor& input, const at::Tensor* /*batch_sizes*/,
                            std::initializer_list<NamedTensor> /*tensors*/) {
    check_defined(op, {{"input", &input}});
  }
  using Guard = NoDeviceGuard;
  static const LstmBackend& lstm_backend() {
    static const LstmBackend backend = [] {
      LstmBackend b;
      b.forward = &cpu::forward_pointwise;
      b.backward = &cpu::backward_pointwise;
      b.sequence_forward_supported = &cpu::sequence_forward_supported;
      b.sequence_forward = &cpu::sequence_forward;
      b.sequence_forward_projects_input = &cpu::sequence_forward_projects_input;
      b.sequence_backward_supported = &cpu::sequence_backward_supported;
      b.sequence_backward_prepare_weight = &cpu::sequence_backward_prepare_weight;
      b.sequence_backward = &cpu::sequence_backward;
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

// The persistent recurrent kernel exists only on CUDA: every other device answers false. Registered for
// CPU and Meta (the op returns no tensor, so the Meta kernel is all that meta and fake tensors need).
bool persistent_forward_supported_elsewhere(const at::Tensor& input, const at::Tensor& h0,
                                            const at::Tensor& weight_hh, const at::Tensor& batch_sizes,
                                            bool /*has_projection*/) {
  check_defined("fused_lstm.persistent_forward_supported",
                {{"input", &input}, {"h0", &h0}, {"weight_hh", &weight_hh}, {"batch_sizes", &batch_sizes}});
  return false;
}

}  // namespace

TORCH_LIBRARY(fused_lstm, m) { define_ops(m); }

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) {
  register_layer_ops<CpuDevice>(m);
  m.impl("persistent_forward_supported", &persistent_forward_supported_elsewhere);
}

TORCH_LIBRARY_IMPL(fused_lstm, Meta, m) {
  m.impl("persistent_forward_supported", &persistent_forward_supported_elsewhere);
}

}  // namespace fused_lstm
