# Sanitizer builds and fuzz targets (docs/reliability.md).
#
#   -DNNPAR_SANITIZE=address,undefined   every C++ target built and linked with these
#                                        sanitizers (GCC or Clang); UB aborts instead of
#                                        printing and going on, so a test fails on it
#   -DNNPAR_BUILD_FUZZERS=ON             the libFuzzer targets in tests/fuzz (Clang only); the
#                                        whole build gets coverage instrumentation and, unless
#                                        NNPAR_SANITIZE says otherwise, ASan + UBSan
set(NNPAR_SANITIZE "" CACHE STRING "Sanitizers for every C++ target, e.g. address,undefined (empty: none)")
option(NNPAR_BUILD_FUZZERS "Build the libFuzzer targets in tests/fuzz (needs clang)" OFF)

if(NNPAR_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "NNPAR_BUILD_FUZZERS needs clang (libFuzzer): configure with "
                        "-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang, or use scripts/fuzz.sh")
  endif()
  if(NOT NNPAR_SANITIZE)
    set(NNPAR_SANITIZE "address,undefined" CACHE STRING "" FORCE)
  endif()
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fsanitize=fuzzer-no-link>)
endif()

if(NNPAR_SANITIZE)
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${NNPAR_SANITIZE}>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-sanitize-recover=all>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-omit-frame-pointer>)
  add_link_options(-fsanitize=${NNPAR_SANITIZE})
  message(STATUS "nnpar: sanitizers ${NNPAR_SANITIZE}")
endif()
