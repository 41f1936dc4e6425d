// The x86 instruction sets the CPU kernels' hand-written tiles use (the whole recurrence, the fused cell).
// Which one runs is options::cpu_isa() (options.h): the best the CPU has unless capped.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FL_HAVE_X86_TILES 1
// Only the register-tile products use these instruction sets; the rest of the library runs on any x86-64.
#define FL_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
#define FL_AVX512_BF16 __attribute__((target("avx512bf16,avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
#define FL_AVX2 __attribute__((target("avx2,fma")))
#else
#define FL_HAVE_X86_TILES 0
#endif

namespace fused_lstm {
namespace cpu {

// Each implies the ones before it: AVX2+FMA; AVX-512 (F, DQ, BW, VL); AVX512-BF16 (vdpbf16ps); AMX-BF16 and
// AMX-TILE with the tile state granted by the OS.
enum class Isa { kNone, kAvx2, kAvx512, kAvx512Bf16, kAmx };

// The best this CPU has. Detected once.
Isa best_isa();
// "none", "avx2", "avx512", "avx512_bf16", "amx".
const char* isa_name(Isa isa);

}  // namespace cpu
}  // namespace fused_lstm
