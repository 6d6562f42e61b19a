// pybind11 module `_jax_roi_emu` (built only with -DJAX_ROI_DEVICE_EMULATION=ON): the host
// emulation of the CUDA kernels as CPU FFI targets `jax_roi_emu_<op>`, for tests.
#include <pybind11/pybind11.h>

#include "../emulation/emulation_handlers.h"

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
    return d;
  });
}
