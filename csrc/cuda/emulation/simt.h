// A host emulation of the CUDA execution model, so that the kernels in csrc/cuda/ run (and are tested)
// on a machine without a GPU. The same kernel sources that nvcc compiles are compiled by the host compiler
// with this header in place of the CUDA runtime (device_runtime.cuh picks it when FUSED_LSTM_CUDA_EMULATION
// is defined); nothing in the kernels is written for it, except that they launch through
// device_runtime.cuh's helpers and declare dynamic shared memory with FL_DYNAMIC_SHARED_MEMORY.
//
// What it provides: threadIdx/blockIdx/blockDim/gridDim, __syncthreads, warp shuffles and votes,
// cooperative-groups grid sync, atomics, dynamic shared memory, the load/store cache hints (__ldg, __ldcg,
// ...), the fast-math intrinsics, min/max, and the vector types. c10::Half/c10::BFloat16 work on the host
// as they are.
//
// How it runs a launch (simt.cpp): every CUDA thread is a fiber with its own stack. A fiber runs until it
// reaches a barrier (__syncthreads, a warp shuffle or vote, grid sync) or ends; the scheduler then picks
// the next fiber AT RANDOM among those ready (seeded per launch), so a kernel that relies on an order
// threads happen to run in, or that misses a barrier, reads another thread's data too early and gives a
// wrong answer instead of a lucky one. Barriers have CUDA's semantics: __syncthreads waits for every
// thread of the block that has not exited, a shuffle for the 32 lanes of the warp, grid sync for every
// thread of the grid (cooperative launches only). Blocks of an ordinary launch run one after another in a
// random order; the blocks of a cooperative launch all run at once.
//
// It enforces a real launch's limits and raises (a c10::Error) on a violation: at most 1024 threads per
// block (x, y <= 1024, z <= 64), grid.y and grid.z <= 65535; dynamic shared memory above 48 KB only after
// the kernel opted in (allow_dynamic_shared_memory) and never above the sm_90 opt-in maximum (227 KB);
// a cooperative grid no larger than what co-resides on the emulated device's multiprocessors at the
// kernel's occupancy (threads and shared memory per SM; registers are not emulated). Dynamic shared memory
// starts filled with 0xFF bytes (NaN as floats), never zeros. A deadlock (every live thread waiting on a
// barrier that cannot complete) raises too.
//
// Sanitizers: built with -fsanitize=address (FUSED_LSTM_EMULATION_ASAN) the fiber switches are announced
// to AddressSanitizer; with -fsanitize=thread on the kernels (FUSED_LSTM_EMULATION_TSAN on the runtime,
// which itself is not instrumented) every fiber is a ThreadSanitizer fiber, switched without implied
// synchronisation, and only the barriers, the launch and the end of a launch order fibers: a data race
// between CUDA threads is a ThreadSanitizer report.
#pragma once

#include <c10/util/Exception.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// Static __shared__ variables are not emulated (the kernels use dynamic shared memory only).
#define __shared__ static_shared_memory_is_not_emulated_use_FL_DYNAMIC_SHARED_MEMORY
#define warpSize 32

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(8) uint2 {
  unsigned int x, y;
};

