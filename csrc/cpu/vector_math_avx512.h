// The LSTM cell's activations on 16 floats at a time (AVX-512), for kernels that only run on AVX-512 CPUs. The same
// formulas as math::host_expf and math::host_tanhf (lstm_math.h, which explains them) in fewer instructions: each
// division a reciprocal estimate refined by one Newton step (vdivps is the slowest instruction of the cell update,
// five a cell; the refined estimate is within 2 ulp of the quotient) and 2^n applied by vscalefps.
#pragma once

#include "isa.h"

#if FL_HAVE_X86_TILES

namespace fused_lstm {
namespace cpu {
namespace avx512 {

// e^x: x = n·ln2 + r with n = round(x·log2 e) and a degree-6 polynomial for e^r on |r| <= ln2/2 (the
// coefficients of math::host_expf), scaled by 2^n in one instruction (vscalefps: +inf above the float range, 0
// below it). x is clamped first so that n stays finite; NaN passes through (min and max return their second
// operand when either is NaN).
FL_AVX512 inline __m512 exp(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// 1/d for finite d >= 1: a reciprocal estimate (14 bits) refined by one Newton step.
FL_AVX512 inline __m512 reciprocal(__m512 d) {
  const __m512 estimate = _mm512_rcp14_ps(d);
  return _mm512_fmadd_ps(estimate, _mm512_fnmadd_ps(d, estimate, _mm512_set1_ps(1.0f)), estimate);
}

// 1/(1 + e^-x). Where e^-x is +inf the estimate is 0 and the Newton step would make it NaN: sigmoid(-inf) must be
// 0, as in math::sigmoid.
FL_AVX512 inline __m512 sigmoid(__m512 x) {
  const __m512 denominator = _mm512_add_ps(_mm512_set1_ps(1.0f), exp(_mm512_sub_ps(_mm512_setzero_ps(), x)));
  const __m512 estimate = _mm512_rcp14_ps(denominator);
  const __m512 refined =
      _mm512_fmadd_ps(estimate, _mm512_fnmadd_ps(denominator, estimate, _mm512_set1_ps(1.0f)), estimate);
  return _mm512_mask_mov_ps(refined, _mm512_cmp_ps_mask(estimate, _mm512_setzero_ps(), _CMP_EQ_OQ), estimate);
}

// An odd polynomial below |x| = 0.625 and 1 - 2/(e^2|x| + 1) with x's sign above, as math::host_tanhf; 2|x| is
// capped at 40 (tanh is 1 in float from 9.01 on) so that the denominator stays finite.
FL_AVX512 inline __m512 tanh(__m512 x) {
  const __m512 ax = _mm512_abs_ps(x);
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 small = _mm512_set1_ps(-5.70498872745e-3f);
  small = _mm512_fmadd_ps(small, z, _mm512_set1_ps(2.06390887954e-2f));
  small = _mm512_fmadd_ps(small, z, _mm512_set1_ps(-5.37397155531e-2f));
  small = _mm512_fmadd_ps(small, z, _mm512_set1_ps(1.33314422036e-1f));
  small = _mm512_fmadd_ps(small, z, _mm512_set1_ps(-3.33332819422e-1f));
  small = _mm512_fmadd_ps(_mm512_mul_ps(small, z), x, x);
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 twice = _mm512_min_ps(_mm512_set1_ps(40.0f), _mm512_add_ps(ax, ax));
  const __m512 large_abs = _mm512_fnmadd_ps(_mm512_set1_ps(2.0f), reciprocal(_mm512_add_ps(exp(twice), one)), one);
  // large_abs >= 0: x's sign bit or'ed in gives ±large_abs.
  const __m512 large = _mm512_or_ps(large_abs, _mm512_and_ps(x, _mm512_set1_ps(-0.0f)));
  // `ax < 0.625` is false for NaN, which then takes the large form (NaN too).
  return _mm512_mask_mov_ps(large, _mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.625f), _CMP_LT_OQ), small);
}

}  // namespace avx512
}  // namespace cpu
}  // namespace fused_lstm

#endif
