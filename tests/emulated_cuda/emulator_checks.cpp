// Checks of the CUDA emulation itself (csrc/cuda/emulation/simt.h) with small kernels of its own: that it
// keeps CUDA's limits and barrier semantics, and that it runs threads in an order that exposes a missing
// barrier. Prints one line per check and exits 1 if any fails.
#include "device_runtime.cuh"

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace {

using fused_lstm::cuda::allow_dynamic_shared_memory;
using fused_lstm::cuda::launch_cooperative_kernel;
using fused_lstm::cuda::launch_kernel;
using fused_lstm::cuda::max_active_blocks_per_multiprocessor;

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) ++failures;
  std::printf("%-4s %s\n", ok ? "ok" : "FAIL", what.c_str());
}

// True when `launch` raises a c10::Error whose message contains `expected`.
void check_raises(const std::function<void()>& launch, const std::string& expected, const std::string& what) {
  try {
    launch();
  } catch (const c10::Error& error) {
    const bool matches = std::string(error.what()).find(expected) != std::string::npos;
    check(matches, what + (matches ? "" : std::string(" (raised: ") + error.what() + ")"));
    return;
  }
  check(false, what + " (did not raise)");
}

__global__ void write_thread_index(int* out) {
  const int thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  out[block * blockDim.x * blockDim.y * blockDim.z + thread] = thread;
}

// Thread 0 fills the block's shared memory, then every thread reads its own element: correct only with the
// barrier in between.
__global__ void broadcast_through_shared(int* out, bool with_barrier) {
  FL_DYNAMIC_SHARED_MEMORY(shared_memory);
  int* values = reinterpret_cast<int*>(shared_memory);
  if (threadIdx.x == 0) {
    for (unsigned i = 0; i < blockDim.x; ++i) values[i] = 7;
  }
  if (with_barrier) __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = values[threadIdx.x];
}

__global__ void first_shared_word(unsigned int* out) {
  FL_DYNAMIC_SHARED_MEMORY(shared_memory);
  if (threadIdx.x == 0) *out = reinterpret_cast<unsigned int*>(shared_memory)[0];
}

__global__ void warp_sums(float* out) {
  float value = static_cast<float>(threadIdx.x);
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  float down = static_cast<float>(threadIdx.x);
  down = __shfl_down_sync(0xffffffffu, down, 1);
  const unsigned int ballot = __ballot_sync(0xffffffffu, threadIdx.x % 2 == 0);
  out[threadIdx.x * 3] = value;
  out[threadIdx.x * 3 + 1] = down;
  out[threadIdx.x * 3 + 2] = static_cast<float>(ballot == 0x55555555u);
}

// Each block adds one to a counter, the grid syncs, and every block reads the total.
__global__ void count_blocks(int* counter, int* seen) {
  if (threadIdx.x == 0) atomicAdd(counter, 1);
  cooperative_groups::this_grid().sync();
  if (threadIdx.x == 0) seen[blockIdx.x] = *counter;
}

__global__ void grid_sync_only(int* /*unused*/) { cooperative_groups::this_grid().sync(); }

// Half the block waits in grid sync, the other half at __syncthreads: neither can complete.
__global__ void mismatched_barriers(int* /*unused*/) {
  if (threadIdx.x < 32) {
    cooperative_groups::this_grid().sync();
  } else {
    __syncthreads();
  }
}

__global__ void early_exit_then_barrier(int* out) {
  if (threadIdx.x >= 48) return;  // exited threads no longer count at __syncthreads
  __syncthreads();
  out[threadIdx.x] = 1;
}

}  // namespace

