// Decoding and checking one roi call, written once for every FFI handler (CPU, CUDA and the
// emulation): each operand is checked by its role (as jaxlib's CheckShape per operand), the
// attributes by their family, and the result is a RoiCall. Messages name the op and the
// argument. Python validates first; these make a handler safe on its own (a hand-written
// custom call, an exported module reloaded elsewhere).
#ifndef JAX_ROI_FFI_CHECKS_H_
#define JAX_ROI_FFI_CHECKS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "jax_roi/roi_call.h"
#include "jax_roi/roi_math.h"
#include "jax_roi/roi_shape.h"
#include "xla/ffi/api/ffi.h"

// Returns the ffi::Error of `expr` when it is a failure.
#define JAX_ROI_RETURN_IF_ERROR(expr)                      \
  do {                                                     \
    if (::xla::ffi::Error _jax_roi_e = (expr); _jax_roi_e.failure()) \
      return _jax_roi_e;                                   \
  } while (0)

// The attribute structs, decoded by name from the call's attribute dictionary.
XLA_FFI_REGISTER_STRUCT_ATTR_DECODING(::jax_roi::AlignAttrs,
                                      ::xla::ffi::StructMember<int64_t>("pooled_h"),
                                      ::xla::ffi::StructMember<int64_t>("pooled_w"),
                                      ::xla::ffi::StructMember<double>("spatial_scale"),
                                      ::xla::ffi::StructMember<int64_t>("sampling_ratio"),
                                      ::xla::ffi::StructMember<bool>("aligned"),
                                      ::xla::ffi::StructMember<bool>("channels_last"),
                                      ::xla::ffi::StructMember<bool>("deterministic"));
XLA_FFI_REGISTER_STRUCT_ATTR_DECODING(::jax_roi::PoolAttrs,
                                      ::xla::ffi::StructMember<int64_t>("pooled_h"),
                                      ::xla::ffi::StructMember<int64_t>("pooled_w"),
                                      ::xla::ffi::StructMember<double>("spatial_scale"),
                                      ::xla::ffi::StructMember<bool>("channels_last"),
                                      ::xla::ffi::StructMember<bool>("deterministic"));

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

// One operand or result of a call, whatever its direction.
struct Operand {
  const char* name;  // as the messages call it
  ffi::AnyBuffer::Dimensions dims;
  ffi::DataType type;
  void* data;
};

// ---------------------------------------------------------------------------------------
// One check per role
// ---------------------------------------------------------------------------------------

// kFeatures / kFeatureGrad: N, C, H, W of a feature-map-shaped buffer.
inline ffi::Error ReadFeatureShape(const std::string& op, const Operand& x, RoiShape* s) {
  const auto d = x.dims;
  if (d.size() != 4) {
    return InvalidArgument(op, std::string(x.name) + " must have rank 4, got shape " +
                                   DimsToString(d));
  }
  s->n = d[0];
  s->c = s->channels_last ? d[3] : d[1];
  s->h = s->channels_last ? d[1] : d[2];
  s->w = s->channels_last ? d[2] : d[3];
  if (s->h < 1 || s->w < 1) {
    return InvalidArgument(op, std::string(x.name) + " must have H, W >= 1, got shape " +
                                   DimsToString(d));
  }
  // roi_pool's argmax is a flat int32 index into one image plane.
  if (s->h * s->w > INT32_MAX) {
    return InvalidArgument(op, std::string(x.name) + " plane H*W must fit in int32, got shape " +
                                   DimsToString(d));
  }
  return ffi::Error::Success();
}

// The element type of the feature map; `family` names the op family in the message.
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

// kRois: [K, width] rows (batch_index, box...) in the compute type of the features (f64 for
// f64 features, else f32); width is 5 for axis-aligned boxes.
inline ffi::Error ReadRois(const std::string& op, const Operand& r, ElementType type,
                           int64_t width, RoiShape* s) {
  if (r.dims.size() != 2 || r.dims[1] != width) {
    const std::string want = width == 5 ? "[K, 5]" : "[K, " + std::to_string(width) + "]";
    return InvalidArgument(op, "rois must have shape " + want + ", got " + DimsToString(r.dims));
  }
  const ffi::DataType want =
      type == ElementType::kF64 ? ffi::DataType::F64 : ffi::DataType::F32;
  if (r.type != want) {
    return InvalidArgument(op, "rois must be float64 for float64 features and float32 "
                               "otherwise");
  }
  s->k = r.dims[0];
  return ffi::Error::Success();
}

