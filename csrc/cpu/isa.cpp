#include "isa.h"

#if FL_HAVE_X86_TILES
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace fused_lstm {
namespace cpu {
namespace {

#if FL_HAVE_X86_TILES
bool cpu_has_amx_bf16() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  return (edx & (1u << 22)) && (edx & (1u << 24));  // AMX-BF16 and AMX-TILE
}

// Linux hands out the AMX tile state only to processes that ask for it.
bool os_grants_amx() {
  constexpr long kRequestPermission = 0x1023;  // ARCH_REQ_XCOMP_PERM
  constexpr long kTileData = 18;               // XFEATURE_XTILEDATA
  return syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
}

Isa detect() {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return Isa::kNone;
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512dq") ||
      !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl")) {
    return Isa::kAvx2;
  }
  if (!__builtin_cpu_supports("avx512bf16")) return Isa::kAvx512;
  return cpu_has_amx_bf16() && os_grants_amx() ? Isa::kAmx : Isa::kAvx512Bf16;
}
#endif

}  // namespace

Isa best_isa() {
#if FL_HAVE_X86_TILES
  static const Isa isa = detect();
  return isa;
#else
  return Isa::kNone;
#endif
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx512Bf16: return "avx512_bf16";
    case Isa::kAmx: return "amx";
    default: return "none";
  }
}

}  // namespace cpu
}  // namespace fused_lstm
