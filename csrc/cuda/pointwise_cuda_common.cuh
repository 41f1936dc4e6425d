// What the LSTM and GRU pointwise kernels share: register packs of V consecutive elements moved as
// 16-byte words, the launch shape, and the alignment test that picks the vector or scalar variant.
// Letters: R rows active at this step (b_t), H hidden size, V elements per thread (kVec).
//
// Each thread owns V consecutive hidden units of a row and does all gates of each of them, so a step
// touches every element once. Threads along x sweep the columns of a row (coalesced), threads along
// y take rows; both loops stride over the grid, so any R and H fit in one launch.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "device_runtime.cuh"

namespace fused_lstm {
namespace cuda {
namespace detail {

constexpr int kVectorBytes = 16;       // the widest global load/store of sm_80/sm_90
constexpr int kThreadsPerBlock = 128;  // small blocks spread a step's few rows over more SMs
constexpr int64_t kMaxGridY = 65535;   // gridDim.y limit; the row loop strides over the rest

// Elements per thread on the vector path: one 16-byte word of scalar_t.
template <typename scalar_t>
constexpr int vector_width() {
  return kVectorBytes / sizeof(scalar_t);
}

// kCount consecutive elements held in registers. When they span whole 16-byte words the pack is
// 16-byte aligned, so copying it from an aligned address compiles to 128-bit loads and stores.
template <typename T, int kCount>
struct Pack {
  static constexpr bool kWordwise = (kCount * sizeof(T)) % kVectorBytes == 0;
  alignas(kWordwise ? kVectorBytes : alignof(T)) T value[kCount];
};

// `source` must be 16-byte aligned when the pack is wordwise (the launcher checks it).
template <int kCount, typename T>
__device__ __forceinline__ Pack<T, kCount> load_pack(const T* source) {
  return *reinterpret_cast<const Pack<T, kCount>*>(source);
}

template <int kCount, typename T>
__device__ __forceinline__ void store_pack(T* destination, const Pack<T, kCount>& pack) {
  *reinterpret_cast<Pack<T, kCount>*>(destination) = pack;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// body(row, column) for this thread's packs: column = kVec·pack over the packs of a row (x), row over the
// rows (y), both striding over the grid.
template <int kVec, typename Body>
__device__ __forceinline__ void for_each_pack(int64_t rows, int64_t hidden, const Body& body) {
  const int64_t packs_per_row = hidden / kVec;
  for (int64_t pack = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; pack < packs_per_row;
       pack += int64_t(gridDim.x) * blockDim.x) {
    const int64_t column = pack * kVec;
    for (int64_t row = int64_t(blockIdx.y) * blockDim.y + threadIdx.y; row < rows;
         row += int64_t(gridDim.y) * blockDim.y) {
      body(row, column);
    }
  }
}

struct LaunchShape {
  dim3 grid;
  dim3 block;
};

// Threads along x cover a row's packs; when a row has fewer packs than a block has threads, the
// remaining threads of the block take further rows (y), so small H does not leave most lanes idle.
inline LaunchShape launch_shape(int64_t rows, int64_t packs_per_row) {
  int64_t threads_x = 32;
  while (threads_x < kThreadsPerBlock && threads_x < packs_per_row) threads_x *= 2;
  const int64_t threads_y = kThreadsPerBlock / threads_x;
  const int64_t blocks_x = ceil_div(packs_per_row, threads_x);  // packs_per_row <= H: within gridDim.x
  const int64_t blocks_y = std::min(ceil_div(rows, threads_y), kMaxGridY);
  return {dim3(static_cast<unsigned>(blocks_x), static_cast<unsigned>(blocks_y)),
          dim3(static_cast<unsigned>(threads_x), static_cast<unsigned>(threads_y))};
}

// Vector accesses need every row of every tensor to start on a 16-byte boundary: H a multiple of V
// (rows of H, 3H and 4H elements) and 16-byte aligned base pointers. nullptr counts as aligned.
inline bool vector_aligned(std::initializer_list<const void*> pointers) {
  for (const void* pointer : pointers) {
    if (reinterpret_cast<std::uintptr_t>(pointer) % kVectorBytes != 0) return false;
  }
  return true;
}

// One pointwise pass over rows × H: launch(std::integral_constant<int, V>(), shape) with V the vector width
// of scalar_t where vector_aligned allows it (H a multiple of V, every pointer aligned), else V = 1; nothing
// for an empty step.
template <typename scalar_t, typename Launch>
void launch_vector_or_scalar(int64_t rows, int64_t hidden, std::initializer_list<const void*> pointers,
                             const Launch& launch) {
  constexpr int kVec = vector_width<scalar_t>();
  if (rows == 0 || hidden == 0) return;
  if (hidden % kVec == 0 && vector_aligned(pointers)) {
    launch(std::integral_constant<int, kVec>(), launch_shape(rows, hidden / kVec));
  } else {
    launch(std::integral_constant<int, 1>(), launch_shape(rows, hidden));
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace fused_lstm
