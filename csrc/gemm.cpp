#include "gemm.h"

#include <ATen/Context.h>

#include <deque>
#include <mutex>

#include "options.h"

// Exported by libtorch_cpu (TORCH_API) but its header is not installed with the wheel:
// result = beta·result + alpha·(mat1 · mat2), computed by a oneDNN matmul primitive. Declared weak so
// that a torch build without it (or with another signature) still loads the extension: the symbol is
// then null and every GEMM runs on ATen.
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

// Where oneDNN beat MKL on the development machines: inner and output dimensions of 256 and more, at least 16
// rows, and at least 2M multiply-adds in all. Below 16 rows (a decoder's cell step) MKL is up to 2.5× faster
// (measured on a 2-core Intel Xeon: an LSTMCell's backward at B = 8, H = 1024).
constexpr int64_t kOneDnnMinDimension = 256;
constexpr int64_t kOneDnnMinRows = 16;
constexpr int64_t kOneDnnMinMultiplyAdds = int64_t(1) << 21;

bool use_onednn(const at::Tensor& result, const at::Tensor& a, const at::Tensor& b) {
  if (at::native::mkldnn_matmul == nullptr) return false;
  if (!result.device().is_cpu() || result.scalar_type() != at::kFloat || !at::hasMKLDNN()) return false;
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

// The blocks weight_gradient_gemm keeps, oldest first, and the sizes worth keeping: from 1 MiB (below it
// malloc reuses freed memory without faults) to glibc's largest dynamic mmap threshold, 32 MiB (above it every
// allocation is a fresh mapping in any case, and keeping such blocks would hold much memory).
constexpr size_t kCachedBuffers = 8;
constexpr int64_t kMinCachedBytes = int64_t(1) << 20;
constexpr int64_t kMaxCachedBytes = int64_t(32) << 20;

struct BufferCache {
  std::mutex mutex;
  std::deque<c10::Storage> storages;
};

BufferCache& buffer_cache() {
  static BufferCache cache;
  return cache;
}

// An uninitialized contiguous [rows, cols] tensor on a kept block no one else references, or on a new block that
// is then kept (evicting the oldest unreferenced one when the cache is full).
at::Tensor reusable_empty(int64_t rows, int64_t cols, const at::TensorOptions& options) {
  const int64_t bytes = rows * cols * static_cast<int64_t>(options.dtype().itemsize());
  if (!options.device().is_cpu() || bytes < kMinCachedBytes || bytes > kMaxCachedBytes) {
    return at::empty({rows, cols}, options);
  }
  BufferCache& cache = buffer_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  c10::Storage storage;
  for (const c10::Storage& kept : cache.storages) {
    // use_count 1: only the cache holds it; the check and the hand-out are both under the lock.
    if (kept.use_count() == 1 && static_cast<int64_t>(kept.nbytes()) == bytes) {
      storage = kept;
      break;
    }
  }
  if (!storage) {
    at::Tensor fresh = at::empty({rows, cols}, options);
    if (cache.storages.size() >= kCachedBuffers) {
      for (auto it = cache.storages.begin(); it != cache.storages.end(); ++it) {
        if (it->use_count() == 1) {
          cache.storages.erase(it);
          break;
        }
      }
    }
    if (cache.storages.size() < kCachedBuffers) cache.storages.push_back(fresh.storage());
    return fresh;
  }
  // A new tensor over the block: nothing of an earlier user's tensor (sizes, strides, autograd state) carries over.
  return at::empty({0}, options).set_(storage, 0, {rows, cols}, {cols, 1});
}

}  // namespace

void empty_cache() {
  BufferCache& cache = buffer_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  cache.storages.clear();
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
