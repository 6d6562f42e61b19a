// pybind11 module `_jax_roi_emu` (built only with -DJAX_ROI_DEVICE_EMULATION=ON): the host
// emulation of the CUDA kernels as CPU FFI targets `jax_roi_emu_<op>`, for tests.
#include <pybind11/pybind11.h>

#include "../emulation/emulation_handlers.h"
#include "jax_roi/roi_device_ops.h"
#include "jax_roi/roi_shape.h"

namespace py = pybind11;

namespace {

template <typename F>
py::capsule Capsule(F* handler) {
  static_assert(std::is_invocable_r_v<XLA_FFI_Error*, F, XLA_FFI_CallFrame*>,
                "an XLA FFI handler");
  return py::capsule(reinterpret_cast<void*>(handler));
}

}  // namespace

PYBIND11_MODULE(_jax_roi_emu, m) {
  m.doc() = "jax_roi CUDA kernels emulated on the host (test-only XLA FFI handlers)";
  m.def("registrations", []() {
    py::dict d;
    d["jax_roi_emu_roi_align_avg_fwd"] = Capsule(RoiAlignAvgFwdEmu);
    d["jax_roi_emu_roi_align_avg_bwd"] = Capsule(RoiAlignAvgBwdEmu);
    d["jax_roi_emu_roi_align_max_fwd"] = Capsule(RoiAlignMaxFwdEmu);
    d["jax_roi_emu_roi_align_max_bwd"] = Capsule(RoiAlignMaxBwdEmu);
    d["jax_roi_emu_roi_pool_fwd"] = Capsule(RoiPoolFwdEmu);
    d["jax_roi_emu_roi_pool_bwd"] = Capsule(RoiPoolBwdEmu);
    d["jax_roi_emu_roi_align_avg_bwd_whole_map"] = Capsule(RoiAlignAvgBwdWholeMapEmu);
    d["jax_roi_emu_roi_align_max_bwd_whole_map"] = Capsule(RoiAlignMaxBwdWholeMapEmu);
    d["jax_roi_emu_roi_pool_bwd_whole_map"] = Capsule(RoiPoolBwdWholeMapEmu);
    d["jax_roi_emu_roi_footprints"] = Capsule(RoiFootprintsEmu);
    return d;
  });
  // The deterministic backward's tiling and scratch for a call's sizes (host arithmetic
  // only, so huge K can be checked without allocating anything).
  m.def(
      "tile_plan",
      [](int64_t n, int64_t h, int64_t w, int64_t k) {
        jax_roi::RoiShape s;
        s.n = n;
        s.c = 1;
        s.h = h;
        s.w = w;
        s.k = k;
        s.ph = s.pw = 1;
        const jax_roi::device::TilePlan p = jax_roi::device::MakeTilePlan(s);
        py::dict d;
        d["tile"] = int64_t{1} << p.shift;
        d["tiles_y"] = p.ty;
        d["tiles_x"] = p.tx;
        d["tiles"] = p.tiles;
        d["words"] = p.words;
        d["mask_offset"] = p.mask_offset;
        d["bytes"] = p.bytes;
        d["footprint_bytes"] = static_cast<int64_t>(sizeof(jax_roi::device::RoiFootprint));
        d["mask_budget"] = jax_roi::device::kTileMaskBudget;
        return d;
      },
      py::arg("n"), py::arg("h"), py::arg("w"), py::arg("k"));
}
