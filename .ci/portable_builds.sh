#!/usr/bin/env bash
# Compile every C++ translation unit of the extension with the compilers that take the portable
# path of cpp/cpu_dispatch.hpp (one plain copy, no target_clones): GCC for aarch64, clang, and
# GCC 11 (the per-CPU copies and the float pick need GCC 12).
# Warnings are errors (except -Wpsabi: GCC-vector arguments of inline helpers, which never cross
# a library boundary). Each build is linked into one shared object. Nothing runs: this checks the
# build, not the answers. A compiler that is not installed is reported "skipped"
# (Debian: apt-get install g++-aarch64-linux-gnu clang g++-11), so .ci/run can always call this.
# Python's and pybind11's headers come from the python on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
py_include=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
pybind_include=$(python -c "import pybind11; print(pybind11.get_include())")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(-std=c++17 -fPIC -O2 -Wall -Wextra -Wno-psabi -Werror -ffp-contract=off -Icpp
       -I"$py_include" -I"$pybind_include")

build() {  # build NAME COMPILER
  local name=$1 cxx=$2
  if ! command -v "$cxx" >/dev/null; then
    echo "portable_builds: $name skipped ($cxx not found)"
    return 0
  fi
  mkdir -p "$out/$name"
  # Two at a time: CI machines have 2 cores.
  printf '%s\n' cpp/*.cpp bindings/*.cpp |
    xargs -P2 -I{} sh -c '"$0" "$@" -c {} -o "'"$out/$name"'/$(echo {} | tr / _).o"' "$cxx" "${flags[@]}"
  "$cxx" -shared -o "$out/$name/_core.so" "$out/$name"/*.o -lpthread
  echo "portable_builds: $name: every translation unit compiled without a warning, and linked"
}

build aarch64 "${CXX_AARCH64:-aarch64-linux-gnu-g++}"
# (compgen fails where no clang++ is installed: then "skipped", not an error under pipefail)
clang=${CXX_CLANG:-$(compgen -c clang++ | sort -V | tail -1 || true)}
build clang "${clang:-clang++}"
build gcc11 "${CXX_GCC11:-g++-11}"
