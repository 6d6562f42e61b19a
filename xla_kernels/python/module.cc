// The pybind11 module of one platform's kernels, compiled once per platform (CMake sets the
// macros): `_jax_roi_cpu`, `_jax_roi_cuda` and the test-only `_jax_roi_emu`.
//   registrations() -> {FFI target name: PyCapsule(handler)}, one per op of op_list.h
//   ops()           -> the op names of op_list.h, in order (Python's list of targets)
// Importing the CUDA module touches no GPU (the static CUDA runtime loads the driver on the
// first CUDA call, inside a handler).
//
//   JAX_ROI_MODULE          the module's name
//   JAX_ROI_HANDLER_SUFFIX  the handlers' suffix: Cpu, Cuda or Emu
//   JAX_ROI_TARGET_PREFIX   "jax_roi_", or "jax_roi_emu_" for the emulation
//   JAX_ROI_EMULATION       defined for the emulation, which adds its test-only extras
#include <pybind11/pybind11.h>

#include <cstdint>
#include <type_traits>

#include "jax_roi/op_list.h"
#include "xla/ffi/api/ffi.h"

#if defined(JAX_ROI_EMULATION)
#include "../emulation/emulation_handlers.h"
#include "jax_roi/roi_device_ops.h"
#include "jax_roi/roi_shape.h"
#endif

#define JAX_ROI_CAT_(a, b) a##b
#define JAX_ROI_CAT(a, b) JAX_ROI_CAT_(a, b)
#define JAX_ROI_HANDLER(Op) JAX_ROI_CAT(Op, JAX_ROI_HANDLER_SUFFIX)

#define JAX_ROI_DECLARE_HANDLER(name, Op) XLA_FFI_DECLARE_HANDLER_SYMBOL(JAX_ROI_HANDLER(Op));
JAX_ROI_OPS(JAX_ROI_DECLARE_HANDLER)
#undef JAX_ROI_DECLARE_HANDLER

namespace py = pybind11;

namespace {

template <typename F>
py::capsule Capsule(F* handler) {
  static_assert(std::is_invocable_r_v<XLA_FFI_Error*, F, XLA_FFI_CallFrame*>,
                "an XLA FFI handler");
  return py::capsule(reinterpret_cast<void*>(handler));
}

#if defined(JAX_ROI_EMULATION)
// The emulation's test-only extras: whole-map backwards, every op through the CPU's generic
// executor, footprints, and the deterministic
// backward's tiling and scratch for a call's sizes (host arithmetic only, so huge K can be
// checked without allocating anything).
void AddEmulationExtras(py::module_& m, py::dict& d) {
#define JAX_ROI_ADD_WHOLE_MAP(name, Op) \
  d[JAX_ROI_TARGET_PREFIX #name "_whole_map"] = Capsule(Op##WholeMapEmu);
  JAX_ROI_EMU_BACKWARD_OPS(JAX_ROI_ADD_WHOLE_MAP)
#undef JAX_ROI_ADD_WHOLE_MAP
#define JAX_ROI_ADD_ON_POOL(name, Op) \
  d[JAX_ROI_TARGET_PREFIX #name "_on_pool"] = Capsule(Op##OnPoolEmu);
  JAX_ROI_OPS(JAX_ROI_ADD_ON_POOL)
#undef JAX_ROI_ADD_ON_POOL
  d[JAX_ROI_TARGET_PREFIX "roi_footprints"] = Capsule(RoiFootprintsEmu);
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
        py::dict r;
        r["tile"] = int64_t{1} << p.shift;
        r["tiles_y"] = p.ty;
        r["tiles_x"] = p.tx;
        r["tiles"] = p.tiles;
        r["words"] = p.words;
        r["mask_offset"] = p.mask_offset;
        r["bytes"] = p.bytes;
        r["footprint_bytes"] = static_cast<int64_t>(sizeof(jax_roi::device::RoiFootprint));
        r["mask_budget"] = jax_roi::device::kTileMaskBudget;
        return r;
      },
      py::arg("n"), py::arg("h"), py::arg("w"), py::arg("k"));
}
#endif

}  // namespace

PYBIND11_MODULE(JAX_ROI_MODULE, m) {
  m.doc() = "jax_roi kernels as XLA FFI handlers";
  py::dict registrations;
  py::list names;
#define JAX_ROI_REGISTER(name, Op)                                               \
  registrations[JAX_ROI_TARGET_PREFIX #name] = Capsule(JAX_ROI_HANDLER(Op)); \
  names.append(#name);
  JAX_ROI_OPS(JAX_ROI_REGISTER)
#undef JAX_ROI_REGISTER
#if defined(JAX_ROI_EMULATION)
  AddEmulationExtras(m, registrations);
#endif
  m.def("registrations", [registrations]() { return registrations; });
  m.def("ops", [names]() { return names; });
}
