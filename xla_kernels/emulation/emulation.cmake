# `_jax_roi_emu`: the CUDA kernels' per-thread code run serially on the host as CPU FFI
# targets, built by the host compiler (no nvcc needed). Test-only; off by default.
option(JAX_ROI_DEVICE_EMULATION
       "Build _jax_roi_emu, the host emulation of the CUDA kernels (for tests)" OFF)
if(NOT JAX_ROI_DEVICE_EMULATION)
  return()
endif()

pybind11_add_module(_jax_roi_emu MODULE
  xla_kernels/python/emu_module.cc
  xla_kernels/emulation/roi_emu_ffi.cc)
target_link_libraries(_jax_roi_emu PRIVATE jax_roi_headers)
# The CPU build's flags (-ffp-contract=off included: rounding as on the device with
# --fmad=false), and the sanitizers when the CPU kernels get them.
target_compile_options(_jax_roi_emu PRIVATE ${JAX_ROI_CXX_FLAGS})
if(JAX_ROI_SANITIZE)
  target_compile_options(_jax_roi_emu PRIVATE ${JAX_ROI_SANITIZE_FLAGS})
  target_link_options(_jax_roi_emu PRIVATE -fsanitize=address,undefined)
endif()
install(TARGETS _jax_roi_emu LIBRARY DESTINATION jax_roi)
