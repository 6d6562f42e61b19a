// roi_align avg backward on the CPU, NCHW and NHWC. Tasks are (image, band of rows, channel
// block) triples over a per-call table of each roi's rows and columns, so each gradient
// element has one writer and a fixed summation order: the same bits for any thread count.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "cpu_common.h"
#include "cpu_kernels.h"
#include "jax_roi/dtypes.h"
#include "jax_roi/roi_math.h"
#include "roi_align_cpu.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {
namespace cpu {
namespace {

// The avg backward's geometry of one roi, built once per call and read by every band task
// that the roi reaches: the rows and columns it touches, each with the (bin, weight) pairs
// that reach it; the row weights carry the mean's 1/count.
template <typename A>
struct AvgBwdRoi {
  AxisFootprint<A> fy, fx;
};

// Which rows of which image one roi reaches: the band tasks scan these (24 bytes per roi)
// rather than the footprints themselves.
struct RowSpan {
  int64_t n = -1;  // -1: the roi adds nothing
  int64_t lo = 0, hi = 0;
};

template <typename A>
struct AvgBwdTable {
  std::vector<AvgBwdRoi<A>> roi;
  std::vector<RowSpan> span;
  // NCHW only: the incoming gradient as [K, PH, PW, C] (rois that add nothing are left
  // unset), so that both layouts run the same channels-innermost loop.
  std::unique_ptr<A[]> grad_cl;
};

// A table for one backward call, from the tables of finished calls where one is idle: the
// footprints are a few small vectors per roi, and allocating them afresh (thousands of
// mallocs per call) is a visible share of a small backward. A reused table keeps its
// vectors' capacity; the channels-last copy of the gradient is freed with each call. The
// idle list lives on the heap, never destroyed, so a call that finishes during exit is safe.
template <typename A>
std::shared_ptr<AvgBwdTable<A>> AcquireAvgBwdTable() {
  struct Idle {
    std::mutex mu;
    std::vector<AvgBwdTable<A>*> tables;
  };
  static Idle* idle = new Idle;
  AvgBwdTable<A>* table = nullptr;
  {
    std::lock_guard<std::mutex> lock(idle->mu);
    if (!idle->tables.empty()) {
      table = idle->tables.back();
      idle->tables.pop_back();
    }
  }
  if (!table) table = new AvgBwdTable<A>;
  return std::shared_ptr<AvgBwdTable<A>>(table, [](AvgBwdTable<A>* t) {
    t->grad_cl.reset();
    std::lock_guard<std::mutex> lock(idle->mu);
    // As many as calls run at once, in practice one or two.
    if (idle->tables.size() < 8) idle->tables.push_back(t);
    else delete t;
  });
}

template <typename A>
void BuildAvgBwdRoi(const A* rois, int64_t k, const RoiShape& s, const RoiParams& params,
                    AvgBwdTable<A>* table) {
  RowSpan& span = table->span[k];
  span = RowSpan{};
  const AvgRoiTaps<A>* taps = BuildAvgRoiTaps<A>(rois, k, s, params, /*fold_count=*/true);
  if (!taps) return;
  AvgBwdRoi<A>& r = table->roi[k];
  r.fy.Build(taps->y, s.ph);
  r.fx.Build(taps->x, s.pw);
  if (r.fy.size() == 0 || r.fx.size() == 0) return;
  span = RowSpan{taps->n, r.fy.pixel.front(), r.fy.pixel.back() + 1};
}

// Copies roi k's gradient [C, PH, PW] to [PH, PW, C], widened to the accumulator type.
template <typename T, typename A>
JAX_ROI_CPU_KERNEL void TransposeRoiGrad(const T* grad, int64_t k, const RoiShape& s, A* out) {
  const int64_t bins = s.ph * s.pw;
  FromPlanes(grad + k * s.c * bins, bins, bins, s.c, out + k * s.c * bins);
}

// Backward tasks: (image, band of rows, channel block), each band's gradient about 512 KiB of
// accumulators (L2), so that the read-modify-writes of overlapping rois hit cache and the
// output is written to memory once. A band holds every channel when a row of them fits
// (NHWC: the band is then one contiguous piece of the output), else 64.
struct BandPlan {
  int64_t rows, bands, cb, blocks;
};

inline BandPlan PlanBands(const RoiShape& s, int64_t accum_bytes) {
  constexpr int64_t kBudget = int64_t{1} << 19;
  const int64_t pixel = std::max<int64_t>(1, s.w) * accum_bytes;
  const int64_t cb =
      std::max<int64_t>(1, s.c * pixel <= kBudget ? s.c : std::min<int64_t>(s.c, 64));
  const int64_t rows = std::max<int64_t>(1, std::min(s.h, kBudget / (pixel * cb)));
  return BandPlan{rows, CeilDiv(s.h, rows), cb, CeilDiv(s.c, cb)};
}

// The gradient of one band task (image n, rows [y0, y1), channels [c0, c0 + cb)), always
// channels-last so that a pixel's channels are one vector run whatever the layout. It is the
// output itself where that is one contiguous piece of it (NHWC with every channel, T its own
// accumulator); otherwise a [rows, W, cb] buffer that Finish rounds (16-bit) and, for NCHW,
// transposes into the output once.
template <typename T, typename A, bool kChannelsLast>
struct BandGradient {
  BandGradient(T* out, const RoiShape& s, int64_t n, int64_t y0, int64_t y1, int64_t c0,
               int64_t cb)
      : out_(out), s_(s), n_(n), y0_(y0), y1_(y1), c0_(c0), cb_(cb),
        direct_(kChannelsLast && std::is_same<T, A>::value && cb == s.c) {
    const size_t size = static_cast<size_t>((y1 - y0) * s.w * cb);
    if (direct_) {
      base_ = reinterpret_cast<A*>(out) + (n * s.h + y0) * s.w * s.c;
      std::fill(base_, base_ + size, A(0));
    } else {
      thread_local std::vector<A> scratch;
      scratch.assign(size, A(0));
      base_ = scratch.data();
    }
  }

