// One set of argument checks for every C++ entry point: each raises a c10::Error (a Python
// RuntimeError/ValueError) with a message naming the argument, never a crash.
#pragma once

#include <ATen/ATen.h>

#define FL_CHECK_DIM(tensor, expected_dim)                                                      \
  TORCH_CHECK((tensor).dim() == (expected_dim), "fused_lstm: ", #tensor, " must be ",           \
              (expected_dim), "-D, got ", (tensor).dim(), "-D tensor of shape ", (tensor).sizes())

#define FL_CHECK_SHAPE(tensor, ...)                                                             \
  TORCH_CHECK((tensor).sizes() == at::IntArrayRef({__VA_ARGS__}), "fused_lstm: ", #tensor,      \
              " must have shape ", at::IntArrayRef({__VA_ARGS__}), ", got ", (tensor).sizes())

#define FL_CHECK_DTYPE(tensor, expected_dtype)                                                  \
  TORCH_CHECK((tensor).scalar_type() == (expected_dtype), "fused_lstm: ", #tensor,              \
              " must have dtype ", (expected_dtype), " (the dtype of input), got ",             \
              (tensor).scalar_type())

#define FL_CHECK_DEVICE(tensor, expected_device)                                                \
  TORCH_CHECK((tensor).device() == (expected_device), "fused_lstm: ", #tensor,                  \
              " must be on device ", (expected_device), " (the device of input), got ",         \
              (tensor).device())

// An optional tensor argument is either absent or a tensor of the same dtype and device as input.
#define FL_CHECK_LIKE_INPUT(tensor, input)                                                      \
  do {                                                                                          \
    FL_CHECK_DTYPE(tensor, (input).scalar_type());                                              \
    FL_CHECK_DEVICE(tensor, (input).device());                                                  \
  } while (0)
