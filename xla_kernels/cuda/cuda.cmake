# The CUDA kernels and their pybind11 module `_jax_roi_cuda` (included by CMakeLists.txt).
#   JAX_ROI_CUDA=AUTO  build them when a CUDA compiler is found (the default)
#   JAX_ROI_CUDA=ON    build them; fail without a CUDA compiler
#   JAX_ROI_CUDA=OFF   skip them
# Kernels (.cu) go through nvcc into a static library; the FFI handlers and pybind11 go
# through the host compiler only (pybind11 never meets nvcc). The CUDA runtime is linked
# statically: there is no libcudart.so to match at run time, only the driver.
string(TOUPPER "${JAX_ROI_CUDA}" _jax_roi_cuda_mode)
if(_jax_roi_cuda_mode STREQUAL "AUTO")
  set(_jax_roi_cuda_required OFF)
elseif(JAX_ROI_CUDA)
  set(_jax_roi_cuda_required ON)
else()
  message(STATUS "jax_roi: CUDA kernels skipped (JAX_ROI_CUDA=${JAX_ROI_CUDA})")
  return()
endif()

include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  if(_jax_roi_cuda_required)
    message(FATAL_ERROR "JAX_ROI_CUDA=${JAX_ROI_CUDA} but no CUDA compiler was found "
                        "(put nvcc on PATH or set CUDACXX)")
  endif()
  message(STATUS "jax_roi: no CUDA compiler found, building without the CUDA kernels")
  return()
endif()

# SASS for Ampere and Hopper, and compute_90 PTX for anything newer (the driver compiles it).
# Must be set before enable_language(CUDA).
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "80-real;90-real;90-virtual")
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
message(STATUS "jax_roi: CUDA kernels for ${CMAKE_CUDA_ARCHITECTURES} (nvcc ${CMAKE_CUDA_COMPILER_VERSION})")

add_library(jax_roi_cuda_kernels STATIC xla_kernels/cuda/launch.cu)
target_include_directories(jax_roi_cuda_kernels PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/xla_kernels/include)
set_target_properties(jax_roi_cuda_kernels PROPERTIES
  CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON POSITION_INDEPENDENT_CODE ON)
# --fmad=false: no fused multiply-adds, so device rounding matches the CPU build's
# -ffp-contract=off and the host emulation of these kernels bit for bit.
target_compile_options(jax_roi_cuda_kernels PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:--fmad=false -Xcompiler=-Wall>)

jax_roi_add_module(_jax_roi_cuda Cuda "jax_roi_" xla_kernels/cuda/cuda_handlers.cc)
target_link_libraries(_jax_roi_cuda PRIVATE jax_roi_cuda_kernels CUDA::cudart_static)