  // The cb accumulators of pixel (y, x).
  A* At(int64_t y, int64_t x) const { return base_ + ((y - y0_) * s_.w + x) * cb_; }

  void Finish() const {
    if (direct_) return;
    if (kChannelsLast) {
      for (int64_t y = y0_; y < y1_; ++y)
        for (int64_t x = 0; x < s_.w; ++x) {
          T* o = out_ + ((n_ * s_.h + y) * s_.w + x) * s_.c + c0_;
          StoreRun(At(y, x), cb_, A(1), o);
        }
      return;
    }
    // The band's piece of every plane is cleared first: memset writes whole cache lines
    // without reading them from memory, and the transposed stores that follow then hit
    // cache instead of each fetching its line first.
    for (int64_t c = 0; c < cb_; ++c)
      std::memset(out_ + ((n_ * s_.c + c0_ + c) * s_.h + y0_) * s_.w, 0,
                  sizeof(T) * (y1_ - y0_) * s_.w);
    for (int64_t y = y0_; y < y1_; ++y)
      ToPlanes(At(y, 0), s_.w, cb_, out_ + ((n_ * s_.c + c0_) * s_.h + y) * s_.w, s_.h * s_.w);
  }

 private:
  T* out_;
  RoiShape s_;
  int64_t n_, y0_, y1_, c0_, cb_;
  bool direct_;
  A* base_;
};

// The avg backward is separable like its forward:
//   dF[y, x, c] += sum_(p, q) Wy[p](y) * Wx[q](x) * g[p, q, c]
// over the few (bin row, bin column) pairs that reach the pixel; a pixel's channels sum their
// pairs in registers before one update of the band (NCHW reads the channels-last copy of g
// and accumulates channels-last too; its band is transposed once at the end). Every gradient
// element is written by one task, the rois in index order: the same bits for any number of
// threads.
template <typename T, bool kChannelsLast>
JAX_ROI_CPU_KERNEL void AlignAvgBwdBandTask(const T* grad,
                                            const AvgBwdTable<typename Accum<T>::type>& table,
                                            T* dfeat, const RoiShape& s, int64_t n, int64_t y0,
                                            int64_t y1, int64_t c0, int64_t cb) {
  using A = typename Accum<T>::type;
  using V = typename Lanes<A>::type;
  constexpr int64_t kL = Lanes<A>::kCount, kV = 2 * kL;
  BandGradient<T, A, kChannelsLast> band(dfeat, s, n, y0, y1, c0, cb);
  thread_local std::vector<std::pair<int64_t, A>> pairs;  // (offset of g[p, q, 0], weight)
  // Sums sum_pairs w * g[pair + c] into d[c] for c in [0, cb); G is T (NHWC) or A (NCHW).
  auto accumulate = [&](const auto* g, A* d) {
    int64_t c = 0;
    for (; c + kV <= cb; c += kV) {
      V acc0 = {}, acc1 = {};
      for (const auto& pw : pairs) {
        const V w = V{} + pw.second;
        V x0, x1;
        LoadLanes<A>(g + pw.first + c, &x0);
        LoadLanes<A>(g + pw.first + c + kL, &x1);
        acc0 += w * x0;
        acc1 += w * x1;
      }
      V d0, d1;
      LoadLanes<A>(d + c, &d0);
      LoadLanes<A>(d + c + kL, &d1);
      d0 += acc0;
      d1 += acc1;
      StoreLanes<A>(&d0, d + c);
      StoreLanes<A>(&d1, d + c + kL);
    }
    for (; c < cb; ++c) {
      A acc = A(0);
      for (const auto& pw : pairs) acc += pw.second * Load<A>(g[pw.first + c]);
      d[c] += acc;
    }
  };
  for (int64_t k = 0; k < s.k; ++k) {
    const RowSpan span = table.span[k];
    if (span.n != n || span.hi <= y0 || span.lo >= y1) continue;
    const AxisFootprint<A>& fy = table.roi[k].fy;
    const AxisFootprint<A>& fx = table.roi[k].fx;
    const int64_t j0 = std::lower_bound(fy.pixel.begin(), fy.pixel.end(), y0) - fy.pixel.begin();
    const int64_t j1 = std::lower_bound(fy.pixel.begin(), fy.pixel.end(), y1) - fy.pixel.begin();
    for (int64_t j = j0; j < j1; ++j) {
      for (int64_t i = 0; i < fx.size(); ++i) {
        pairs.clear();
        for (int64_t e = fy.start[j]; e < fy.start[j + 1]; ++e)
          for (int64_t f = fx.start[i]; f < fx.start[i + 1]; ++f)
            pairs.emplace_back(PooledIndex<true>(s, k, c0, fy.bin[e], fx.bin[f]),
                               fy.weight[e] * fx.weight[f]);
        A* d = band.At(fy.pixel[j], fx.pixel[i]);
        if (kChannelsLast) accumulate(grad, d);
        else accumulate(table.grad_cl.get(), d);
      }
    }
  }
  band.Finish();
}

}  // namespace

ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const AlignAttrs& a,
                   ops::RoiAlignAvgBwd) {
  const RoiShape s = c.s;
  const RoiParams params = ToRoiParams(a);
  return VisitBuffers(c, [&](const auto* g, const auto* r, auto* d) {
    using T = std::remove_pointer_t<decltype(d)>;
    using A = typename Accum<T>::type;
    PreferHugePages(d, FeatureBytes(s, sizeof(T)));
    const BandPlan plan = PlanBands(s, sizeof(A));
    auto table = AcquireAvgBwdTable<A>();
    table->roi.resize(s.k);
    table->span.resize(s.k);
    const size_t pooled = static_cast<size_t>(s.k * s.c * s.ph * s.pw);
    if (!s.channels_last && pooled > 0) {
      table->grad_cl.reset(new A[pooled]);
      PreferHugePages(table->grad_cl.get(), pooled * sizeof(A));
    }
    return ParallelForAfter(
        pool, s.k,
        [=](int64_t k) {
          BuildAvgBwdRoi<A>(r, k, s, params, table.get());
          if (table->grad_cl && table->span[k].n >= 0)
            TransposeRoiGrad(g, k, s, table->grad_cl.get());
        },
        s.n * plan.blocks * plan.bands, s.n * s.c * s.h * s.w + s.k * s.c * s.ph * s.pw * 16,
        [=](int64_t t) {
          const int64_t n = t / (plan.blocks * plan.bands);
          const int64_t c0 = t / plan.bands % plan.blocks * plan.cb;
          const int64_t y0 = t % plan.bands * plan.rows;
          const int64_t y1 = std::min(s.h, y0 + plan.rows), cb = std::min(plan.cb, s.c - c0);
          if (s.channels_last) AlignAvgBwdBandTask<T, true>(g, *table, d, s, n, y0, y1, c0, cb);
          else AlignAvgBwdBandTask<T, false>(g, *table, d, s, n, y0, y1, c0, cb);
        });
  });
}

}  // namespace cpu
}  // namespace jax_roi
