// fused_lstm._emulated_cuda: the fused_lstm ops on the CUDA backend, with its kernels running in the host
// emulation (simt.h) on CPU tensors. Registered as torch.ops.fused_lstm_emulated.* with the schemas of
// torch.ops.fused_lstm.* (op_descriptions.h) and the same drivers, so a test runs exactly the code path a GPU
// runs, but for cuBLAS (the GEMMs run on ATen's CPU kernels, in the same dtype). For tests only.
#include <Python.h>
#include <torch/library.h>

#include <initializer_list>

#include "../../checks.h"
#include "../../layer_ops.h"
#include "../../op_descriptions.h"
#include "../../options.h"
#include "../cuda_backend.h"
#include "simt.h"

PyMODINIT_FUNC PyInit__emulated_cuda(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_emulated_cuda", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

namespace fused_lstm {
namespace {

struct EmulatedCudaDevice {
  // The emulated device's memory is the host's: every tensor on the CPU.
  static void check_devices(const char* op, const at::Tensor& input, const at::Tensor* batch_sizes,
                            std::initializer_list<NamedTensor> tensors) {
    fused_lstm::check_devices(op, "the emulated CUDA kernels", at::kCPU, input, batch_sizes, tensors);
  }
  using Guard = NoDeviceGuard;
  static const LstmBackend& lstm_backend() { return cuda::lstm_backend(); }
  static const GruBackend& gru_backend() { return cuda::gru_backend(); }
};

void configure(int64_t multiprocessors, int64_t seed) {
  fused_lstm_emulation::configure(static_cast<int>(multiprocessors), static_cast<std::uint64_t>(seed));
}

int64_t multiprocessors() { return fused_lstm_emulation::device_properties().multiprocessors; }
int64_t launch_count() { return fused_lstm_emulation::launch_count(); }
int64_t cooperative_launch_count() { return fused_lstm_emulation::cooperative_launch_count(); }

}  // namespace

TORCH_LIBRARY(fused_lstm_emulated, m) {
  define_ops(m);
  options::define_ops(m);
  // The emulated device: its number of SMs and the seed of the thread order (simt.h), and how many
  // launches (and cooperative ones) have run, so that a test can see a kernel run.
  m.def("configure(int multiprocessors, int seed) -> ()", &configure);
  m.def("multiprocessors() -> int", &multiprocessors);
  m.def("launch_count() -> int", &launch_count);
  m.def("cooperative_launch_count() -> int", &cooperative_launch_count);
}

TORCH_LIBRARY_IMPL(fused_lstm_emulated, CPU, m) {
  register_layer_ops<EmulatedCudaDevice>(m);
}

}  // namespace fused_lstm
