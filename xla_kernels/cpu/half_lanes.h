// float16 <-> float32 for eight lanes at a time, with integer vector operations (GCC vector
// extensions: AVX2 in the kernels' AVX2 clone, SSE2 pairs in the baseline one). The scalar
// conversions of dtypes.h compile to branches that never vectorise. These are the same
// functions lane by lane, bit for bit (checked over every half and every float).
#ifndef JAX_ROI_CPU_HALF_LANES_H_
#define JAX_ROI_CPU_HALF_LANES_H_

#include <cstdint>
#include <cstring>

#include "jax_roi/dtypes.h"

namespace jax_roi {
namespace cpu {

typedef float Float8 __attribute__((vector_size(32)));
typedef uint32_t U32x8 __attribute__((vector_size(32)));
typedef int32_t I32x8 __attribute__((vector_size(32)));
typedef uint16_t U16x8 __attribute__((vector_size(16)));

// Per lane: x where the mask is all ones, y where it is zero. A macro, not a function: a
// function returning a 32-byte vector has different ABIs in the AVX2 and baseline clones.
#define JAX_ROI_SELECT(mask, x, y) (((mask) & (x)) | (~(mask) & (y)))

// HalfToFloat on p[0..8).
__attribute__((always_inline)) inline void HalfLanesToFloat(const uint16_t* p, Float8* v) {
  U16x8 raw;
  std::memcpy(&raw, p, sizeof raw);
  const U32x8 h = __builtin_convertvector(raw, U32x8);
  const U32x8 shifted = (h & 0x7fffu) << 13;
  const U32x8 exp = shifted & 0x0f800000u;
  const U32x8 special = (U32x8)(exp == 0x0f800000u);  // all ones: infinity or NaN
  const U32x8 tiny = (U32x8)(exp == 0u);              // all ones: zero or subnormal
  const U32x8 bits = shifted + (112u << 23) + (special & (112u << 23)) + (tiny & (1u << 23));
  Float8 f;
  std::memcpy(&f, &bits, sizeof f);
  const Float8 g = f - BitsToFloat(113u << 23);
  U32x8 fb, gb;
  std::memcpy(&fb, &f, sizeof fb);
  std::memcpy(&gb, &g, sizeof gb);
  const U32x8 out = JAX_ROI_SELECT(tiny, gb, fb) | ((h & 0x8000u) << 16);
  std::memcpy(v, &out, sizeof out);
}

// FloatToHalf on v[0..8) into p[0..8): every branch of the scalar function computed for all
// lanes, then chosen per lane.
__attribute__((always_inline)) inline void FloatLanesToHalf(const Float8* v, uint16_t* p) {
  U32x8 u;
  std::memcpy(&u, v, sizeof u);
  const U32x8 sign = (u >> 16) & 0x8000u;
  const U32x8 a = u & 0x7fffffffu;
  // Normal: rebias, round the 13 dropped bits to nearest even.
  const U32x8 rebased = a - 0x38000000u;
  const U32x8 q = rebased >> 13, rem = rebased & 0x1fffu;
  const U32x8 up =
      (U32x8)(rem > 0x1000u) | ((U32x8)(rem == 0x1000u) & (U32x8)((q & 1u) != 0u));
  const U32x8 normal = q + (up & 1u);
  // Subnormal: the full significand shifted into place (shift 14..24, clamped so that lanes
  // of other kinds shift by a defined amount), then rounded.
  const I32x8 e = (I32x8)(a >> 23);
  I32x8 sh = 126 - e;
  sh = (I32x8)JAX_ROI_SELECT((U32x8)(sh < 14), U32x8{} + 14u, (U32x8)sh);
  sh = (I32x8)JAX_ROI_SELECT((U32x8)(sh > 24), U32x8{} + 24u, (U32x8)sh);
  const U32x8 shift = (U32x8)sh;
  const U32x8 m = (a & 0x7fffffu) | 0x800000u;
  const U32x8 qs = m >> shift, rems = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
  const U32x8 ups =
      (U32x8)(rems > halfway) | ((U32x8)(rems == halfway) & (U32x8)((qs & 1u) != 0u));
  const U32x8 subnormal = qs + (ups & 1u);
  const U32x8 zero = {}, inf = zero + 0x7c00u;
  U32x8 r = JAX_ROI_SELECT((U32x8)(a < 0x38800000u), subnormal, normal);
  r = JAX_ROI_SELECT((U32x8)(a < 0x33000000u), zero, r);  // under half the least subnormal
  r = JAX_ROI_SELECT((U32x8)(a >= 0x477ff000u), inf, r);  // rounds past 65504
  r = JAX_ROI_SELECT((U32x8)(a > 0x7f800000u), zero + 0x7e00u, r);  // NaN
  r = JAX_ROI_SELECT((U32x8)(a == 0x7f800000u), inf, r);  // infinity
  const U16x8 out = __builtin_convertvector(sign | r, U16x8);
  std::memcpy(p, &out, sizeof out);
}

}  // namespace cpu
}  // namespace jax_roi

#undef JAX_ROI_SELECT

#endif  // JAX_ROI_CPU_HALF_LANES_H_
