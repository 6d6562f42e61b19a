// Storage types for the four supported element types, and the accumulator each one uses.
//
// XLA's FFI hands 16-bit floats over as raw uint16_t, so half and bfloat16 are thin wrappers
// with explicit conversions: 16-bit inputs are widened to float on load, all arithmetic is
// float, and results are rounded once on store (docs/semantics.md, "Precision").
#ifndef JAX_ROI_DTYPES_H_
#define JAX_ROI_DTYPES_H_

#include <cstdint>
#include <cstring>

#include "jax_roi/roi_math.h"
#include "jax_roi/roi_shape.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace jax_roi {

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

JAX_ROI_HD float BitsToFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

JAX_ROI_HD uint32_t FloatToBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

// IEEE binary16 -> binary32, exact (subnormals, infinities and NaN payloads included).
// Branch-free (selects only), so CPU loops over 16-bit features vectorise: the exponent is
// rebiased in place, infinities and NaNs get the top exponent, and subnormals are
// renormalised by one exact float subtraction (x * 2^-24 = (2^-14 + x * 2^-24) - 2^-14).
JAX_ROI_HD float HalfToFloat(uint16_t h) {
  const uint32_t shifted = static_cast<uint32_t>(h & 0x7fffu) << 13;
  const uint32_t exp = shifted & 0x0f800000u;
  const bool special = exp == 0x0f800000u;  // infinity or NaN
  const bool tiny = exp == 0u;              // zero or subnormal
  uint32_t bits = shifted + ((127u - 15u) << 23);
  bits += special ? ((128u - 16u) << 23) : 0u;
  bits += tiny ? (1u << 23) : 0u;
  const float f = BitsToFloat(bits);
  const float magnitude = tiny ? f - BitsToFloat(113u << 23) : f;
  return BitsToFloat(FloatToBits(magnitude) | (static_cast<uint32_t>(h & 0x8000u) << 16));
}

// binary32 -> binary16, round to nearest even; overflow goes to infinity, NaN stays NaN.
JAX_ROI_HD uint16_t FloatToHalf(float f) {
  const uint32_t u = FloatToBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return sign | (a > 0x7f800000u ? 0x7e00u : 0x7c00u);
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // rounds past 65504
  if (a < 0x38800000u) {
    // Result is subnormal or zero: shift the full significand into place, then round.
    if (a < 0x33000000u) return sign;  // below half the smallest subnormal
    const uint32_t e = a >> 23;
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24
    const uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    const uint32_t r = q + ((rem > halfway || (rem == halfway && (q & 1u))) ? 1u : 0u);
    return sign | static_cast<uint16_t>(r);
  }
  // Normal: rebias, then round the 13 dropped bits to nearest even (a carry may bump the
  // exponent, which is still the right answer).
  const uint32_t rebased = a - 0x38000000u;
  const uint32_t q = rebased >> 13;
  const uint32_t rem = rebased & 0x1fffu;
  const uint32_t r = q + ((rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ? 1u : 0u);
  return sign | static_cast<uint16_t>(r);
}

JAX_ROI_HD float BFloat16ToFloat(uint16_t b) { return BitsToFloat(static_cast<uint32_t>(b) << 16); }

JAX_ROI_HD uint16_t FloatToBFloat16(float f) {
  const uint32_t u = FloatToBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

// Accum<T>::type is the arithmetic type for storage type T.
template <typename T>
struct Accum {
  using type = float;
};
template <>
struct Accum<double> {
  using type = double;
};

template <typename A>
JAX_ROI_HD A Load(float v) { return static_cast<A>(v); }
template <typename A>
JAX_ROI_HD A Load(double v) { return static_cast<A>(v); }
template <typename A>
JAX_ROI_HD A Load(Half v) {
#if defined(__CUDA_ARCH__)
  __half_raw raw;
  raw.x = v.bits;
  return static_cast<A>(__half2float(__half(raw)));
#else
  return static_cast<A>(HalfToFloat(v.bits));
#endif
}
template <typename A>
JAX_ROI_HD A Load(BFloat16 v) { return static_cast<A>(BFloat16ToFloat(v.bits)); }

template <typename T>
struct Storer;
template <>
struct Storer<float> {
  JAX_ROI_HD static float From(float a) { return a; }
};
template <>
struct Storer<double> {
  JAX_ROI_HD static double From(double a) { return a; }
};
template <>
struct Storer<Half> {
  JAX_ROI_HD static Half From(float a) {
#if defined(__CUDA_ARCH__)
    __half_raw raw = __float2half_rn(a);
    return Half{raw.x};
#else
    return Half{FloatToHalf(a)};
#endif
  }
};
template <>
struct Storer<BFloat16> {
  JAX_ROI_HD static BFloat16 From(float a) { return BFloat16{FloatToBFloat16(a)}; }
};

// f(tag) with a value of the storage type of `type` (float, double, Half, BFloat16): the one
// dispatch from a call's element type to the templates, on every backend.
template <typename F>
auto VisitElementType(ElementType type, F&& f) -> decltype(f(float{})) {
  switch (type) {
    case ElementType::kF64: return f(double{});
    case ElementType::kF16: return f(Half{});
    case ElementType::kBF16: return f(BFloat16{});
    case ElementType::kF32: break;
  }
  return f(float{});
}

// Rounds an accumulator value once into storage type T.
template <typename T, typename A>
JAX_ROI_HD T Store(A a) {
  return Storer<T>::From(a);
}

}  // namespace jax_roi

#endif  // JAX_ROI_DTYPES_H_
