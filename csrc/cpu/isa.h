// The x86 instruction sets the CPU kernels' hand-written register tiles use (the fused step, the fused cell),
// chosen once per process: the best the CPU has, unless FUSED_LSTM_CPU_FUSED_STEP says otherwise.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FL_HAVE_X86_TILES 1
// Only the register-tile products use these instruction sets; the rest of the library runs on any x86-64.
#define FL_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
#define FL_AVX2 __attribute__((target("avx2,fma")))
#else
#define FL_HAVE_X86_TILES 0
#endif

namespace fused_lstm {
namespace cpu {

enum class Isa { kNone, kAvx2, kAvx512 };

// The best this CPU has: AVX-512 (F, DQ, BW, VL), else AVX2+FMA, else none.
Isa best_isa();

// What the fused kernels use. FUSED_LSTM_CPU_FUSED_STEP: unset, empty or "1": best_isa(); "0": none (the
// per-step path with library GEMMs); "avx2" / "avx512": that instruction set (raises if the CPU lacks it);
// anything else raises. Read once per process.
Isa fused_kernels_isa();

}  // namespace cpu
}  // namespace fused_lstm
