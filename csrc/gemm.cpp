#include "gemm.h"

#include <ATen/Context.h>
#include <ATen/EmptyTensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/alloc_cpu.h>

#include <deque>
#include <iterator>
#include <mutex>
#include <vector>

#include "options.h"
#include "path_thresholds.h"

// Exported by libtorch_cpu (TORCH_API) but its header is not installed with the wheel:
// result = beta·result + alpha·(mat1 · mat2), computed by a oneDNN matmul primitive. Declared weak so
// that a torch build without it (or with another signature) still loads the extension: the symbol is
// then null and every GEMM runs on ATen. Its precondition depends on the CPU: see onednn_matmul_usable.
namespace at::native {
TORCH_API void mkldnn_matmul(const at::Tensor& mat1, const at::Tensor& mat2, const at::Tensor& result, float beta,
                             float alpha) __attribute__((weak));
}  // namespace at::native

namespace fused_lstm {
namespace {

// A plain row-major or column-major matrix, as BLAS-style kernels take it.
bool has_unit_stride(const at::Tensor& matrix) {
  return (matrix.stride(1) == 1 && matrix.stride(0) >= std::max<int64_t>(1, matrix.size(1))) ||
         (matrix.stride(0) == 1 && matrix.stride(1) >= std::max<int64_t>(1, matrix.size(0)));
}

// Where oneDNN beat MKL (path_thresholds.h).
using thresholds::kOneDnnMinDimension;
using thresholds::kOneDnnMinMultiplyAdds;
using thresholds::kOneDnnMinRows;

bool use_onednn(const at::Tensor& result, const at::Tensor& a, const at::Tensor& b) {
  if (!result.device().is_cpu() || result.scalar_type() != at::kFloat || !onednn_matmul_usable()) return false;
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  if (m == 0 || k == 0 || n == 0) return false;
  if (!result.is_contiguous() || !has_unit_stride(a) || !has_unit_stride(b)) return false;
  switch (options::cpu_gemm()) {
    case options::CpuGemm::kAten: return false;
    case options::CpuGemm::kOneDnn: return true;
    case options::CpuGemm::kAuto: break;
  }
  return m >= kOneDnnMinRows && k >= kOneDnnMinDimension && n >= kOneDnnMinDimension &&
         m * k * n >= kOneDnnMinMultiplyAdds;
}

// Memory for weight_gradient_gemm: an allocator that, when a tensor's storage frees its block, keeps the block
// for the next request of the same size instead of returning it to malloc. A block is kept only once its storage
// let it go (no tensor, view, storage object or autograd buffer holds it any more), so reuse can never reach
// memory in use; the cache holds no references, only free blocks. Sizes from 1 MiB (below it malloc reuses
// freed memory without faults) to glibc's largest dynamic mmap threshold, 32 MiB (above it every allocation is
// a fresh mapping in any case, and keeping such blocks would hold much memory); at most kKeptBlocks, the
// oldest freed first when there are more.
constexpr size_t kKeptBlocks = 8;
constexpr int64_t kMinKeptBytes = int64_t(1) << 20;
constexpr int64_t kMaxKeptBytes = int64_t(32) << 20;

struct Block {
  void* data;
  size_t bytes;
};

void free_blocks(const std::vector<Block*>& blocks) {
  for (Block* block : blocks) {
    c10::free_cpu(block->data);
    delete block;
  }
}

struct KeptBlocks {
  std::mutex mutex;
  std::deque<Block*> blocks;  // oldest first
};

KeptBlocks& kept_blocks() {
  static auto* kept = new KeptBlocks;  // never destroyed: tensors may free their blocks during exit
  return *kept;
}

// The DataPtr deleter: keep the block (freeing the oldest kept one if there are too many).
void keep_block(void* context) {
  std::vector<Block*> evicted;
  {
    KeptBlocks& kept = kept_blocks();
    std::lock_guard<std::mutex> lock(kept.mutex);
    kept.blocks.push_back(static_cast<Block*>(context));
    while (kept.blocks.size() > kKeptBlocks) {
      evicted.push_back(kept.blocks.front());
      kept.blocks.pop_front();
    }
  }
  free_blocks(evicted);
}

class ReusingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    Block* block = nullptr;
    {
      KeptBlocks& kept = kept_blocks();
      std::lock_guard<std::mutex> lock(kept.mutex);
      // The most recently freed first: its lines are the likeliest to be in cache.
      for (auto it = kept.blocks.rbegin(); it != kept.blocks.rend(); ++it) {
        if ((*it)->bytes == bytes) {
          block = *it;
          kept.blocks.erase(std::next(it).base());
          break;
        }
      }
    }
    if (block == nullptr) block = new Block{c10::alloc_cpu(bytes), bytes};
    return {block->data, block, &keep_block, c10::Device(c10::kCPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

}  // namespace

bool onednn_matmul_usable() {
  static const bool usable = [] {
    if (at::native::mkldnn_matmul == nullptr || !at::hasMKLDNN()) return false;
    // torch's mkldnn_matmul takes float32 only where it could take bfloat16 (it checks mkldnn_bf16_device_check
    // and raises otherwise: on x86, AVX-512 BW/VL/DQ or AVX-NE-CONVERT as oneDNN sees the CPU, so that
    // ONEDNN_MAX_CPU_ISA=AVX2 turns it off on any CPU). torch registers that very check as an op; a torch
    // without it gets no oneDNN GEMMs.
    const auto check = c10::Dispatcher::singleton().findSchema({"mkldnn::_is_mkldnn_bf16_supported", ""});
    return check.has_value() && check->typed<bool()>().call();
  }();
  return usable;
}

at::Tensor reusable_empty(int64_t rows, int64_t cols, const at::TensorOptions& options) {
  const int64_t bytes = rows * cols * static_cast<int64_t>(options.dtype().itemsize());
  if (!options.device().is_cpu() || bytes < kMinKeptBytes || bytes > kMaxKeptBytes) {
    return at::empty({rows, cols}, options);
  }
  static auto* allocator = new ReusingCpuAllocator;  // storages point to it for as long as they live
  return at::detail::empty_generic({rows, cols}, allocator, c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   options.dtype().toScalarType(), std::nullopt);
}

void empty_cache() {
  std::vector<Block*> freed;
  {
    KeptBlocks& kept = kept_blocks();
    std::lock_guard<std::mutex> lock(kept.mutex);
    freed.assign(kept.blocks.begin(), kept.blocks.end());
    kept.blocks.clear();
  }
  free_blocks(freed);
}

at::Tensor weight_gradient_gemm(const at::Tensor& a, const at::Tensor& b) {
  auto result = reusable_empty(a.size(0), b.size(1), a.options());
  gemm_into(result, a, b, 0.0f);
  return result;
}

void gemm_into(const at::Tensor& result, const at::Tensor& a, const at::Tensor& b, float beta) {
  if (use_onednn(result, a, b)) {
    at::native::mkldnn_matmul(a, b, result, beta, 1.0f);
  } else if (beta == 0.0f) {
    at::mm_out(const_cast<at::Tensor&>(result), a, b);
  } else {
    const_cast<at::Tensor&>(result).addmm_(a, b);
  }
}

at::Tensor gemm(const at::Tensor& a, const at::Tensor& b) {
  auto result = at::empty({a.size(0), b.size(1)}, a.options());
  gemm_into(result, a, b, 0.0f);
  return result;
}

}  // namespace fused_lstm
