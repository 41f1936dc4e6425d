// The runtime of the host emulation of CUDA (see simt.h): fibers, the random scheduler, barriers, warp
// exchanges and the launch checks. It runs on the calling OS thread; one launch at a time per process.
#include "simt.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#if defined(FUSED_LSTM_EMULATION_TSAN)
#include <sanitizer/tsan_interface.h>
#endif
#if defined(FUSED_LSTM_EMULATION_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__x86_64__)
// Saves the callee-saved registers, the SSE and x87 control words and the stack pointer of the running
// context in *save_sp, and resumes the context whose stack pointer is load_sp (System V x86-64).
extern "C" void fused_lstm_emulation_switch_context(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl fused_lstm_emulation_switch_context
  .hidden fused_lstm_emulation_switch_context
  .type fused_lstm_emulation_switch_context, @function
fused_lstm_emulation_switch_context:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fused_lstm_emulation_switch_context, .-fused_lstm_emulation_switch_context
)");
#else
#include <ucontext.h>
#endif

namespace fused_lstm_emulation {

const ThreadCoordinates* current_coordinates = nullptr;

namespace {

constexpr int kWarpSize = 32;
constexpr std::size_t kMaxThreadsPerBlock = 1024;
constexpr std::size_t kStackBytes = 256 * 1024;  // per CUDA thread; mapped lazily (only touched pages count)

struct Fiber;

// A barrier: __syncthreads of a block, the exchanges of a warp, or grid sync.
struct SyncPoint {
  int arrived = 0;
  int generation = 0;  // completed rounds; a warp's exchange slots alternate by its parity
  std::vector<Fiber*> waiting;
  // ThreadSanitizer sync objects of alternate rounds: a thread arriving at round g+1 must not hand its
  // later accesses to a thread still leaving round g.
  char tsan_objects[2] = {0, 0};
};

struct Warp {
  SyncPoint sync;
  int live = 0;  // lanes that have not exited
  std::uint64_t lanes[2][kWarpSize] = {};
};

struct Block {
  int live = 0;
  SyncPoint sync;
  std::vector<Warp> warps;
  std::unique_ptr<unsigned char[]> shared;  // exactly the launch's dynamic shared bytes
};

enum class FiberState { kReady, kWaiting, kDone };

struct Fiber {
  unsigned char* stack_bottom = nullptr;  // in a StackSlab
  std::size_t stack_size = 0;
  void* stack_pointer = nullptr;
#if !defined(__x86_64__)
  ucontext_t context;
#endif
  ThreadCoordinates coordinates{};
  Block* block = nullptr;
  int linear = 0;  // thread index within the block
  FiberState state = FiberState::kDone;
  void* tsan_fiber = nullptr;
  void* asan_fake_stack = nullptr;

#if defined(FUSED_LSTM_EMULATION_TSAN)
  ~Fiber() {
    if (tsan_fiber != nullptr) __tsan_destroy_fiber(tsan_fiber);
  }
#endif
};

// The stacks of kFibersPerSlab fibers in one mapping: a mapping (and with guard pages, two) per fiber would
// exhaust the process's map count (vm.max_map_count) at the tens of thousands of threads of a cooperative
// grid. Instead each stack ends in a canary word, checked after every launch.
constexpr std::size_t kFibersPerSlab = 256;
constexpr std::uint64_t kStackCanary = 0xdeadbeefcafef00dULL;
struct StackSlab {
  unsigned char* memory = nullptr;
  StackSlab() {
    void* mapping = mmap(nullptr, kFibersPerSlab * kStackBytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    TORCH_CHECK(mapping != MAP_FAILED, "CUDA emulation: could not map thread stacks");
    memory = static_cast<unsigned char*>(mapping);
  }
  ~StackSlab() { munmap(memory, kFibersPerSlab * kStackBytes); }
};

// One scheduling unit: a block of an ordinary launch, or every block of a cooperative one.
struct Launch {
  const std::function<void()>* body = nullptr;
  std::vector<Block> blocks;
  std::vector<Fiber*> ready;
  std::mt19937_64 random;
  int live = 0;
  bool cooperative = false;
  SyncPoint grid;
  std::exception_ptr error;
  Fiber* running = nullptr;
  void* scheduler_stack_pointer = nullptr;
#if !defined(__x86_64__)
  ucontext_t scheduler_context;
#endif
  char tsan_launch = 0;  // released by the scheduler before the threads start, acquired by each
  char tsan_done = 0;    // released by each thread as it ends, acquired by the scheduler after the launch
  void* tsan_scheduler = nullptr;
  void* asan_scheduler_fake_stack = nullptr;
  const void* asan_scheduler_bottom = nullptr;
  std::size_t asan_scheduler_size = 0;
};

std::mutex launch_mutex;  // one launch at a time: the emulated device has one stream
Launch* active_launch = nullptr;
DeviceProperties properties;
std::uint64_t seed = 0x5eedf00dULL;
std::int64_t launches = 0;
std::int64_t cooperative_launches = 0;
std::map<const void*, std::size_t> shared_memory_optin;  // kernel -> bytes it opted in to
std::vector<std::unique_ptr<Fiber>> fiber_pool;
std::vector<std::unique_ptr<StackSlab>> stack_slabs;

// Grows the pool to `count` fibers, each with a stack.
void reserve_fibers(std::size_t count) {
  while (fiber_pool.size() < count) {
    const std::size_t index = fiber_pool.size();
    if (index % kFibersPerSlab == 0) stack_slabs.push_back(std::make_unique<StackSlab>());
    auto fiber = std::make_unique<Fiber>();
    fiber->stack_bottom = stack_slabs.back()->memory + (index % kFibersPerSlab) * kStackBytes;
    fiber->stack_size = kStackBytes;
#if defined(FUSED_LSTM_EMULATION_TSAN)
    fiber->tsan_fiber = __tsan_create_fiber(0);
#endif
    fiber_pool.push_back(std::move(fiber));
  }
}

[[noreturn]] void fiber_main();

Launch& running_launch(const char* what) {
  TORCH_CHECK(active_launch != nullptr && active_launch->running != nullptr, "CUDA emulation: ", what,
              " called outside a kernel");
  return *active_launch;
}

void prepare_fiber(Fiber& fiber) {
#if defined(FUSED_LSTM_EMULATION_ASAN)
  // The previous thread on this stack never returned from fiber_main: its frames' redzones are still poisoned.
  __asan_unpoison_memory_region(fiber.stack_bottom, fiber.stack_size);
#endif
  fiber.asan_fake_stack = nullptr;
  std::memcpy(fiber.stack_bottom, &kStackCanary, sizeof(kStackCanary));
#if defined(__x86_64__)
  // The frame fused_lstm_emulation_switch_context pops: control words, r15..r12, rbx, rbp, then the
  // address it returns to (fiber_main), entered with the stack aligned as after a call.
  auto top = reinterpret_cast<std::uint64_t*>(
      reinterpret_cast<std::uintptr_t>(fiber.stack_bottom + fiber.stack_size) & ~std::uintptr_t(15));
  std::uint64_t* sp = top;
  *--sp = 0;
  *--sp = reinterpret_cast<std::uint64_t>(&fiber_main);
  for (int saved = 0; saved < 6; ++saved) *--sp = 0;
  std::uint32_t mxcsr = 0;
  std::uint16_t x87_control = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(x87_control));
  *--sp = mxcsr | (static_cast<std::uint64_t>(x87_control) << 32);
  fiber.stack_pointer = sp;
#else
  getcontext(&fiber.context);
  fiber.context.uc_stack.ss_sp = fiber.stack_bottom;
  fiber.context.uc_stack.ss_size = fiber.stack_size;
  fiber.context.uc_link = nullptr;
  makecontext(&fiber.context, reinterpret_cast<void (*)()>(&fiber_main), 0);
#endif
}

// Scheduler -> fiber; returns when the fiber waits at a barrier or ends.
void switch_to(Launch& launch, Fiber& fiber) {
  launch.running = &fiber;
  current_coordinates = &fiber.coordinates;
#if defined(FUSED_LSTM_EMULATION_TSAN)
  __tsan_switch_to_fiber(fiber.tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(FUSED_LSTM_EMULATION_ASAN)
  __sanitizer_start_switch_fiber(&launch.asan_scheduler_fake_stack, fiber.stack_bottom, fiber.stack_size);
#endif
#if defined(__x86_64__)
  fused_lstm_emulation_switch_context(&launch.scheduler_stack_pointer, fiber.stack_pointer);
#else
  swapcontext(&launch.scheduler_context, &fiber.context);
#endif
#if defined(FUSED_LSTM_EMULATION_ASAN)
  __sanitizer_finish_switch_fiber(launch.asan_scheduler_fake_stack, nullptr, nullptr);
#endif
  launch.running = nullptr;
  current_coordinates = nullptr;
}

// Fiber -> scheduler; returns when the scheduler resumes this fiber (never when it has ended).
void switch_to_scheduler(Launch& launch, Fiber& fiber, bool ending) {
#if defined(FUSED_LSTM_EMULATION_TSAN)
  __tsan_switch_to_fiber(launch.tsan_scheduler, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(FUSED_LSTM_EMULATION_ASAN)
  __sanitizer_start_switch_fiber(ending ? nullptr : &fiber.asan_fake_stack, launch.asan_scheduler_bottom,
                                 launch.asan_scheduler_size);
#else
  (void)ending;
#endif
#if defined(__x86_64__)
  fused_lstm_emulation_switch_context(&fiber.stack_pointer, launch.scheduler_stack_pointer);
#else
  swapcontext(&fiber.context, &launch.scheduler_context);
#endif
#if defined(FUSED_LSTM_EMULATION_ASAN)
  __sanitizer_finish_switch_fiber(fiber.asan_fake_stack, &launch.asan_scheduler_bottom,
                                  &launch.asan_scheduler_size);
#endif
}

void release_waiting(Launch& launch, SyncPoint& sync) {
  for (Fiber* fiber : sync.waiting) {
    fiber->state = FiberState::kReady;
    launch.ready.push_back(fiber);
  }
  sync.waiting.clear();
  sync.arrived = 0;
  ++sync.generation;
}

// The running thread arrives at `sync`, which completes once `expected` threads have arrived; returns when
// it has completed (the thread is then scheduled again in random order with the others).
void arrive_and_wait(Launch& launch, SyncPoint& sync, int expected) {
  Fiber& fiber = *launch.running;
  const int generation = sync.generation;
#if defined(FUSED_LSTM_EMULATION_TSAN)
  __tsan_release(&sync.tsan_objects[generation & 1]);
#endif
  ++sync.arrived;
  sync.waiting.push_back(&fiber);
  fiber.state = FiberState::kWaiting;
  if (sync.arrived >= expected) release_waiting(launch, sync);
  switch_to_scheduler(launch, fiber, /*ending=*/false);
#if defined(FUSED_LSTM_EMULATION_TSAN)
  __tsan_acquire(&sync.tsan_objects[generation & 1]);
#else
  (void)generation;
#endif
}

void fail(Launch& launch, const char* message) {
  if (launch.error) return;
  try {
    TORCH_CHECK(false, message);
  } catch (...) {
    launch.error = std::current_exception();
  }
}

// The running thread has returned from the kernel (or thrown).
void end_thread(Launch& launch, Fiber& fiber) {
  fiber.state = FiberState::kDone;
  Block& block = *fiber.block;
  Warp& warp = block.warps[fiber.linear / kWarpSize];
  if (warp.sync.arrived > 0) fail(launch, "CUDA emulation: a lane exited while its warp waits in a shuffle or vote");
  if (launch.grid.arrived > 0) fail(launch, "CUDA emulation: a thread exited while the grid waits in grid sync");
  --warp.live;
  --block.live;
  --launch.live;
  // Exited threads no longer count at __syncthreads (as on sm_70 and later).
  if (block.sync.arrived > 0 && block.sync.arrived >= block.live) release_waiting(launch, block.sync);
}

[[noreturn]] void fiber_main() {
  Launch& launch = *active_launch;
  Fiber& fiber = *launch.running;
#if defined(FUSED_LSTM_EMULATION_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &launch.asan_scheduler_bottom, &launch.asan_scheduler_size);
#endif
#if defined(FUSED_LSTM_EMULATION_TSAN)
  __tsan_acquire(&launch.tsan_launch);
#endif
  try {
    (*launch.body)();
  } catch (...) {
    if (!launch.error) launch.error = std::current_exception();
  }
  end_thread(launch, fiber);
#if defined(FUSED_LSTM_EMULATION_TSAN)
  __tsan_release(&launch.tsan_done);
#endif
  switch_to_scheduler(launch, fiber, /*ending=*/true);
  std::abort();  // an ended fiber is never resumed
}

// Runs every thread of `launch` to its end, in random order between barriers.
void schedule(Launch& launch) {
  active_launch = &launch;
#if defined(FUSED_LSTM_EMULATION_TSAN)
  launch.tsan_scheduler = __tsan_get_current_fiber();
  __tsan_release(&launch.tsan_launch);
#endif
  while (!launch.ready.empty() && !launch.error) {
    std::uniform_int_distribution<std::size_t> pick(0, launch.ready.size() - 1);
    const std::size_t index = pick(launch.random);
    Fiber* fiber = launch.ready[index];
    launch.ready[index] = launch.ready.back();
    launch.ready.pop_back();
    switch_to(launch, *fiber);
  }
#if defined(FUSED_LSTM_EMULATION_TSAN)
  __tsan_acquire(&launch.tsan_done);
#endif
  active_launch = nullptr;
  if (launch.error) std::rethrow_exception(launch.error);
  TORCH_CHECK(launch.live == 0, "CUDA emulation: deadlock: ", launch.live,
              " threads wait at barriers that cannot complete (a __syncthreads or shuffle not reached by every "
              "thread, or grid sync in a launch that is not cooperative)");
}

// Builds the fibers of the given blocks (linear block indices) and runs them as one scheduling unit.
void run_blocks(const std::function<void()>& body, dim3 grid, dim3 block_dim, std::size_t shared_bytes,
                bool cooperative, const std::vector<std::int64_t>& block_indices, std::uint64_t launch_seed) {
  const int threads = static_cast<int>(block_dim.x * block_dim.y * block_dim.z);
  const std::size_t fibers_needed = block_indices.size() * static_cast<std::size_t>(threads);
  reserve_fibers(fibers_needed);

  Launch launch;
  launch.body = &body;
  launch.cooperative = cooperative;
  launch.random.seed(launch_seed);
  launch.blocks.resize(block_indices.size());
  launch.ready.reserve(fibers_needed);
  launch.grid.waiting.reserve(fibers_needed);
  std::size_t next_fiber = 0;
  for (std::size_t b = 0; b < block_indices.size(); ++b) {
    Block& block = launch.blocks[b];
    block.live = threads;
    // Every list a barrier fills while threads run is reserved here: a reallocation's memmove, called from
    // a fiber, would look to ThreadSanitizer like an access racing with the other fibers.
    block.sync.waiting.reserve(threads);
    block.warps.resize((threads + kWarpSize - 1) / kWarpSize);
    for (std::size_t w = 0; w < block.warps.size(); ++w) {
      block.warps[w].live = std::min(kWarpSize, threads - static_cast<int>(w) * kWarpSize);
      block.warps[w].sync.waiting.reserve(kWarpSize);
    }
    if (shared_bytes > 0) {
      block.shared.reset(new unsigned char[shared_bytes]);
      std::memset(block.shared.get(), 0xFF, shared_bytes);  // never zeros: a kernel must initialise it
    }
    const std::int64_t linear_block = block_indices[b];
    const uint3 block_idx{static_cast<unsigned>(linear_block % grid.x),
                          static_cast<unsigned>(linear_block / grid.x % grid.y),
                          static_cast<unsigned>(linear_block / grid.x / grid.y)};
    for (int t = 0; t < threads; ++t) {
      Fiber& fiber = *fiber_pool[next_fiber++];
      prepare_fiber(fiber);
      fiber.coordinates.thread_idx = {static_cast<unsigned>(t % block_dim.x),
                                      static_cast<unsigned>(t / block_dim.x % block_dim.y),
                                      static_cast<unsigned>(t / block_dim.x / block_dim.y)};
      fiber.coordinates.block_idx = block_idx;
      fiber.coordinates.block_dim = block_dim;
      fiber.coordinates.grid_dim = grid;
      fiber.block = &block;
      fiber.linear = t;
      fiber.state = FiberState::kReady;
      launch.ready.push_back(&fiber);
    }
  }
  launch.live = static_cast<int>(fibers_needed);
  schedule(launch);
  for (std::size_t f = 0; f < fibers_needed; ++f) {
    std::uint64_t canary;
    std::memcpy(&canary, fiber_pool[f]->stack_bottom, sizeof(canary));
    TORCH_CHECK(canary == kStackCanary, "CUDA emulation: a CUDA thread overflowed its ", kStackBytes, "-byte stack");
  }
}

void check_launch(const void* kernel, dim3 grid, dim3 block, std::size_t shared_bytes, bool cooperative) {
  const char* where = "CUDA emulation: invalid launch: ";
  TORCH_CHECK(block.x >= 1 && block.y >= 1 && block.z >= 1 && grid.x >= 1 && grid.y >= 1 && grid.z >= 1, where,
              "every grid and block dimension must be at least 1");
  TORCH_CHECK(block.x <= 1024 && block.y <= 1024 && block.z <= 64, where, "block (", block.x, ", ", block.y, ", ",
              block.z, ") exceeds the per-dimension limits (1024, 1024, 64)");
  TORCH_CHECK(std::size_t(block.x) * block.y * block.z <= kMaxThreadsPerBlock, where, block.x * block.y * block.z,
              " threads per block, more than 1024");
  TORCH_CHECK(grid.x <= 2147483647u && grid.y <= 65535 && grid.z <= 65535, where, "grid (", grid.x, ", ", grid.y,
              ", ", grid.z, ") exceeds (2^31 - 1, 65535, 65535)");
  if (shared_bytes > properties.shared_memory_per_block) {
    const auto optin = shared_memory_optin.find(kernel);
    TORCH_CHECK(optin != shared_memory_optin.end() && optin->second >= shared_bytes, where, shared_bytes,
                " bytes of dynamic shared memory need the kernel's opt-in (cudaFuncAttributeMaxDynamicSharedMemorySize"
                " set to at least that), which it has not made");
  }
  TORCH_CHECK(shared_bytes <= properties.shared_memory_per_block_optin, where, shared_bytes,
              " bytes of dynamic shared memory, more than the device's opt-in maximum of ",
              properties.shared_memory_per_block_optin);
  if (cooperative) {
    TORCH_CHECK(properties.cooperative_launch, where, "the device does not support cooperative launches");
    const int threads = static_cast<int>(block.x * block.y * block.z);
    const std::int64_t resident =
        std::int64_t(max_active_blocks_per_multiprocessor(kernel, threads, shared_bytes)) * properties.multiprocessors;
    const std::int64_t blocks = std::int64_t(grid.x) * grid.y * grid.z;
    TORCH_CHECK(blocks <= resident, where, "a cooperative grid of ", blocks, " blocks, but only ", resident,
                " can be resident at once (cudaErrorCooperativeLaunchTooLarge)");
  }
}

}  // namespace

const DeviceProperties& device_properties() { return properties; }

void configure(int multiprocessors, std::uint64_t new_seed) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  TORCH_CHECK(multiprocessors >= 1, "CUDA emulation: at least one multiprocessor, got ", multiprocessors);
  properties.multiprocessors = multiprocessors;
  seed = new_seed;
}

std::int64_t launch_count() { return launches; }
std::int64_t cooperative_launch_count() { return cooperative_launches; }

void allow_dynamic_shared_memory(const void* kernel, std::size_t bytes) {
  TORCH_CHECK(bytes <= properties.shared_memory_per_block_optin, "CUDA emulation: cudaFuncSetAttribute: ", bytes,
              " bytes of dynamic shared memory exceed the device's opt-in maximum of ",
              properties.shared_memory_per_block_optin);
  std::lock_guard<std::mutex> lock(launch_mutex);
  shared_memory_optin[kernel] = bytes;
}

int max_active_blocks_per_multiprocessor(const void* kernel, int threads_per_block, std::size_t dynamic_shared_bytes) {
  if (threads_per_block < 1 || threads_per_block > static_cast<int>(kMaxThreadsPerBlock)) return 0;
  if (dynamic_shared_bytes > properties.shared_memory_per_block) {
    const auto optin = shared_memory_optin.find(kernel);
    if (optin == shared_memory_optin.end() || optin->second < dynamic_shared_bytes) return 0;
  }
  const int warps = (threads_per_block + kWarpSize - 1) / kWarpSize;
  const int by_threads = properties.max_threads_per_multiprocessor / (warps * kWarpSize);
  const int by_shared = static_cast<int>(properties.shared_memory_per_multiprocessor /
                                         (dynamic_shared_bytes + properties.shared_memory_reserved_per_block));
  return std::min({by_threads, by_shared, properties.max_blocks_per_multiprocessor});
}

void run_grid(const void* kernel, dim3 grid, dim3 block, std::size_t dynamic_shared_bytes, bool cooperative,
              const std::function<void()>& body) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  TORCH_CHECK(active_launch == nullptr, "CUDA emulation: a kernel launched from inside a kernel");
  check_launch(kernel, grid, block, dynamic_shared_bytes, cooperative);
  ++launches;
  if (cooperative) ++cooperative_launches;
  std::mt19937_64 order(seed ^ (0x9e3779b97f4a7c15ULL * static_cast<std::uint64_t>(launches)));
  const std::int64_t blocks = std::int64_t(grid.x) * grid.y * grid.z;
  std::vector<std::int64_t> indices(static_cast<std::size_t>(blocks));
  for (std::int64_t b = 0; b < blocks; ++b) indices[static_cast<std::size_t>(b)] = b;
  if (cooperative) {
    run_blocks(body, grid, block, dynamic_shared_bytes, true, indices, order());
    return;
  }
  // Blocks of an ordinary launch may run in any order: one after another, shuffled.
  std::shuffle(indices.begin(), indices.end(), order);
  for (const std::int64_t index : indices) {
    run_blocks(body, grid, block, dynamic_shared_bytes, false, {index}, order());
  }
}

unsigned char* dynamic_shared_memory() {
  Launch& launch = running_launch("dynamic shared memory");
  return launch.running->block->shared.get();
}

void block_barrier() {
  Launch& launch = running_launch("__syncthreads");
  Block& block = *launch.running->block;
  arrive_and_wait(launch, block.sync, block.live);
}

void grid_barrier() {
  Launch& launch = running_launch("grid sync");
  TORCH_CHECK(launch.cooperative, "CUDA emulation: grid sync in a launch that is not cooperative");
  arrive_and_wait(launch, launch.grid, launch.live);
}

const std::uint64_t* warp_exchange(unsigned int mask, std::uint64_t value) {
  Launch& launch = running_launch("a warp shuffle or vote");
  Fiber& fiber = *launch.running;
  TORCH_CHECK(mask == 0xffffffffu, "CUDA emulation: only full-warp masks are emulated, got 0x", std::hex, mask);
  Warp& warp = fiber.block->warps[fiber.linear / kWarpSize];
  TORCH_CHECK(warp.live == kWarpSize, "CUDA emulation: a full-warp shuffle or vote with ", warp.live,
              " live lanes (every lane of the mask must take part)");
  std::uint64_t* lanes = warp.lanes[warp.sync.generation & 1];
  lanes[fiber.linear % kWarpSize] = value;
  arrive_and_wait(launch, warp.sync, warp.live);
  return lanes;
}

int lane_id() {
  Launch& launch = running_launch("lane_id");
  return launch.running->linear % kWarpSize;
}

}  // namespace fused_lstm_emulation
