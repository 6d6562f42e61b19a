// The per-thread work of every device kernel, written once for CUDA, its host emulation and
// the CPU's generic executor.
//
// Each kernel is a functor `k(i)` over a flat index space `[0, k.size())` (device_index.h):
// a CUDA kernel is a grid-stride loop calling it (xla_kernels/cuda/cuda_exec.cuh), the
// emulation (xla_kernels/emulation) calls it for i = 0, 1, ... on one host thread, the CPU
// executor (xla_kernels/cpu/cpu_executor.h) in chunks on XLA's pool. The plans at the end
// choose which kernels run in which order for a call; they take an executor (`Run(k)`,
// `Zero(ptr, bytes)`) so the same sequence drives all three.
//
// The math comes from roi_math.h and the ops' bodies (jax_roi/ops/); nothing here
// re-derives geometry or interpolation.
#ifndef JAX_ROI_ROI_DEVICE_OPS_H_
#define JAX_ROI_ROI_DEVICE_OPS_H_

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "jax_roi/device_index.h"
#include "jax_roi/device_roi_lists.h"
#include "jax_roi/dtypes.h"
#include "jax_roi/roi_math.h"
#include "jax_roi/roi_shape.h"

namespace jax_roi {
namespace device {

// ---------------------------------------------------------------------------------------
// Kernels: an op's bodies bound to a call's buffers, callable per index
//
// An op's bodies are the static members of one struct (in its op file, jax_roi/ops/):
//   Forward(features, rois, L, params, PooledPos) -> A, or MaxResult<A> with an argmax
//   Scatter(grad, rois, argmax, target, L, params, PooledPos)      atomic backward
//   GatherRoi(grad, rois, argmax, k, L, params, GatherPos, acc)  roi k's deterministic
//     backward at one pixel: adds to the thread's channel tile `acc`
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

// A deterministic-backward thread: its pixel's channel tile summed over the rois listed for
// its tile whose footprint holds it (RoiCursor), in index order, by Body::GatherRoi.
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
    const GatherPos e = GatherAt(L.s, i);
    A acc[kGatherTile];
    JAX_ROI_UNROLL
    for (int j = 0; j < kGatherTile; ++j) acc[j] = A(0);
    RoiCursor rois_here(lists, e);  // valid rois of image e.n only
    for (int64_t k; (k = rois_here.Next()) >= 0;) {
      Body::GatherRoi(grad, rois, argmax, k, L, params, e, acc);
    }
    StoreTile(dfeat, L, e, acc);
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
