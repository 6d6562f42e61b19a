// The per-thread work of every CUDA kernel, written once for the GPU and its host emulation.
//
// Each op below is a functor `op(i)` over a flat index space `[0, op.size())`: a CUDA
// kernel is a grid-stride loop calling it (xla_kernels/cuda/cuda_exec.cuh), and the
// emulation (xla_kernels/emulation) calls it for i = 0, 1, ... on one host thread. The
// `Run*` plans at the end choose which ops run in which order for a call; they take an
// executor (`Run(op)`, `Zero(ptr, bytes)`) so the same sequence drives both.
//
// Index spaces (consecutive i are consecutive threads of a warp):
//   pooled (forward, atomic backward): one output / incoming-gradient element, in its memory
//     order: NCHW walks the bins of one channel plane, NHWC the channels of one bin.
//   gather (deterministic backward): one feature-gradient pixel and a tile of up to
//     kGatherTile channels. NCHW: pixels of one plane are consecutive, a thread owns
//     kGatherTile consecutive channels. NHWC: the threads of one pixel are consecutive and
//     thread l owns channels l, l + G, l + 2G, ... (G threads per pixel), so each step of
//     the tile loop reads consecutive channels across the warp.
//   roi (footprints, before the gather): one roi.
//   tile mask (before the gather): one 32-roi word of one pixel tile's roi mask.
//
// The math comes from roi_math.h; nothing here re-derives geometry or interpolation.
#ifndef JAX_ROI_ROI_DEVICE_OPS_H_
#define JAX_ROI_ROI_DEVICE_OPS_H_

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "jax_roi/dtypes.h"
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

// The deterministic backward gathers: thread e owns feature-gradient pixel (n, y, x) for
// its channel tile and sums, in a fixed order (roi k ascending, then bin p, q ascending),
// what every roi of image n sends there; the order depends on nothing but the data, so the
// bits are the same on every run and for any launch configuration. Every element is
// written exactly once, so the output needs no clearing and 16-bit types need no float
// scratch.
//
// Which rois a thread visits: two small kernels first give every roi its footprint (the
// pixel rectangle its backward can reach at all, RoiFootprint) and every square tile of
// 2^shift x 2^shift pixels of every image a bit mask over the rois whose footprint meets
// the tile (TileMaskKernel). A thread then walks its tile's mask in index order and does the
// exact per-roi work (geometry, bin and sample searches) only for the rois whose footprint
// contains its pixel (RoiCursor). A roi outside the footprint sends nothing to the pixel,
// not even a zero-weight term, so skipping it changes no bit: the result is the one a walk
// over all K rois gives. Cost per thread: K/32 mask words, a footprint test per roi whose
// footprint meets the tile, and the exact work per roi whose footprint holds the pixel.

// The pixels of image n that one roi's backward can reach: rows [y0, y1), columns
// [x0, x1). n = -1 (and an empty box) for a roi that reaches none: an invalid row, or no
// sample inside the map.
struct RoiFootprint {
  int64_t n;
  int32_t y0, y1, x0, x1;  // <= H, W < 2^31 (H * W is checked to fit int32)
};

JAX_ROI_HD RoiFootprint MakeFootprint(int64_t n, const PixelRange& ry, const PixelRange& rx) {
  RoiFootprint f{-1, 0, 0, 0, 0};
  if (n < 0 || ry.begin >= ry.end || rx.begin >= rx.end) return f;
  f.n = n;
  f.y0 = static_cast<int32_t>(ry.begin);
  f.y1 = static_cast<int32_t>(ry.end);
  f.x0 = static_cast<int32_t>(rx.begin);
  f.x1 = static_cast<int32_t>(rx.end);
  return f;
}

// The gather's view of the roi lists: footprints [K] and masks [N * ty * tx][words], where
// bit j of word w of tile (n, y >> shift, x >> shift) says whether roi 32 w + j's footprint
// meets that tile. words = ceil(K / 32); both pointers are null when K = 0.
struct RoiLists {
  const RoiFootprint* fp;
  const uint32_t* mask;
  int64_t words, ty, tx;
  int shift;
};

// The rois that may reach pixel (e.n, e.y, e.x), in ascending index order: Next() gives
// the next one, -1 at the end.
class RoiCursor {
 public:
  JAX_ROI_HD RoiCursor(const RoiLists& lists, const GatherPos& e)
      : l_(lists),
        base_(((e.n * lists.ty + (e.y >> lists.shift)) * lists.tx + (e.x >> lists.shift)) *
              lists.words),
        y_(e.y),
        x_(e.x) {}

