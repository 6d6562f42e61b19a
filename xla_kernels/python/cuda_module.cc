// pybind11 module `_jax_roi_cuda`: registrations() -> {ffi target name: PyCapsule(handler)},
// the same target names as `_jax_roi_cpu`, for platform "CUDA". Importing it touches no GPU
// (the static CUDA runtime loads the driver on the first CUDA call, inside a handler).
#include <pybind11/pybind11.h>

#include "../cuda/cuda_handlers.h"

namespace py = pybind11;

namespace {

template <typename F>
py::capsule Capsule(F* handler) {
  static_assert(std::is_invocable_r_v<XLA_FFI_Error*, F, XLA_FFI_CallFrame*>,
                "an XLA FFI handler");
  return py::capsule(reinterpret_cast<void*>(handler));
}

}  // namespace

PYBIND11_MODULE(_jax_roi_cuda, m) {
  m.doc() = "jax_roi CUDA kernels as XLA FFI handlers";
  m.def("registrations", []() {
    py::dict d;
    d["jax_roi_roi_align_avg_fwd"] = Capsule(RoiAlignAvgFwdCuda);
    d["jax_roi_roi_align_avg_bwd"] = Capsule(RoiAlignAvgBwdCuda);
    d["jax_roi_roi_align_max_fwd"] = Capsule(RoiAlignMaxFwdCuda);
    d["jax_roi_roi_align_max_bwd"] = Capsule(RoiAlignMaxBwdCuda);
    d["jax_roi_roi_pool_fwd"] = Capsule(RoiPoolFwdCuda);
    d["jax_roi_roi_pool_bwd"] = Capsule(RoiPoolBwdCuda);
    return d;
  });
}
