// The deterministic backward's roi lists: each roi's footprint, the per-tile roi masks, the
// cursor a gather thread walks them with, and the tile plan that sizes their scratch.
#ifndef JAX_ROI_DEVICE_ROI_LISTS_H_
#define JAX_ROI_DEVICE_ROI_LISTS_H_

#include <cstddef>
#include <cstdint>

#include "jax_roi/device_index.h"
#include "jax_roi/dtypes.h"
#include "jax_roi/roi_math.h"
#include "jax_roi/roi_shape.h"

namespace jax_roi {
namespace device {

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

}  // namespace device
}  // namespace jax_roi

#endif  // JAX_ROI_DEVICE_ROI_LISTS_H_