  JAX_ROI_HD int64_t Next() {
    for (;;) {
      while (bits_ == 0) {
        if (w_ + 1 >= l_.words) return -1;
        bits_ = l_.mask[base_ + ++w_];
      }
      const int64_t k = w_ * 32 + LowestBit(bits_);
      bits_ &= bits_ - 1;
      const RoiFootprint f = l_.fp[k];
      if (y_ >= f.y0 && y_ < f.y1 && x_ >= f.x0 && x_ < f.x1) return k;
    }
  }

 private:
  RoiLists l_;
  int64_t base_, y_, x_;
  int64_t w_ = -1;
  uint32_t bits_ = 0;
};

template <typename T, typename A>
JAX_ROI_HD void StoreTile(T* dfeat, const Layout& L, const GatherPos& e,
                          const A (&acc)[kGatherTile]) {
  JAX_ROI_UNROLL
  for (int j = 0; j < kGatherTile; ++j) {
    if (j < e.cn) dfeat[Offset(L.feat, e.n, e.c0 + j * e.cstep, e.y, e.x)] = Store<T>(acc[j]);
  }
}

// ---------------------------------------------------------------------------------------
// Kernels: an op's bodies bound to a call's buffers, callable per index
//
// An op's bodies are the static members of one struct (in its op file, jax_roi/ops/):
//   Forward(features, rois, L, params, PooledPos) -> A, or MaxResult<A> with an argmax
//   Scatter(grad, rois, argmax, target, L, params, PooledPos)      atomic backward
//   Gather(grad, rois, argmax, dfeat, L, params, lists, GatherPos) deterministic backward
//   Footprint(rois, k, shape, params, whole_map) -> RoiFootprint   pixels a roi reaches
// `argmax` is null for an op without one.
// ---------------------------------------------------------------------------------------

template <typename T, typename A>
JAX_ROI_HD void StoreForward(T* out, int32_t* /*argmax*/, int64_t i, A value) {
  out[i] = Store<T>(value);
}
template <typename T, typename A>
JAX_ROI_HD void StoreForward(T* out, int32_t* argmax, int64_t i, const MaxResult<A>& r) {
  out[i] = Store<T>(r.value);
  argmax[i] = r.index;
}

template <typename Body, typename T>
struct ForwardKernel {
  using A = typename Accum<T>::type;
  const T* features;
  const A* rois;
  T* out;
  int32_t* argmax;
  Layout L;
  RoiParams params;
  JAX_ROI_HD int64_t size() const { return PooledCount(L.s); }
  JAX_ROI_HD void operator()(int64_t i) const {
    StoreForward(out, argmax, i, Body::Forward(features, rois, L, params, PooledAt(L.s, i)));
  }
};

template <typename Body, typename T>
struct ScatterKernel {
  using A = typename Accum<T>::type;
  const T* grad;
  const A* rois;
  const int32_t* argmax;
  A* target;
  Layout L;
  RoiParams params;
  JAX_ROI_HD int64_t size() const { return PooledCount(L.s); }
  JAX_ROI_HD void operator()(int64_t i) const {
    Body::Scatter(grad, rois, argmax, target, L, params, PooledAt(L.s, i));
  }
};

template <typename Body, typename T>
struct GatherKernel {
  using A = typename Accum<T>::type;
  const T* grad;
  const A* rois;
  const int32_t* argmax;
  T* dfeat;
  Layout L;
  RoiParams params;
  RoiLists lists;
  JAX_ROI_HD int64_t size() const { return GatherCount(L.s); }
  JAX_ROI_HD void operator()(int64_t i) const {
    Body::Gather(grad, rois, argmax, dfeat, L, params, lists, GatherAt(L.s, i));
  }
};

// Footprint of roi i (the compute type A only: 16-bit features share float's).
template <typename Body, typename A>
struct FootprintKernel {
  const A* rois;
  RoiFootprint* fp;
  RoiShape s;
  RoiParams params;
  bool whole_map;
  JAX_ROI_HD int64_t size() const { return s.k; }
  JAX_ROI_HD void operator()(int64_t i) const {
    fp[i] = Body::template Footprint<A>(rois, i, s, params, whole_map);
  }
};

