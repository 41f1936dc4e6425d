// The one place where the CUDA kernels meet the CUDA runtime: kernel launches (ordinary and cooperative,
// always on the current stream and checked), the dynamic shared-memory opt-in, occupancy, the device's
// limits and the declaration of dynamic shared memory. Every kernel file includes this instead of the
// CUDA runtime and launches through it (no <<<>>> in the kernel files), so that the same sources also
// compile for the host emulation (emulation/simt.h, FUSED_LSTM_CUDA_EMULATION), which provides the same
// functions and runs the kernels as fibers on the CPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

#if defined(__CUDACC__)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cooperative_groups.h>
#elif defined(FUSED_LSTM_CUDA_EMULATION)
#include "emulation/simt.h"
#else
#error "device_runtime.cuh is for nvcc, or for the host emulation (define FUSED_LSTM_CUDA_EMULATION)"
#endif

// Declares `name`, the block's dynamic shared memory (16-byte aligned), as unsigned char[] / unsigned char*.
#if defined(__CUDACC__)
#define FL_DYNAMIC_SHARED_MEMORY(name) extern __shared__ __align__(16) unsigned char name[]
#else
#define FL_DYNAMIC_SHARED_MEMORY(name) unsigned char* const name = ::fused_lstm_emulation::dynamic_shared_memory()
#endif

namespace fused_lstm {
namespace cuda {

// What the launch planners need to know about the current device.
struct DeviceLimits {
  int multiprocessors;
  std::size_t shared_memory_per_block_optin;  // bytes one block may use after opting in
  bool cooperative_launch;
};

#if defined(__CUDACC__)

inline DeviceLimits current_device_limits() {
  const cudaDeviceProp* properties = at::cuda::getCurrentDeviceProperties();
  return {properties->multiProcessorCount, properties->sharedMemPerBlockOptin, properties->cooperativeLaunch != 0};
}

// kernel<<<grid, block, shared_bytes, current stream>>>(args...), then the launch check.
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes, Args&&... args) {
  kernel<<<grid, block, shared_bytes, at::cuda::getCurrentCUDAStream()>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// A cooperative launch (every block co-resident, grid sync allowed) on the current stream.
template <typename... Params, typename... Args>
void launch_cooperative_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes,
                               Args&&... args) {
  // cudaLaunchCooperativeKernel takes the addresses of arguments of exactly the kernel's parameter types.
  std::tuple<std::decay_t<Params>...> values(std::forward<Args>(args)...);
  std::apply(
      [&](auto&... value) {
        void* addresses[] = {static_cast<void*>(&value)...};
        C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, block, addresses,
                                                   shared_bytes, at::cuda::getCurrentCUDAStream()));
      },
      values);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Above 48 KB of dynamic shared memory a kernel must opt in, up to the device's opt-in maximum.
template <typename... Params>
void allow_dynamic_shared_memory(void (*kernel)(Params...), std::size_t bytes) {
  C10_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <typename... Params>
int max_active_blocks_per_multiprocessor(void (*kernel)(Params...), int threads_per_block, std::size_t shared_bytes) {
  int blocks = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, reinterpret_cast<const void*>(kernel),
                                                               threads_per_block, shared_bytes));
  return blocks;
}

#else  // the host emulation

inline DeviceLimits current_device_limits() {
  const auto& properties = ::fused_lstm_emulation::device_properties();
  return {properties.multiprocessors, properties.shared_memory_per_block_optin, properties.cooperative_launch};
}

// Each CUDA thread gets its own copy of the arguments, as kernel parameters are.
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes, Args&&... args) {
  const std::tuple<std::decay_t<Params>...> values(std::forward<Args>(args)...);
  ::fused_lstm_emulation::run_grid(reinterpret_cast<const void*>(kernel), grid, block, shared_bytes,
                                   /*cooperative=*/false, [&] {
                                     auto copy = values;
                                     std::apply(kernel, copy);
                                   });
}

template <typename... Params, typename... Args>
void launch_cooperative_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes,
                               Args&&... args) {
  const std::tuple<std::decay_t<Params>...> values(std::forward<Args>(args)...);
  ::fused_lstm_emulation::run_grid(reinterpret_cast<const void*>(kernel), grid, block, shared_bytes,
                                   /*cooperative=*/true, [&] {
                                     auto copy = values;
                                     std::apply(kernel, copy);
                                   });
}

template <typename... Params>
void allow_dynamic_shared_memory(void (*kernel)(Params...), std::size_t bytes) {
  ::fused_lstm_emulation::allow_dynamic_shared_memory(reinterpret_cast<const void*>(kernel), bytes);
}

template <typename... Params>
int max_active_blocks_per_multiprocessor(void (*kernel)(Params...), int threads_per_block, std::size_t shared_bytes) {
  return ::fused_lstm_emulation::max_active_blocks_per_multiprocessor(reinterpret_cast<const void*>(kernel),
                                                                      threads_per_block, shared_bytes);
}

#endif

}  // namespace cuda
}  // namespace fused_lstm
