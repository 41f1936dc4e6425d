// The x86 instruction sets the CPU kernels' hand-written tiles use (the whole recurrence, the fused cell).
// Which one runs is options::cpu_isa() (options.h): the best the CPU has unless capped.
#pragma once

#include <cstdint>

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

#if FL_HAVE_X86_TILES
// The AMX tile configuration LDTILECFG reads: palette 1, `tiles` tiles of 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};

  explicit TileConfig(int tiles) {
    for (int tile = 0; tile < tiles; ++tile) rows[tile] = 16, bytes_per_row[tile] = 64;
  }
};

// LDTILECFG. Not _tile_loadconfig: GCC 12's declares only the first 8 bytes of the configuration as read, so the
// compiler may drop the stores that fill in the rest, and did (the tiles were left unconfigured: SIGILL).
inline void load_tile_config(const TileConfig& config) { asm volatile("ldtilecfg %0" : : "m"(config)); }
#endif

// Each implies the ones before it: AVX2+FMA; AVX-512 (F, DQ, BW, VL); AVX512-BF16 (vdpbf16ps); AMX-BF16 and
// AMX-TILE with the tile state granted by the OS.
enum class Isa { kNone, kAvx2, kAvx512, kAvx512Bf16, kAmx };

// The best this CPU has. Detected once.
Isa best_isa();
// "none", "avx2", "avx512", "avx512_bf16", "amx".
const char* isa_name(Isa isa);

}  // namespace cpu
}  // namespace fused_lstm
