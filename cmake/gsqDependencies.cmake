# Finds what gsq's headers need; shared by the build tree and the installed package config.
#   Eigen3::Eigen        libeigen3-dev
#   nlohmann_json        nlohmann-json3-dev (safetensors headers, JSON)
#   gsq::thrust          Thrust/CUB headers: the CUDA toolkit's CCCL when a toolkit is present,
#                        else Debian's libthrust-dev (CPU-only users need no toolkit)
#   OpenMP::OpenMP_CXX   when the compiler supports it (GSQ_WITH_OPENMP)
#   gsq::pcre2, ICU::uc  the tokenizer's (gsq/text/, target gsq::text): libpcre2-dev and
#                        libicu-dev; when both are found, GSQ_WITH_TEXT is ON
include(CMakeFindDependencyMacro)
find_dependency(Eigen3 3.3 NO_MODULE)
find_dependency(nlohmann_json 3)

if(NOT TARGET gsq::thrust)
  find_path(GSQ_THRUST_INCLUDE_DIR thrust/version.h
    HINTS ${CUDAToolkit_INCLUDE_DIRS}/cccl $ENV{CUDA_HOME}/include/cccl /usr/local/cuda/include/cccl
    PATHS /usr/include
    DOC "Directory holding thrust/ (CUDA toolkit CCCL or libthrust-dev)")
  if(NOT GSQ_THRUST_INCLUDE_DIR)
    message(FATAL_ERROR "gsq needs Thrust: install the CUDA toolkit or Debian's libthrust-dev, "
                        "or set GSQ_THRUST_INCLUDE_DIR")
  endif()
  add_library(gsq::thrust INTERFACE IMPORTED)
  set_target_properties(gsq::thrust PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${GSQ_THRUST_INCLUDE_DIR}"
    INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${GSQ_THRUST_INCLUDE_DIR}")
endif()

find_package(OpenMP QUIET COMPONENTS CXX)
if(OpenMP_CXX_FOUND)
  set(GSQ_WITH_OPENMP ON)
else()
  set(GSQ_WITH_OPENMP OFF)
endif()

if(NOT TARGET gsq::pcre2)
  find_path(GSQ_PCRE2_INCLUDE_DIR pcre2.h DOC "Directory holding pcre2.h (libpcre2-dev)")
  find_library(GSQ_PCRE2_LIBRARY pcre2-8 DOC "PCRE2's 8-bit library (libpcre2-dev)")
  if(GSQ_PCRE2_INCLUDE_DIR AND GSQ_PCRE2_LIBRARY)
    add_library(gsq::pcre2 UNKNOWN IMPORTED)
    set_target_properties(gsq::pcre2 PROPERTIES IMPORTED_LOCATION "${GSQ_PCRE2_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${GSQ_PCRE2_INCLUDE_DIR}")
  endif()
endif()
find_package(ICU QUIET COMPONENTS uc)
if(TARGET gsq::pcre2 AND ICU_FOUND)
  set(GSQ_WITH_TEXT ON)
else()
  set(GSQ_WITH_TEXT OFF)
endif()