// kPooled / kArgmax: [K, C_out, PH, PW] or [K, PH, PW, C_out].
inline ffi::Error CheckPooledShape(const std::string& op, const Operand& x, const RoiShape& s) {
  const auto d = x.dims;
  const int64_t c = s.c_out;
  const bool ok = d.size() == 4 && d[0] == s.k &&
                  (s.channels_last ? (d[1] == s.ph && d[2] == s.pw && d[3] == c)
                                   : (d[1] == c && d[2] == s.ph && d[3] == s.pw));
  if (ok) return ffi::Error::Success();
  const auto str = [](int64_t v) { return std::to_string(v); };
  const std::string want =
      s.channels_last ? "[K, PH, PW, C] = [" + str(s.k) + ", " + str(s.ph) + ", " + str(s.pw) +
                            ", " + str(c) + "]"
                      : "[K, C, PH, PW] = [" + str(s.k) + ", " + str(c) + ", " + str(s.ph) +
                            ", " + str(s.pw) + "]";
  return InvalidArgument(op, std::string(x.name) + " must have shape " + want + ", got " +
                                 DimsToString(d));
}

// ---------------------------------------------------------------------------------------
// Attributes, per family
// ---------------------------------------------------------------------------------------

inline ffi::Error CheckPooledAttrs(const std::string& op, int64_t ph, int64_t pw, double scale,
                                   int64_t ratio) {
  if (!(scale > 0) || !(scale - scale == 0)) {
    return InvalidArgument(op, "spatial_scale must be a positive finite number, got " +
                                   std::to_string(scale));
  }
  if (ph < 1 || pw < 1) {
    return InvalidArgument(op, "output_size must be positive, got (" + std::to_string(ph) +
                                   ", " + std::to_string(pw) + ")");
  }
  if (ratio > kMaxGrid) {
    return InvalidArgument(op, "sampling_ratio must be <= " + std::to_string(kMaxGrid) +
                                   ", got " + std::to_string(ratio));
  }
  return ffi::Error::Success();
}

inline ffi::Error CheckAttrs(const std::string& op, const AlignAttrs& a) {
  return CheckPooledAttrs(op, a.pooled_h, a.pooled_w, a.spatial_scale, a.sampling_ratio);
}
inline ffi::Error CheckAttrs(const std::string& op, const PoolAttrs& a) {
  return CheckPooledAttrs(op, a.pooled_h, a.pooled_w, a.spatial_scale, 0);
}

// ---------------------------------------------------------------------------------------
// A whole call
// ---------------------------------------------------------------------------------------

// What a role is called in messages: a pooled operand is the incoming gradient, a pooled
// result the output.
inline const char* RoleName(Role role, bool is_result) {
  switch (role) {
    case Role::kFeatures: return "features";
    case Role::kFeatureGrad: return "grad_features";
    case Role::kRois: return "rois";
    case Role::kPooled: return is_result ? "output" : "grad";
    case Role::kArgmax: return "argmax";
  }
  return "operand";
}

// Whether a role list holds the feature-map-shaped buffer that gives N, C, H, W.
template <size_t kArgs, size_t kRets>
constexpr bool HasFeatureMap(const Role (&args)[kArgs], const Role (&rets)[kRets]) {
  for (Role r : args) {
    if (r == Role::kFeatures || r == Role::kFeatureGrad) return true;
  }
  for (Role r : rets) {
    if (r == Role::kFeatures || r == Role::kFeatureGrad) return true;
  }
  return false;
}

template <size_t kArgs, size_t kRets>
ffi::Error CountOperands(const std::string& op, size_t args, size_t rets) {
  if (args == kArgs && rets == kRets) return ffi::Error::Success();
  return InvalidArgument(op, "expects " + std::to_string(kArgs) + " operands and " +
                                 std::to_string(kRets) + " results, got " +
                                 std::to_string(args) + " and " + std::to_string(rets));
}

