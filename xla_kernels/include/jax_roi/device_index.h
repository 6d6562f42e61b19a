// Where a device thread works: the strides of a call's tensors and the index spaces of its
// kernels (consecutive i are consecutive threads of a warp):
//   pooled (forward, atomic backward): one output / incoming-gradient element, in its memory
//     order: NCHW walks the bins of one channel plane, NHWC the channels of one bin.
//   gather (deterministic backward): one feature-gradient pixel and a tile of up to
//     kGatherTile channels. NCHW: pixels of one plane are consecutive, a thread owns
//     kGatherTile consecutive channels. NHWC: the threads of one pixel are consecutive and
//     thread l owns channels l, l + G, l + 2G, ... (G threads per pixel), so each step of
//     the tile loop reads consecutive channels across the warp.
//   roi (footprints, before the gather): one roi.
//   tile mask (before the gather): one 32-roi word of one pixel tile's roi mask.
#ifndef JAX_ROI_DEVICE_INDEX_H_
#define JAX_ROI_DEVICE_INDEX_H_

#include <cstdint>

#include "jax_roi/roi_math.h"
#include "jax_roi/roi_shape.h"

// Device passes only: keeps the channel-tile accumulators in registers.
#if defined(__CUDA_ARCH__)
#define JAX_ROI_UNROLL _Pragma("unroll")
#else
#define JAX_ROI_UNROLL
#endif

namespace jax_roi {
namespace device {

// Channels per deterministic-backward thread: the roi loop (the gather's main cost) is
// shared by the tile, while the accumulators stay in registers.
constexpr int kGatherTile = 4;

// Index of the lowest set bit of a non-zero word.
JAX_ROI_HD int LowestBit(uint32_t v) {
#if defined(__CUDA_ARCH__)
  return __ffs(static_cast<int>(v)) - 1;
#else
  return __builtin_ctz(v);
#endif
}

// Element strides of a 4-D tensor [outer, C, rows, cols] stored in either layout.
struct Strides {
  int64_t outer, c, y, x;
};

JAX_ROI_HD Strides MakeStrides(int64_t c, int64_t rows, int64_t cols, bool channels_last) {
  Strides st;
  st.outer = c * rows * cols;
  st.c = channels_last ? 1 : rows * cols;
  st.y = channels_last ? cols * c : cols;
  st.x = channels_last ? c : 1;
  return st;
}

JAX_ROI_HD int64_t Offset(const Strides& st, int64_t outer, int64_t c, int64_t y, int64_t x) {
  return outer * st.outer + c * st.c + y * st.y + x * st.x;
}

// One call's sizes with the strides of its feature-shaped and pooled-shaped tensors.
struct Layout {
  RoiShape s;
  Strides feat, pooled;
};

inline Layout MakeLayout(const RoiShape& s) {
  Layout l;
  l.s = s;
  l.feat = MakeStrides(s.c, s.h, s.w, s.channels_last);
  l.pooled = MakeStrides(s.c, s.ph, s.pw, s.channels_last);
  return l;
}

// ---------------------------------------------------------------------------------------
// Index spaces
// ---------------------------------------------------------------------------------------

struct PooledPos {
  int64_t k, c, p, q;
};

JAX_ROI_HD int64_t PooledCount(const RoiShape& s) { return s.k * s.c * s.ph * s.pw; }

// Element i of a pooled tensor in its memory order (so element i lives at offset i).
JAX_ROI_HD PooledPos PooledAt(const RoiShape& s, int64_t i) {
  PooledPos e;
  if (s.channels_last) {
    e.c = i % s.c;
    i /= s.c;
    e.q = i % s.pw;
    i /= s.pw;
    e.p = i % s.ph;
    e.k = i / s.ph;
  } else {
    e.q = i % s.pw;
    i /= s.pw;
    e.p = i % s.ph;
    i /= s.ph;
    e.c = i % s.c;
    e.k = i / s.c;
  }
  return e;
}

// A deterministic-backward thread: pixel (n, y, x) and channels c0 + j * cstep, j < cn.
struct GatherPos {
  int64_t n, y, x, c0, cstep, cn;
};

JAX_ROI_HD int64_t GatherCount(const RoiShape& s) {
  return s.n * s.h * s.w * CeilDiv(s.c, kGatherTile);
}

JAX_ROI_HD GatherPos GatherAt(const RoiShape& s, int64_t i) {
  const int64_t groups = CeilDiv(s.c, kGatherTile);
  GatherPos e;
  if (s.channels_last) {
    const int64_t l = i % groups;
    i /= groups;
    e.x = i % s.w;
    i /= s.w;
    e.y = i % s.h;
    e.n = i / s.h;
    e.c0 = l;
    e.cstep = groups;
    e.cn = CeilDiv(s.c - l, groups);  // <= kGatherTile as groups * kGatherTile >= C
  } else {
    e.x = i % s.w;
    i /= s.w;
    e.y = i % s.h;
    i /= s.h;
    const int64_t t = i % groups;
    e.n = i / groups;
    e.c0 = t * kGatherTile;
    e.cstep = 1;
    e.cn = s.c - e.c0 < kGatherTile ? s.c - e.c0 : kGatherTile;
  }
  return e;
}

// ---------------------------------------------------------------------------------------
// Per-element math
// ---------------------------------------------------------------------------------------

template <typename A>
struct MaxResult {
  A value;
  int32_t index;  // -1: no winner (empty bin, invalid row, or an out-of-map sample won)
};

// The hook through which the scatter backward adds into the gradient: atomicAdd on the
// device (float and double: native on sm_60+), a plain += in the one-thread emulation.
template <typename A>
JAX_ROI_HD void AtomicAdd(A* address, A value) {
#if defined(__CUDA_ARCH__)
  atomicAdd(address, value);
#else
  *address += value;
#endif
}

}  // namespace device
}  // namespace jax_roi

#endif  // JAX_ROI_DEVICE_INDEX_H_
