# cmake -DINPUT=file -DOUTPUT=file.cpp -DSYMBOL=name -P embed.cmake
# Writes a C++ file defining nnpar::SYMBOL (the bytes of INPUT) and nnpar::SYMBOLSize, so the
# nnpar binary carries its web page and needs no files beside it.
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR size "${hex_length} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUTPUT}.tmp"
  "// Generated from ${INPUT} by embed.cmake; do not edit.\n"
  "#include <cstddef>\n"
  "namespace nnpar {\n"
  "extern const unsigned char ${SYMBOL}[] = {${bytes}0x00};\n"
  "extern const std::size_t ${SYMBOL}Size = ${size};\n"
  "}  // namespace nnpar\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
