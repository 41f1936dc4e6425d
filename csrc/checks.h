// One set of argument checks for every C++ entry point: each raises a c10::Error (a Python
// RuntimeError) whose message names the op and the argument as the schema spells them, never a crash.
// Each thing is checked once per call: None and devices by check_devices, in the op's kernel (layer_ops.h),
// before the driver; shapes and dtypes by the driver (sequence.h's checks, check_dtype_like_input).
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>

namespace fused_lstm {

// A tensor argument and its schema name; `tensor` is nullptr for an absent optional argument.
struct NamedTensor {
  const char* name;
  const at::Tensor* tensor;
};

inline const at::Tensor* optional_address(const std::optional<at::Tensor>& tensor) {
  return tensor.has_value() ? &*tensor : nullptr;
}

// None passed for a required Tensor reaches a kernel as an undefined tensor: say so before anything
// asks it for its sizes or device. Optional arguments that are absent (nullptr) are skipped.
inline void check_defined(const char* op, std::initializer_list<NamedTensor> tensors) {
  for (const NamedTensor& argument : tensors) {
    if (argument.tensor == nullptr) continue;
    TORCH_CHECK(argument.tensor->defined(), op, ": ", argument.name, " is required, got None");
  }
}

inline void check_dim(const char* op, const at::Tensor& tensor, const char* name, int64_t expected_dim) {
  TORCH_CHECK(tensor.dim() == expected_dim, op, ": ", name, " must be ", expected_dim, "-D, got ", tensor.dim(),
              "-D tensor of shape ", tensor.sizes());
}

inline void check_shape(const char* op, const at::Tensor& tensor, const char* name, at::IntArrayRef expected) {
  TORCH_CHECK(tensor.sizes() == expected, op, ": ", name, " must have shape ", expected, ", got ", tensor.sizes());
}

inline void check_dtype(const char* op, const at::Tensor& tensor, const char* name, at::ScalarType expected) {
  TORCH_CHECK(tensor.scalar_type() == expected, op, ": ", name, " must have dtype ", expected, ", got ",
              tensor.scalar_type());
}

inline void check_device(const char* op, const at::Tensor& tensor, const char* name, const at::Device& expected) {
  TORCH_CHECK(tensor.device() == expected, op, ": ", name, " must be on device ", expected,
              " (the device of input), got ", tensor.device());
}

// The one device check of the ops, before any kernel runs: input on the kind of device `kernels` serve (named in
// the message), batch_sizes on the CPU (the host loop reads it, as PackedSequence keeps it), every other tensor
// on input's device, so that no kernel ever reads another device's (or the host's) memory.
inline void check_devices(const char* op, const char* kernels, at::DeviceType served, const at::Tensor& input,
                          const at::Tensor* batch_sizes, std::initializer_list<NamedTensor> tensors) {
  check_defined(op, {{"input", &input}, {"batch_sizes", batch_sizes}});
  check_defined(op, tensors);
  TORCH_CHECK(input.device().type() == served, op, ": ", kernels, " take input on ", at::Device(served), ", got ",
              input.device());
  TORCH_CHECK(batch_sizes == nullptr || batch_sizes->device().is_cpu(), op,
              ": batch_sizes must be a CPU tensor (as in PackedSequence), got ", batch_sizes->device());
  for (const NamedTensor& argument : tensors) {
    if (argument.tensor != nullptr) check_device(op, *argument.tensor, argument.name, input.device());
  }
}

// Every tensor but batch_sizes has input's dtype (or the accumulation dtype, checked separately); its device was
// checked by check_devices.
inline void check_dtype_like_input(const char* op, const at::Tensor& tensor, const char* name,
                                   const at::Tensor& input) {
  TORCH_CHECK(tensor.scalar_type() == input.scalar_type(), op, ": ", name, " must have dtype ",
              input.scalar_type(), " (the dtype of input), got ", tensor.scalar_type());
}

}  // namespace fused_lstm