// Checks the operands and results of op `Op` (its role lists Op::kArgs and Op::kRets, its
// roi row width Op::kRoiWidth, its output channels Op::OutChannels(C, attrs)) and its
// attributes; fills `call`. The feature-map-shaped buffer is read first (it gives the
// element type and N, C, H, W), then the rois (K), then every pooled-shaped buffer.
template <typename Op>
ffi::Error DecodeCall(ffi::RemainingArgs args, ffi::RemainingRets rets,
                      const typename Op::Attrs& attrs, RoiCall* call) {
  constexpr size_t kArgs = sizeof(Op::kArgs) / sizeof(Role);
  constexpr size_t kRets = sizeof(Op::kRets) / sizeof(Role);
  static_assert(kArgs <= kMaxOperands && kRets <= kMaxOperands, "too many operands");
  static_assert(HasFeatureMap(Op::kArgs, Op::kRets), "an op reads or writes a feature map");
  const std::string op = Op::kName;
  JAX_ROI_RETURN_IF_ERROR((CountOperands<kArgs, kRets>(op, args.size(), rets.size())));

  Operand operands[kArgs + kRets];
  Role roles[kArgs + kRets];
  for (size_t i = 0; i < kArgs; ++i) {
    auto b = args.get<ffi::AnyBuffer>(i);
    if (b.has_error()) return b.error();
    operands[i] = {RoleName(Op::kArgs[i], false), b->dimensions(), b->element_type(),
                   b->untyped_data()};
    roles[i] = Op::kArgs[i];
    call->args[i] = b->untyped_data();
  }
  for (size_t i = 0; i < kRets; ++i) {
    auto b = rets.get<ffi::AnyBuffer>(i);
    if (b.has_error()) return b.error();
    operands[kArgs + i] = {RoleName(Op::kRets[i], true), (*b)->dimensions(),
                           (*b)->element_type(), (*b)->untyped_data()};
    roles[kArgs + i] = Op::kRets[i];
    call->rets[i] = (*b)->untyped_data();
  }

  RoiShape& s = call->s;
  s.channels_last = attrs.channels_last;
  s.ph = attrs.pooled_h;
  s.pw = attrs.pooled_w;
  const Operand* map = nullptr;
  for (size_t i = 0; i < kArgs + kRets; ++i) {
    if (roles[i] == Role::kFeatures || roles[i] == Role::kFeatureGrad) map = &operands[i];
  }
  JAX_ROI_RETURN_IF_ERROR(ReadFeatureShape(op, *map, &s));
  JAX_ROI_RETURN_IF_ERROR(ReadElementType(Op::kFamily, map->type, &call->type));
  for (size_t i = 0; i < kArgs + kRets; ++i) {
    if (roles[i] == Role::kRois) {
      JAX_ROI_RETURN_IF_ERROR(ReadRois(op, operands[i], call->type, Op::kRoiWidth, &s));
    }
  }
  JAX_ROI_RETURN_IF_ERROR(CheckAttrs(op, attrs));
  s.c_out = Op::OutChannels(s.c, attrs);
  if (s.c_out < 0) {
    return InvalidArgument(op, std::string("features channels must be ") + Op::kChannelsRule +
                                   ", got C = " + std::to_string(s.c));
  }
  for (size_t i = 0; i < kArgs + kRets; ++i) {
    const Operand& x = operands[i];
    if (roles[i] == Role::kPooled) {
      JAX_ROI_RETURN_IF_ERROR(CheckPooledShape(op, x, s));
      if (x.type != map->type) {
        return InvalidArgument(op, std::string(x.name) + " dtype must equal the " + map->name +
                                       " dtype");
      }
    } else if (roles[i] == Role::kArgmax) {
      JAX_ROI_RETURN_IF_ERROR(CheckPooledShape(op, x, s));
      if (x.type != ffi::DataType::S32) return InvalidArgument(op, "argmax must be int32");
    }
  }
  return ffi::Error::Success();
}

}  // namespace jax_roi

#endif  // JAX_ROI_FFI_CHECKS_H_
