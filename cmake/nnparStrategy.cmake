# nnpar_add_strategy(NAME SOURCES...): a strategy plugin built against an installed nnpar.
# The harness finds plugins by file name (nnpar_strategy_<NAME>.so, no "lib" prefix) and loads
# them with RTLD_LOCAL; hidden visibility keeps everything but the NNPAR_REGISTER_STRATEGY
# entry points private, so two plugins can never clash over internal symbols.
function(nnpar_add_strategy name)
  if(NOT ARGN)
    message(FATAL_ERROR "nnpar_add_strategy(${name}): no sources given")
  endif()
  set(target nnpar_strategy_${name})
  add_library(${target} MODULE ${ARGN})
  target_link_libraries(${target} PRIVATE nnpar::core)
  # The public headers use C++20 (std::span, designated initialisers).
  target_compile_features(${target} PRIVATE cxx_std_20)
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    OUTPUT_NAME ${target}
    CXX_VISIBILITY_PRESET hidden)
endfunction()
