# `_jax_roi_emu`: the CUDA kernels' per-thread code run serially on the host as CPU FFI
# targets, built by the host compiler (no nvcc needed). Test-only; off by default.
option(JAX_ROI_DEVICE_EMULATION
       "Build _jax_roi_emu, the host emulation of the CUDA kernels (for tests)" OFF)
if(NOT JAX_ROI_DEVICE_EMULATION)
  return()
endif()

jax_roi_add_module(_jax_roi_emu Emu "jax_roi_emu_" xla_kernels/emulation/roi_emu_ffi.cc)
target_compile_definitions(_jax_roi_emu PRIVATE JAX_ROI_EMULATION)
# The CPU build's flags (-ffp-contract=off included: rounding as on the device with
# --fmad=false), and the sanitizers when the CPU kernels get them.
jax_roi_sanitize(_jax_roi_emu)