namespace fused_lstm_emulation {

// What a CUDA thread reads about itself; set by the scheduler before it runs the thread's fiber.
struct ThreadCoordinates {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};

// The coordinates of the CUDA thread running now (the fiber the scheduler switched to).
extern const ThreadCoordinates* current_coordinates;

// The emulated device. The defaults are an H100/H200 (sm_90): 132 SMs, 227 KB of opt-in shared memory per
// block, 228 KB per SM, 2048 threads and 32 blocks per SM.
struct DeviceProperties {
  int multiprocessors = 132;
  std::size_t shared_memory_per_block = 48 * 1024;          // without opting in
  std::size_t shared_memory_per_block_optin = 232448;       // 227 KB
  std::size_t shared_memory_per_multiprocessor = 233472;    // 228 KB
  std::size_t shared_memory_reserved_per_block = 1024;      // the runtime's own share of every block
  int max_threads_per_multiprocessor = 2048;
  int max_blocks_per_multiprocessor = 32;
  bool cooperative_launch = true;
};
const DeviceProperties& device_properties();
// Tests shrink the device (fewer SMs: more hidden units per CTA in the persistent kernel) and pick the
// seed of the thread order; the seed of each launch is derived from it and the launch count.
void configure(int multiprocessors, std::uint64_t seed);
// Launches (all, and cooperative ones) since the library loaded: tests check that a kernel really ran.
std::int64_t launch_count();
std::int64_t cooperative_launch_count();

// Runs `body` once per CUDA thread of the grid, as fibers (see the top of this file). `kernel` identifies
// the kernel for its shared-memory opt-in.
void run_grid(const void* kernel, dim3 grid, dim3 block, std::size_t dynamic_shared_bytes, bool cooperative,
              const std::function<void()>& body);
void allow_dynamic_shared_memory(const void* kernel, std::size_t bytes);
// Blocks of `kernel` that fit on one SM at once: by threads and by shared memory (registers are not emulated);
// 0 when the shared memory needs an opt-in the kernel has not made.
int max_active_blocks_per_multiprocessor(const void* kernel, int threads_per_block, std::size_t dynamic_shared_bytes);

// Inside a fiber.
unsigned char* dynamic_shared_memory();
void block_barrier();
void grid_barrier();
// Every lane of the calling warp passes `value`; returns the 32 values of this round, lane by lane
// (valid until the calling lane's next exchange). All 32 lanes must take part (full mask).
const std::uint64_t* warp_exchange(unsigned int mask, std::uint64_t value);
int lane_id();

template <typename T>
std::uint64_t to_bits(T value) {
  static_assert(sizeof(T) <= sizeof(std::uint64_t), "warp exchanges carry at most 8 bytes");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  return bits;
}

template <typename T>
T from_bits(std::uint64_t bits) {
  T value;
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

// Lane `source` of a group of `width` lanes (CUDA's rule: out-of-range sources read the caller's own value).
template <typename T>
T shuffle_from(unsigned int mask, T var, int source, int width) {
  const std::uint64_t* lanes = warp_exchange(mask, to_bits(var));
  const int lane = lane_id();
  const int group = lane / width * width;
  if (source < 0 || source >= width) source = lane - group;
  return from_bits<T>(lanes[group + source]);
}

}  // namespace fused_lstm_emulation

#define threadIdx (::fused_lstm_emulation::current_coordinates->thread_idx)
#define blockIdx (::fused_lstm_emulation::current_coordinates->block_idx)
#define blockDim (::fused_lstm_emulation::current_coordinates->block_dim)
#define gridDim (::fused_lstm_emulation::current_coordinates->grid_dim)

inline void __syncthreads() { ::fused_lstm_emulation::block_barrier(); }
inline void __syncwarp(unsigned int mask = 0xffffffffu) { ::fused_lstm_emulation::warp_exchange(mask, 0); }
// Memory fences order a thread's own accesses; in a sequential emulation they always are.
inline void __threadfence() {}
inline void __threadfence_block() {}

template <typename T>
T __shfl_sync(unsigned int mask, T var, int source_lane, int width = warpSize) {
  return ::fused_lstm_emulation::shuffle_from(mask, var, source_lane % width, width);
}
template <typename T>
T __shfl_xor_sync(unsigned int mask, T var, int lane_mask, int width = warpSize) {
  const int lane = ::fused_lstm_emulation::lane_id() % width;
  return ::fused_lstm_emulation::shuffle_from(mask, var, lane ^ lane_mask, width);
}
template <typename T>
T __shfl_up_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize) {
  const int lane = ::fused_lstm_emulation::lane_id() % width;
  return ::fused_lstm_emulation::shuffle_from(mask, var, lane - static_cast<int>(delta) < 0 ? lane : lane - static_cast<int>(delta), width);
}
template <typename T>
T __shfl_down_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize) {
  const int lane = ::fused_lstm_emulation::lane_id() % width;
  const int source = lane + static_cast<int>(delta);
  return ::fused_lstm_emulation::shuffle_from(mask, var, source >= width ? lane : source, width);
}
inline unsigned int __ballot_sync(unsigned int mask, int predicate) {
  const std::uint64_t* lanes = ::fused_lstm_emulation::warp_exchange(mask, predicate != 0);
  unsigned int ballot = 0;
  for (int lane = 0; lane < 32; ++lane) ballot |= (lanes[lane] != 0 ? 1u : 0u) << lane;
  return ballot & mask;
}
inline int __any_sync(unsigned int mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned int mask, int predicate) { return __ballot_sync(mask, predicate) == mask; }

namespace cooperative_groups {
struct grid_group {
  void sync() const { ::fused_lstm_emulation::grid_barrier(); }
};
inline grid_group this_grid() { return {}; }
}  // namespace cooperative_groups

// Cache hints change nothing on the host.
template <typename T>
T __ldg(const T* address) {
  return *address;
}
template <typename T>
T __ldcg(const T* address) {
  return *address;
}
template <typename T>
T __ldca(const T* address) {
  return *address;
}
template <typename T>
T __ldcs(const T* address) {
  return *address;
}
template <typename T>
void __stcg(T* address, T value) {
  *address = value;
}
template <typename T>
void __stcs(T* address, T value) {
  *address = value;
}

// Atomics: sequential here, but real atomics so that ThreadSanitizer sees them as such.
template <typename T>
T emulated_atomic_update(T* address, const std::function<T(T)>& update) {
  using Bits = std::conditional_t<sizeof(T) == 8, std::uint64_t, std::uint32_t>;
  static_assert(sizeof(T) == sizeof(Bits), "atomics on 4- and 8-byte values");
  Bits* word = reinterpret_cast<Bits*>(address);
  Bits expected = __atomic_load_n(word, __ATOMIC_RELAXED);
  while (true) {
    T old_value;
    std::memcpy(&old_value, &expected, sizeof(T));
    const T new_value = update(old_value);
    Bits desired;
    std::memcpy(&desired, &new_value, sizeof(T));
    if (__atomic_compare_exchange_n(word, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
      return old_value;
    }
  }
}
template <typename T>
T atomicAdd(T* address, T value) {
  return emulated_atomic_update<T>(address, [value](T old) { return static_cast<T>(old + value); });
}
template <typename T>
T atomicSub(T* address, T value) {
  return emulated_atomic_update<T>(address, [value](T old) { return static_cast<T>(old - value); });
}
template <typename T>
T atomicMax(T* address, T value) {
  return emulated_atomic_update<T>(address, [value](T old) { return old < value ? value : old; });
}
template <typename T>
T atomicMin(T* address, T value) {
  return emulated_atomic_update<T>(address, [value](T old) { return value < old ? value : old; });
}
template <typename T>
T atomicExch(T* address, T value) {
  return emulated_atomic_update<T>(address, [value](T) { return value; });
}
template <typename T>
T atomicCAS(T* address, T compare, T value) {
  return emulated_atomic_update<T>(address, [compare, value](T old) { return old == compare ? value : old; });
}

// min/max as CUDA's device overloads provide them (same types on both sides).
template <typename T>
constexpr T min(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
constexpr T max(T a, T b) {
  return a < b ? b : a;
}

// Fast-math intrinsics, at full precision on the host.
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
