// The avg kernels' banded interpolation weights (AxisTaps, AxisFootprint) and the 32-byte
// lane vectors their loops run on.
#ifndef JAX_ROI_CPU_TAPS_H_
#define JAX_ROI_CPU_TAPS_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "half_lanes.h"
#include "jax_roi/dtypes.h"
#include "jax_roi/roi_math.h"

namespace jax_roi {
namespace cpu {

// The interpolation taps of one roi along one axis, per bin: the distinct pixels that the
// bin's inside samples touch, ascending, each with its summed weight. Bilinear weights factor
// into a row part and a column part, and the out-of-map test does too, so the sum over a
// gh x gw grid of samples equals
//   sum_r sum_u Wy[r] * Wx[u] * v[pixel_y[r], pixel_x[u]]
// which costs (taps_y x taps_x) per bin and channel instead of 4 * gh * gw. A bin has at
// most min(2 * grid, bin width + 2) taps: small bins with many samples share pixels, large
// bins with few samples (a 20-pixel bin at sampling_ratio 2) keep only the 4 they touch.
//
// All bins of one roi get the same tap count (the largest, padded with zero weights on a
// valid pixel): the inner loops then have one trip count per roi, which the kernels
// specialise on (no data-dependent branches in the hot loop).
template <typename A>
struct AxisTaps {
  std::vector<int64_t> pixel;  // [P, len]
  std::vector<A> weight;       // [P, len]
  int64_t len = 0;
  bool band = false;           // pixel[p, j] == first[p] + j
  std::vector<int64_t> first;  // [P]

  // Every weight is divided by `divisor` (the backward folds the mean's count in once).
  void Build(const AlignAxis<A>& axis, int64_t pooled, int64_t size, A divisor = A(1)) {
    bin_start_.assign(pooled + 1, 0);
    px_.clear();
    w_.clear();
    len = 0;
    Lerp<A> t;
    for (int64_t p = 0; p < pooled; ++p) {
      const SampleRun run = InsideRun(axis, p, size);
      const size_t begin = px_.size();
      auto add = [&](int64_t at, A w) {
        // Samples move monotonically, so a pixel seen before is among the last three
        // entries. (Missing a repeat would only split its weight over two taps.)
        const size_t n = px_.size(), stop = std::max(begin, n >= 3 ? n - 3 : size_t{0});
        for (size_t j = n; j > stop; --j) {
          if (px_[j - 1] == at) {
            w_[j - 1] += w;
            return;
          }
        }
        px_.push_back(at);
        w_.push_back(w);
      };
      for (int64_t i = run.lo; i < run.hi; ++i) {
        if (!LerpAt(SampleCoord(axis, p, i), size, &t)) continue;
        add(t.lo, t.wlo);
        add(t.hi, t.whi);
      }
      bin_start_[p + 1] = static_cast<int64_t>(px_.size());
      len = std::max<int64_t>(len, bin_start_[p + 1] - bin_start_[p]);
    }
    // Dense bins (the usual case: bins of a few pixels) become bands of consecutive pixels,
    // which NCHW kernels read without the pixel table, as one short contiguous run.
    int64_t span = 0;
    for (int64_t p = 0; p < pooled; ++p) {
      const int64_t b = bin_start_[p], e = bin_start_[p + 1];
      if (e == b) continue;
      const auto mm = std::minmax_element(px_.begin() + b, px_.begin() + e);
      span = std::max<int64_t>(span, *mm.second - *mm.first + 1);
    }
    band = span <= len + 1;
    if (band) len = span;
    first.assign(pooled, 0);
    pixel.assign(static_cast<size_t>(pooled * len), 0);
    weight.assign(static_cast<size_t>(pooled * len), A(0));
    if (band) {
      for (int64_t p = 0; p < pooled; ++p) {
        const int64_t b = bin_start_[p], e = bin_start_[p + 1];
        // Shifted to stay inside the map; a bin with no inside sample keeps zero weights.
        first[p] = e > b ? std::min(*std::min_element(px_.begin() + b, px_.begin() + e),
                                    size - len)
                         : 0;
        for (int64_t j = 0; j < len; ++j) pixel[p * len + j] = first[p] + j;
        for (int64_t j = b; j < e; ++j) weight[p * len + px_[j] - first[p]] += w_[j] / divisor;
      }
      return;
    }
    for (int64_t p = 0; p < pooled; ++p) {
      const int64_t b = bin_start_[p], n = bin_start_[p + 1] - b;
      // Ascending pixels: a descending axis (reversed box) reads memory forwards too.
      order_.resize(n);
      for (int64_t j = 0; j < n; ++j) order_[j] = j;
      std::sort(order_.begin(), order_.end(),
                [&](int64_t a, int64_t c) { return px_[b + a] < px_[b + c]; });
      for (int64_t j = 0; j < len; ++j) {
        // Padding repeats a valid pixel (or pixel 0 for a bin with no inside sample).
        const int64_t src = j < n ? b + order_[j] : (n > 0 ? b + order_[n - 1] : -1);
        pixel[p * len + j] = src >= 0 ? px_[src] : 0;
        weight[p * len + j] = j < n ? w_[src] / divisor : A(0);
      }
    }
  }
  const int64_t* Pixels(int64_t p) const { return pixel.data() + p * len; }
  const A* Weights(int64_t p) const { return weight.data() + p * len; }