// Word w of tile t's roi mask (thread t * words + w): bit j is set when roi 32 w + j has a
// footprint in the tile's image that meets the tile. Every word is written, so the masks
// need no clearing; no two threads write the same word, so no atomics.
struct TileMaskKernel {
  const RoiFootprint* fp;
  uint32_t* mask;
  int64_t k, tiles, words, ty, tx;
  int shift;
  JAX_ROI_HD int64_t size() const { return tiles * words; }
  JAX_ROI_HD void operator()(int64_t i) const {
    const int64_t t = i / words, w = i % words;
    const int64_t n = t / (ty * tx), r = t % (ty * tx);
    const int64_t y0 = (r / tx) << shift, x0 = (r % tx) << shift;
    const int64_t y1 = y0 + (int64_t{1} << shift), x1 = x0 + (int64_t{1} << shift);
    const int64_t first = w * 32;
    const int64_t count = k - first < 32 ? k - first : 32;
    uint32_t bits = 0;
    for (int64_t j = 0; j < count; ++j) {
      const RoiFootprint f = fp[first + j];
      if (f.n == n && f.y0 < y1 && f.y1 > y0 && f.x0 < x1 && f.x1 > x0) {
        bits |= uint32_t{1} << j;
      }
    }
    mask[i] = bits;
  }
};

// Rounds a float accumulator into 16-bit storage, element by element.
template <typename T>
struct RoundKernel {
  const float* acc;
  T* out;
  int64_t count;
  JAX_ROI_HD int64_t size() const { return count; }
  JAX_ROI_HD void operator()(int64_t i) const { out[i] = Store<T>(acc[i]); }
};

// ---------------------------------------------------------------------------------------
// Plans: the kernels one call runs, in order (host code, for any executor)
// ---------------------------------------------------------------------------------------

inline int64_t FeatureCount(const RoiShape& s) { return s.n * s.c * s.h * s.w; }

// a * b and a + b for non-negative sizes, saturating at INT64_MAX (a plan too big to
// allocate then fails to allocate, rather than wrapping around).
inline int64_t MulSat(int64_t a, int64_t b) {
  return (a != 0 && b > INT64_MAX / a) ? INT64_MAX : a * b;
}
inline int64_t AddSat(int64_t a, int64_t b) { return b > INT64_MAX - a ? INT64_MAX : a + b; }
inline int64_t RoundUpSat(int64_t a, int64_t m) {
  return a > INT64_MAX - (m - 1) ? INT64_MAX : (a + m - 1) / m * m;
}

// Pixel tiles of the deterministic backward: 16 x 16 unless the masks (one bit per tile and
// roi) would pass kTileMaskBudget bytes, in which case the side doubles until they fit or a
// tile covers the whole map. 16 keeps the footprint tests per pixel close to the rois that
// really reach it; the exact work is done only for those anyway.
constexpr int kTileShift = 4;
constexpr int64_t kTileMaskBudget = int64_t{16} << 20;

struct TilePlan {
  int shift;            // tiles are 2^shift x 2^shift pixels
  int64_t ty, tx;       // tiles per image along y and x
  int64_t tiles;        // N * ty * tx
  int64_t words;        // mask words per tile: ceil(K / 32)
  int64_t mask_offset;  // scratch bytes: footprints [K] at 0, masks [tiles][words] here
  int64_t bytes;        // scratch bytes in all (INT64_MAX: does not fit)
};

inline TilePlan MakeTilePlan(const RoiShape& s) {
  TilePlan p;
  p.words = CeilDiv(s.k, 32);
  const int64_t side = s.h > s.w ? s.h : s.w;
  int64_t mask_bytes = 0;
  for (p.shift = kTileShift;; ++p.shift) {
    const int64_t t = int64_t{1} << p.shift;
    p.ty = CeilDiv(s.h, t);
    p.tx = CeilDiv(s.w, t);
    p.tiles = MulSat(MulSat(s.n, p.ty), p.tx);
    mask_bytes = MulSat(MulSat(p.tiles, p.words), int64_t{sizeof(uint32_t)});
    if (mask_bytes <= kTileMaskBudget || t >= side) break;
  }
  if (s.k == 0) {
    p.mask_offset = p.bytes = 0;
    return p;
  }
  const int64_t fp_bytes = MulSat(s.k, int64_t{sizeof(RoiFootprint)});
  p.mask_offset = RoundUpSat(fp_bytes, 256);
  p.bytes = AddSat(p.mask_offset, mask_bytes);
  return p;
}

