#include "gemm.h"

#include <ATen/Context.h>

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

}  // namespace

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
