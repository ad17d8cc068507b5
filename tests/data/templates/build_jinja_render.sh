#!/bin/sh
# Build jinja_render against a llama.cpp source tree and a build of its libllama-common:
#   build_jinja_render.sh LLAMA_CPP_SRC LLAMA_BUILD_DIR OUT
# e.g. /work/ext/llama_cpp_python-0.3.36/vendor/llama.cpp /work/ext/llama-build /tmp/jinja_render
set -eu
SRC=$1 BUILD=$2 OUT=$3
c++ -std=c++17 -O1 -o "$OUT" "$(dirname "$0")/jinja_render.cpp" \
    -I"$SRC/common" -I"$SRC/include" -I"$SRC/vendor" -I"$SRC/ggml/include" \
    -L"$BUILD/bin" -lllama-common -lllama -Wl,-rpath,"$BUILD/bin"
