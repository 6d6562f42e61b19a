// Shape and dtype checks shared by the CPU and CUDA FFI handlers, returning ffi::Error with
// messages that name the op and the argument. Python validates first; these make a handler
// safe on its own (a hand-written custom call, an exported module reloaded elsewhere).
#ifndef JAX_ROI_FFI_CHECKS_H_
#define JAX_ROI_FFI_CHECKS_H_

#include <cstdint>
#include <string>

#include "jax_roi/roi_shape.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {

namespace ffi = xla::ffi;

inline std::string DimsToString(ffi::AnyBuffer::Dimensions d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(d[i]);
  }
  return s + "]";
}

inline ffi::Error InvalidArgument(const std::string& op, const std::string& msg) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, "jax_roi " + op + ": " + msg);
}

// Reads N, C, H, W from a feature-map-shaped buffer.
inline ffi::Error ReadFeatureShape(const std::string& op, const char* name,
                                   ffi::AnyBuffer::Dimensions d, bool channels_last,
                                   RoiShape* s) {
  if (d.size() != 4) {
    return InvalidArgument(op, std::string(name) + " must have rank 4, got shape " +
                                   DimsToString(d));
  }
  s->n = d[0];
  s->c = channels_last ? d[3] : d[1];
  s->h = channels_last ? d[1] : d[2];
  s->w = channels_last ? d[2] : d[3];
  if (s->h < 1 || s->w < 1) {
    return InvalidArgument(op, std::string(name) + " must have H, W >= 1, got shape " +
                                   DimsToString(d));
  }
  // roi_pool's argmax is a flat int32 index into one image plane.
  if (s->h * s->w > INT32_MAX) {
    return InvalidArgument(op, std::string(name) + " plane H*W must fit in int32, got shape " +
                                   DimsToString(d));
  }
  return ffi::Error::Success();
}

// Checks a pooled-shaped buffer against K, C, PH, PW (reading K from it when k < 0).
inline ffi::Error CheckPooledShape(const std::string& op, const char* name,
                                   ffi::AnyBuffer::Dimensions d, RoiShape* s) {
  const bool ok = d.size() == 4 && d[0] == s->k &&
                  (s->channels_last
                       ? (d[1] == s->ph && d[2] == s->pw && d[3] == s->c)
                       : (d[1] == s->c && d[2] == s->ph && d[3] == s->pw));
  if (!ok) {
    const std::string want =
        s->channels_last ? "[K, PH, PW, C] = [" + std::to_string(s->k) + ", " +
                               std::to_string(s->ph) + ", " + std::to_string(s->pw) + ", " +
                               std::to_string(s->c) + "]"
                         : "[K, C, PH, PW] = [" + std::to_string(s->k) + ", " +
                               std::to_string(s->c) + ", " + std::to_string(s->ph) + ", " +
                               std::to_string(s->pw) + "]";
    return InvalidArgument(op, std::string(name) + " must have shape " + want + ", got " +
                                   DimsToString(d));
  }
  return ffi::Error::Success();
}

// rois: [K, 5] in the compute type of the features (f64 for f64 features, else f32).
inline ffi::Error ReadRois(const std::string& op, const ffi::AnyBuffer& rois,
                           ffi::DataType feature_type, RoiShape* s) {
  const auto d = rois.dimensions();
  if (d.size() != 2 || d[1] != 5) {
    return InvalidArgument(op, "rois must have shape [K, 5], got " + DimsToString(d));
  }
  const ffi::DataType want =
      feature_type == ffi::DataType::F64 ? ffi::DataType::F64 : ffi::DataType::F32;
  if (rois.element_type() != want) {
    return InvalidArgument(op, "rois must be float64 for float64 features and float32 "
                               "otherwise");
  }
  s->k = d[0];
  return ffi::Error::Success();
}

inline ffi::Error CheckPooledSize(const std::string& op, int64_t ph, int64_t pw, int64_t ratio,
                                  RoiShape* s) {
  if (ph < 1 || pw < 1) {
    return InvalidArgument(op, "output_size must be positive, got (" + std::to_string(ph) +
                                   ", " + std::to_string(pw) + ")");
  }
  if (ratio > 32768) {
    return InvalidArgument(op, "sampling_ratio must be <= 32768, got " + std::to_string(ratio));
  }
  s->ph = ph;
  s->pw = pw;
  return ffi::Error::Success();
}

// The static attributes of every roi op (sampling_ratio is 0 for roi_pool).
struct PooledAttrs {
  int64_t ph, pw;
  double scale;
  int64_t ratio;
  bool channels_last;
};

// Everything a roi handler must check before touching memory, forward and backward alike:
// the feature-map-shaped buffer (features in, or the features' gradient out), rois [K, 5] in
// the compute type, the attributes, the pooled-shaped buffer (output, or incoming gradient)
// and, for max-type ops, the argmax. Fills `s`.
inline ffi::Error CheckRoiOp(const std::string& op, const char* map_name,
                             ffi::AnyBuffer::Dimensions map_dims, ffi::DataType map_type,
                             const ffi::AnyBuffer& rois, const char* pooled_name,
                             ffi::AnyBuffer::Dimensions pooled_dims, ffi::DataType pooled_type,
                             const ffi::AnyBuffer::Dimensions* argmax_dims,
                             const PooledAttrs& a, RoiShape* s) {
  s->channels_last = a.channels_last;
  if (auto e = ReadFeatureShape(op, map_name, map_dims, a.channels_last, s); e.failure())
    return e;
  if (auto e = ReadRois(op, rois, map_type, s); e.failure()) return e;
  if (!(a.scale > 0) || !(a.scale - a.scale == 0)) {
    return InvalidArgument(op, "spatial_scale must be a positive finite number, got " +
                                   std::to_string(a.scale));
  }
  if (auto e = CheckPooledSize(op, a.ph, a.pw, a.ratio, s); e.failure()) return e;
  if (auto e = CheckPooledShape(op, pooled_name, pooled_dims, s); e.failure()) return e;
  if (argmax_dims) {
    if (auto e = CheckPooledShape(op, "argmax", *argmax_dims, s); e.failure()) return e;
  }
  if (pooled_type != map_type) {
    return InvalidArgument(op, std::string(pooled_name) + " dtype must equal the " + map_name +
                                   " dtype");
  }
  return ffi::Error::Success();
}

// The element type of the features, for handlers that dispatch on ElementType (CUDA and its
// host emulation). `family` is "roi_align" or "roi_pool", as in the CPU handlers' message.
inline ffi::Error ReadElementType(const std::string& family, ffi::DataType type,
                                  ElementType* out) {
  switch (type) {
    case ffi::DataType::F32: *out = ElementType::kF32; break;
    case ffi::DataType::F64: *out = ElementType::kF64; break;
    case ffi::DataType::F16: *out = ElementType::kF16; break;
    case ffi::DataType::BF16: *out = ElementType::kBF16; break;
    default:
      return InvalidArgument(family, "features must be float16, bfloat16, float32 or float64");
  }
  return ffi::Error::Success();
}

}  // namespace jax_roi

#endif  // JAX_ROI_FFI_CHECKS_H_