// Scratch bytes a backward needs. Atomic: 16-bit gradients accumulate in float32
// (docs/semantics.md, "Precision") and are rounded once at the end; 32/64-bit ones need none.
// Deterministic: the roi footprints and tile masks (accumulation is in registers).
inline size_t BackwardScratchBytes(ElementType type, const RoiShape& s, bool deterministic) {
  if (deterministic) {
    const int64_t bytes = MakeTilePlan(s).bytes;
    return bytes == INT64_MAX ? SIZE_MAX : static_cast<size_t>(bytes);
  }
  const bool narrow = type == ElementType::kF16 || type == ElementType::kBF16;
  if (!narrow) return 0;
  return static_cast<size_t>(FeatureCount(s)) * sizeof(float);
}

// Which roi lists the deterministic backward builds. kFootprints is the product;
// kWholeMap lists every valid roi in every tile of its image, reproducing a walk over all
// rois (the emulation's tests compare the two bit for bit).
enum class RoiListMode { kFootprints, kWholeMap };

// The atomic backward: clear the accumulation target, scatter into it, and round it into
// the 16-bit output if it was scratch. `make_scatter(target)` builds the scatter op.
template <typename T, typename Exec, typename MakeScatter>
void RunScatterBackward(Exec& ex, void* dfeat, void* scratch, const RoiShape& s,
                        MakeScatter make_scatter) {
  using A = typename Accum<T>::type;
  constexpr bool kDirect = std::is_same<T, A>::value;
  A* target = kDirect ? static_cast<A*>(dfeat) : static_cast<A*>(scratch);
  ex.Zero(target, static_cast<size_t>(FeatureCount(s)) * sizeof(A));
  ex.Run(make_scatter(target));
  if constexpr (!kDirect) {
    ex.Run(RoundKernel<T>{target, static_cast<T*>(dfeat), FeatureCount(s)});
  }
}

// The deterministic backward: footprints, tile masks, then the gather built by
// `make_gather(lists)`. `footprints` is the op's footprint op without its output;
// `scratch` holds MakeTilePlan(s).bytes bytes (null when K = 0).
template <typename Exec, typename Footprints, typename MakeGather>
void RunGatherBackward(Exec& ex, void* scratch, const RoiShape& s, Footprints footprints,
                       MakeGather make_gather) {
  const TilePlan plan = MakeTilePlan(s);
  RoiFootprint* fp = nullptr;
  uint32_t* mask = nullptr;
  if (s.k > 0) {
    fp = static_cast<RoiFootprint*>(scratch);
    mask = reinterpret_cast<uint32_t*>(static_cast<char*>(scratch) + plan.mask_offset);
  }
  footprints.fp = fp;
  ex.Run(footprints);
  ex.Run(TileMaskKernel{fp, mask, s.k, plan.tiles, plan.words, plan.ty, plan.tx, plan.shift});
  ex.Run(make_gather(RoiLists{fp, mask, plan.words, plan.ty, plan.tx, plan.shift}));
}

// The forward of op `Body`: one thread per output element. `argmax` is null without one.
template <typename Body, typename Exec>
void RunForward(Exec& ex, ElementType type, const void* features, const void* rois, void* out,
                int32_t* argmax, const RoiShape& s, const RoiParams& params) {
  VisitElementType(type, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accum<T>::type;
    ex.Run(ForwardKernel<Body, T>{static_cast<const T*>(features), static_cast<const A*>(rois),
                                  static_cast<T*>(out), argmax, MakeLayout(s), params});
  });
}

// The backward of op `Body`, atomic or deterministic. `scratch` holds
// BackwardScratchBytes(...) bytes (may be null when 0); `argmax` is null without one.
template <typename Body, typename Exec>
void RunBackward(Exec& ex, ElementType type, const void* grad, const void* rois,
                 const int32_t* argmax, void* dfeat, void* scratch, const RoiShape& s,
                 const RoiParams& params, bool deterministic,
                 RoiListMode list_mode = RoiListMode::kFootprints) {
  VisitElementType(type, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accum<T>::type;
    const T* g = static_cast<const T*>(grad);
    const A* r = static_cast<const A*>(rois);
    const Layout L = MakeLayout(s);
    if (deterministic) {
      RunGatherBackward(
          ex, scratch, s,
          FootprintKernel<Body, A>{r, nullptr, s, params, list_mode == RoiListMode::kWholeMap},
          [&](const RoiLists& l) {
            return GatherKernel<Body, T>{g, r, argmax, static_cast<T*>(dfeat), L, params, l};
          });
      return;
    }
    RunScatterBackward<T>(ex, dfeat, scratch, s, [&](A* target) {
      return ScatterKernel<Body, T>{g, r, argmax, target, L, params};
    });
  });
}

}  // namespace device
}  // namespace jax_roi

#endif  // JAX_ROI_ROI_DEVICE_OPS_H_
