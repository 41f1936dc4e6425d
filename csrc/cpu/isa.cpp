#include "isa.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

namespace fused_lstm {
namespace cpu {

Isa best_isa() {
#if FL_HAVE_X86_TILES
  static const Isa isa = [] {
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
      return Isa::kAvx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
    return Isa::kNone;
  }();
  return isa;
#else
  return Isa::kNone;
#endif
}

Isa fused_kernels_isa() {
  static const Isa isa = [] {
    const char* value = std::getenv("FUSED_LSTM_CPU_FUSED_STEP");
    if (value == nullptr || value[0] == '\0' || std::strcmp(value, "1") == 0) return best_isa();
    if (std::strcmp(value, "0") == 0) return Isa::kNone;
    const bool avx2 = std::strcmp(value, "avx2") == 0, avx512 = std::strcmp(value, "avx512") == 0;
    TORCH_CHECK(avx2 || avx512, "fused_lstm: FUSED_LSTM_CPU_FUSED_STEP must be 0, 1, avx2 or avx512, got '", value,
                "'");
    const Isa wanted = avx512 ? Isa::kAvx512 : Isa::kAvx2;
    TORCH_CHECK(best_isa() != Isa::kNone && (best_isa() == Isa::kAvx512 || wanted == Isa::kAvx2),
                "fused_lstm: FUSED_LSTM_CPU_FUSED_STEP=", value, " but this CPU does not have it");
    return wanted;
  }();
  return isa;
}

}  // namespace cpu
}  // namespace fused_lstm
