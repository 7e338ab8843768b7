#!/usr/bin/env bash
# Compile every C++ translation unit of the extension for aarch64 (the issue-17 promise that an
# aarch64 build still compiles: cpp/cpu_dispatch.hpp must fall back to portable code there) and
# link them into one shared object. Warnings are errors. Needs a cross compiler, e.g. Debian's
# g++-aarch64-linux-gnu; without one it says so and exits 0, so .ci/run can always call it.
# Python's and pybind11's headers come from the python on PATH (they are the same on aarch64 for
# the same Python version). Nothing runs: this checks the build, not the answers.
set -euo pipefail
cd "$(dirname "$0")/.."
cxx=${CXX_AARCH64:-aarch64-linux-gnu-g++}
if ! command -v "$cxx" >/dev/null; then
  echo "cross_aarch64: $cxx not found, skipped (apt-get install g++-aarch64-linux-gnu)"
  exit 0
fi
py_include=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
pybind_include=$(python -c "import pybind11; print(pybind11.get_include())")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(-std=c++17 -fPIC -O2 -Wall -Wextra -Werror -ffp-contract=off -Icpp
       -I"$py_include" -I"$pybind_include")
# Two at a time: CI machines have 2 cores.
printf '%s\n' cpp/*.cpp bindings/*.cpp |
  xargs -P2 -I{} sh -c '"$0" "$@" -c {} -o "'"$out"'/$(echo {} | tr / _).o"' "$cxx" "${flags[@]}"
"$cxx" -shared -o "$out/_core.so" "$out"/*.o -lpthread
echo "cross_aarch64: every translation unit compiled for aarch64 without a warning, and linked"
