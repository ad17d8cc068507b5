#!/bin/sh
# Build minja_render: build_minja_render.sh MINJA_INCLUDE_DIR NLOHMANN_INCLUDE_DIR OUT
# MINJA_INCLUDE_DIR holds minja/minja.hpp (google/minja include/, e.g. commit 021c2293);
# NLOHMANN_INCLUDE_DIR holds nlohmann/json.hpp (e.g. llama.cpp's vendor/).
set -eu
c++ -std=c++17 -O1 -o "$3" "$(dirname "$0")/minja_render.cpp" -I"$1" -I"$2"
