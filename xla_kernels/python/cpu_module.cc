// pybind11 module `_jax_roi_cpu`: registrations() -> {ffi target name: PyCapsule(handler)}.
#include <pybind11/pybind11.h>

#include "../cpu/cpu_handlers.h"

namespace py = pybind11;

namespace {

template <typename F>
py::capsule Capsule(F* handler) {
  static_assert(std::is_invocable_r_v<XLA_FFI_Error*, F, XLA_FFI_CallFrame*>,
                "an XLA FFI handler");
  return py::capsule(reinterpret_cast<void*>(handler));
}

}  // namespace

PYBIND11_MODULE(_jax_roi_cpu, m) {
  m.doc() = "jax_roi CPU kernels as XLA FFI handlers";
  m.def("registrations", []() {
    py::dict d;
    d["jax_roi_roi_align_avg_fwd"] = Capsule(RoiAlignAvgFwdCpu);
    d["jax_roi_roi_align_avg_bwd"] = Capsule(RoiAlignAvgBwdCpu);
    d["jax_roi_roi_align_max_fwd"] = Capsule(RoiAlignMaxFwdCpu);
    d["jax_roi_roi_align_max_bwd"] = Capsule(RoiAlignMaxBwdCpu);
    d["jax_roi_roi_pool_fwd"] = Capsule(RoiPoolFwdCpu);
    d["jax_roi_roi_pool_bwd"] = Capsule(RoiPoolBwdCpu);
    return d;
  });
}