 private:
  std::vector<int64_t> bin_start_, px_, order_;
  std::vector<A> w_;
};

// The transpose of AxisTaps: the distinct pixels that any bin of the roi touches along one
// axis, ascending, and for each the (bin, weight) pairs that reach it, bins ascending. The
// backward sums a pixel's contributions through it before one update of the gradient,
// instead of one read-modify-write per (bin, tap): neighbouring bins share pixels.
template <typename A>
struct AxisFootprint {
  std::vector<int64_t> pixel;  // [n]
  std::vector<int64_t> start;  // [n + 1]: pixel i's pairs are [start[i], start[i + 1])
  std::vector<int64_t> bin;
  std::vector<A> weight;
  bool contiguous = false;     // pixel[i] == pixel[0] + i

  void Build(const AxisTaps<A>& taps, int64_t pooled) {
    entries_.clear();
    for (int64_t p = 0; p < pooled; ++p)
      for (int64_t j = 0; j < taps.len; ++j) {
        const A w = taps.Weights(p)[j];
        // Padding and untouched band pixels carry no weight.
        if (w != A(0)) entries_.push_back({taps.Pixels(p)[j], p, w});
      }
    std::stable_sort(entries_.begin(), entries_.end(),
                     [](const Entry& a, const Entry& b) { return a.pixel < b.pixel; });
    pixel.clear();
    start.assign(1, 0);
    bin.clear();
    weight.clear();
    for (const Entry& e : entries_) {
      if (pixel.empty() || pixel.back() != e.pixel) {
        if (!pixel.empty()) start.push_back(static_cast<int64_t>(bin.size()));
        pixel.push_back(e.pixel);
      }
      bin.push_back(e.bin);
      weight.push_back(e.w);
    }
    start.push_back(static_cast<int64_t>(bin.size()));
    if (pixel.empty()) start.assign(1, 0);
    contiguous = pixel.empty() || pixel.back() - pixel.front() + 1 == static_cast<int64_t>(pixel.size());
  }
  int64_t size() const { return static_cast<int64_t>(pixel.size()); }

 private:
  struct Entry {
    int64_t pixel, bin;
    A w;
  };
  std::vector<Entry> entries_;
};

// Calls fn(std::integral_constant<int, L>) with L = n for the common tap counts (2 to 5)
// and L = 0 (count known only at run time) otherwise.
template <typename F>
inline void WithTapCount(int64_t n, F&& fn) {
  switch (n) {
    case 2: return fn(std::integral_constant<int, 2>{});
    case 3: return fn(std::integral_constant<int, 3>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 5: return fn(std::integral_constant<int, 5>{});
    default: return fn(std::integral_constant<int, 0>{});
  }
}

// 32 bytes of accumulators as one GCC vector-extension value: an AVX register in the AVX2
// clone, two SSE registers in the baseline one. Written out because the auto-vectoriser
// split a 16-float accumulator array into 8 + 4 + 2 + 1 + 1 lanes. Lane arithmetic is the
// scalar code's, in its order (no fusion: -ffp-contract=off), so results are the same bits.
template <typename A>
struct Lanes {
  typedef A type __attribute__((vector_size(32)));
  static constexpr int64_t kCount = 32 / sizeof(A);
};
static_assert(std::is_same<Lanes<float>::type, Float8>::value, "half_lanes.h works on Float8");

// Lanes<A> at any address of an A: a typed vector move (one 32-byte instruction) where a
// 32-byte memcpy is expanded into 16-byte halves through the stack.
template <typename A>
struct UnalignedLanes {
  typedef A type __attribute__((vector_size(32), aligned(alignof(A)), may_alias));
};

// kCount consecutive elements of T widened to A. Through a pointer, and always inlined: a
// 32-byte vector passed by value has a different ABI in the AVX2 and baseline clones.
template <typename A, typename T>
__attribute__((always_inline)) inline void LoadLanes(const T* p, typename Lanes<A>::type* v) {
  if constexpr (std::is_same<T, A>::value) {
    *v = *reinterpret_cast<const typename UnalignedLanes<A>::type*>(p);
  } else if constexpr (std::is_same<T, Half>::value && std::is_same<A, float>::value) {
    HalfLanesToFloat(&p->bits, v);
  } else {
    for (int64_t i = 0; i < Lanes<A>::kCount; ++i) (*v)[i] = Load<A>(p[i]);
  }
}

// kCount accumulators rounded once into consecutive elements of T.
template <typename A, typename T>
__attribute__((always_inline)) inline void StoreLanes(const typename Lanes<A>::type* v, T* p) {
  if constexpr (std::is_same<T, A>::value) {
    *reinterpret_cast<typename UnalignedLanes<A>::type*>(p) = *v;
  } else if constexpr (std::is_same<T, Half>::value && std::is_same<A, float>::value) {
    FloatLanesToHalf(v, &p->bits);
  } else {
    for (int64_t i = 0; i < Lanes<A>::kCount; ++i) p[i] = Store<T>((*v)[i]);
  }
}

// src[0..n) / divisor rounded once into dst[0..n), kCount lanes at a time (division by 1 is
// exact, so finishes that only round pass A(1)).
template <typename A, typename T>
__attribute__((always_inline)) inline void StoreRun(const A* src, int64_t n, A divisor, T* dst) {
  using V = typename Lanes<A>::type;
  constexpr int64_t kL = Lanes<A>::kCount;
  int64_t i = 0;
  for (; i + kL <= n; i += kL) {
    V v;
    LoadLanes<A>(src + i, &v);
    v /= divisor;
    StoreLanes<A>(&v, dst + i);
  }
  for (; i < n; ++i) dst[i] = Store<T>(src[i] / divisor);
}

}  // namespace cpu
}  // namespace jax_roi

#endif  // JAX_ROI_CPU_TAPS_H_
