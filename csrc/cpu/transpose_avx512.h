// The AVX-512 16 × 16 transpose of 32-bit words that packs operands for the CPU kernels (the AMX recurrence's
// weight tiles, the fused cell's batch lanes).
#pragma once

#include <cstdint>

#include "isa.h"

namespace fused_lstm {
namespace cpu {

#if FL_HAVE_X86_TILES
// The transpose of a 16 × 16 matrix of 32-bit words, rows in `rows`, written row by row to `out`, `stride` words
// apart: unpacks of words, then of word pairs, within 128-bit lanes, then two rounds of lane shuffles.
FL_AVX512 inline void transpose_16x16_words(const __m512i (&rows)[16], uint32_t* out, int64_t stride) {
  __m512i words[16], pairs[16];
  for (int i = 0; i < 8; ++i) {
    words[2 * i] = _mm512_unpacklo_epi32(rows[2 * i], rows[2 * i + 1]);
    words[2 * i + 1] = _mm512_unpackhi_epi32(rows[2 * i], rows[2 * i + 1]);
  }
  // pairs[4i + j], 128-bit lane L: column 4L + j of rows 4i .. 4i + 3.
  for (int i = 0; i < 4; ++i) {
    pairs[4 * i] = _mm512_unpacklo_epi64(words[4 * i], words[4 * i + 2]);
    pairs[4 * i + 1] = _mm512_unpackhi_epi64(words[4 * i], words[4 * i + 2]);
    pairs[4 * i + 2] = _mm512_unpacklo_epi64(words[4 * i + 1], words[4 * i + 3]);
    pairs[4 * i + 3] = _mm512_unpackhi_epi64(words[4 * i + 1], words[4 * i + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512i low01 = _mm512_shuffle_i32x4(pairs[j], pairs[4 + j], 0x44);    // lanes 0, 1 of each
    const __m512i high01 = _mm512_shuffle_i32x4(pairs[j], pairs[4 + j], 0xEE);   // lanes 2, 3
    const __m512i low23 = _mm512_shuffle_i32x4(pairs[8 + j], pairs[12 + j], 0x44);
    const __m512i high23 = _mm512_shuffle_i32x4(pairs[8 + j], pairs[12 + j], 0xEE);
    _mm512_storeu_si512(out + (0 + j) * stride, _mm512_shuffle_i32x4(low01, low23, 0x88));
    _mm512_storeu_si512(out + (4 + j) * stride, _mm512_shuffle_i32x4(low01, low23, 0xDD));
    _mm512_storeu_si512(out + (8 + j) * stride, _mm512_shuffle_i32x4(high01, high23, 0x88));
    _mm512_storeu_si512(out + (12 + j) * stride, _mm512_shuffle_i32x4(high01, high23, 0xDD));
  }
}
#endif

}  // namespace cpu
}  // namespace fused_lstm