int main() {
  try {
    // Coordinates: every thread of a 3-D block and grid writes its own index once.
    {
      std::vector<int> out(2 * 3 * 4 * 2 * 3, -1);
      launch_kernel(&write_thread_index, dim3(2, 3), dim3(4, 2, 3), 0, out.data());
      bool ok = true;
      for (std::size_t i = 0; i < out.size(); ++i) ok = ok && out[i] == static_cast<int>(i % 24);
      check(ok, "threadIdx/blockIdx/blockDim/gridDim cover a 3-D block and grid exactly once");
    }
    // Shared memory: with the barrier always right; without it, wrong under the shuffled thread order.
    {
      std::vector<int> out(4 * 64);
      launch_kernel(&broadcast_through_shared, dim3(4), dim3(64), 64 * sizeof(int), out.data(), true);
      bool ok = true;
      for (int value : out) ok = ok && value == 7;
      check(ok, "__syncthreads orders thread 0's shared-memory writes before the other threads' reads");
      int wrong = 0;
      for (int launch = 0; launch < 8; ++launch) {
        launch_kernel(&broadcast_through_shared, dim3(4), dim3(64), 64 * sizeof(int), out.data(), false);
        for (int value : out) wrong += value != 7;
      }
      check(wrong > 0, "without the barrier, threads read shared memory before thread 0 wrote it (" +
                           std::to_string(wrong) + " of " + std::to_string(8 * 4 * 64) + " reads)");
      unsigned int word = 0;
      launch_kernel(&first_shared_word, dim3(1), dim3(32), 16, &word);
      check(word == 0xFFFFFFFFu, "dynamic shared memory starts as 0xFF bytes, not zeros");
    }
    // Warp shuffles and votes.
    {
      std::vector<float> out(32 * 3);
      launch_kernel(&warp_sums, dim3(1), dim3(32), 0, out.data());
      bool sums = true, downs = true, ballots = true;
      for (int lane = 0; lane < 32; ++lane) {
        sums = sums && out[lane * 3] == 496.0f;
        downs = downs && out[lane * 3 + 1] == static_cast<float>(lane < 31 ? lane + 1 : lane);
        ballots = ballots && out[lane * 3 + 2] == 1.0f;
      }
      check(sums, "__shfl_xor_sync butterfly gives every lane the warp's sum");
      check(downs, "__shfl_down_sync reads lane + delta, the last lane its own value");
      check(ballots, "__ballot_sync collects every lane's predicate");
    }
    // Grid sync in a cooperative launch; refused elsewhere.
    {
      int counter = 0;
      std::vector<int> seen(6, 0);
      launch_cooperative_kernel(&count_blocks, dim3(6), dim3(64), 0, &counter, seen.data());
      bool ok = true;
      for (int value : seen) ok = ok && value == 6;
      check(ok, "grid sync: every block sees every block's atomicAdd");
      check_raises([] { launch_kernel(&grid_sync_only, dim3(2), dim3(32), 0, nullptr); },
                   "grid sync in a launch that is not cooperative", "grid sync in an ordinary launch raises");
    }
    // Barrier semantics.
    {
      check_raises([] { launch_cooperative_kernel(&mismatched_barriers, dim3(1), dim3(64), 0, nullptr); },
                   "deadlock", "threads waiting at barriers that cannot complete are a deadlock, and raise");
      std::vector<int> out(64, 0);
      launch_kernel(&early_exit_then_barrier, dim3(1), dim3(64), 0, out.data());
      check(out[0] == 1 && out[47] == 1 && out[48] == 0, "threads that exited do not count at __syncthreads");
    }
    // Launch limits.
    {
      std::vector<int> out(2048);
      check_raises([&] { launch_kernel(&write_thread_index, dim3(1), dim3(1025), 0, out.data()); },
                   "exceeds the per-dimension limits", "a block of 1025 threads raises");
      check_raises([&] { launch_kernel(&write_thread_index, dim3(1), dim3(32, 32, 2), 0, out.data()); },
                   "more than 1024", "a block of 32x32x2 threads raises");
      check_raises([&] { launch_kernel(&write_thread_index, dim3(1, 65536), dim3(1), 0, out.data()); },
                   "exceeds (2^31 - 1, 65535, 65535)", "a grid.y of 65536 raises");
      check_raises([&] { launch_kernel(&broadcast_through_shared, dim3(1), dim3(64), 64 * 1024, out.data(), true); },
                   "need the kernel's opt-in", "64 KB of dynamic shared memory without the opt-in raises");
      allow_dynamic_shared_memory(&broadcast_through_shared, 64 * 1024);
      launch_kernel(&broadcast_through_shared, dim3(1), dim3(64), 64 * 1024, out.data(), true);
      check(out[63] == 7, "64 KB of dynamic shared memory after the opt-in runs");
      check_raises([] { allow_dynamic_shared_memory(&broadcast_through_shared, 240 * 1024); },
                   "exceed the device's opt-in maximum", "opting in to 240 KB (above sm_90's 227 KB) raises");
      // 200 KB of shared memory: one block per SM, so no more co-resident blocks than SMs.
      allow_dynamic_shared_memory(&count_blocks, 200 * 1024);
      const int per_sm = max_active_blocks_per_multiprocessor(&count_blocks, 256, 200 * 1024);
      check(per_sm == 1, "occupancy: one 200 KB block per SM");
      const int sms = fused_lstm_emulation::device_properties().multiprocessors;
      int counter = 0;
      std::vector<int> seen(sms + 1);
      check_raises([&] { launch_cooperative_kernel(&count_blocks, dim3(sms + 1), dim3(256), 200 * 1024, &counter,
                                                   seen.data()); },
                   "cudaErrorCooperativeLaunchTooLarge", "a cooperative grid of one block more than can co-reside raises");
    }
  } catch (const std::exception& error) {
    std::printf("FAIL: unexpected exception: %s\n", error.what());
    return 1;
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "passed", failures);
  return failures ? 1 : 0;
}
