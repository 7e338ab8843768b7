#!/usr/bin/env bash
# Builds the extension with AddressSanitizer and UndefinedBehaviorSanitizer (CPU only) into
# build/sanitize, apart from the normal build, and runs the test suite against that build.
#   bash .ci/sanitize.sh [pytest args]      (default: tests)
# Uses `python` from PATH with the test requirements installed (as .ci/run sets up).
set -euo pipefail
cd "$(dirname "$0")/.."

out=build/sanitize
pkg=$out/pkg
cxx=${CXX:-c++}
san="-fsanitize=address,undefined,float-cast-overflow"
flags="$san -fno-sanitize-recover=undefined,float-cast-overflow -fno-omit-frame-pointer -O1 -g"
# CMakeLists.txt adds -O3 to the core library after these flags; the sanitizers work at any -O.
cmake -S . -B "$out" -DAPPORTION_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="" \
  -DPython_EXECUTABLE="$(command -v python)" -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" >/dev/null
cmake --build "$out" -j "${JOBS:-2}"

# A copy of the Python package holding the sanitized module.
rm -rf "$pkg"
mkdir -p "$pkg"
cp -r python/apportion "$pkg/"
cp "$out"/_core*.so "$pkg/apportion/"
# An editable install's import hook would win over PYTHONPATH; drop it in every process
# (tests start subprocesses), after site has run the .pth that installs it.
cat >"$pkg/sitecustomize.py" <<'EOF'
import sys
sys.meta_path[:] = [f for f in sys.meta_path
                    if not ("apportion" in type(f).__module__ and "editable" in type(f).__module__)]
EOF

# Python is not instrumented, so the sanitizer runtimes must be loaded first.
asan=$("$cxx" -print-file-name=libasan.so)
ubsan=$("$cxx" -print-file-name=libubsan.so)
export LD_PRELOAD="$asan $ubsan"
export PYTHONPATH="$PWD/$pkg"
# Python's own allocations look like leaks at exit; a failed allocation raises bad_alloc, as
# in a normal build, rather than aborting.
export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

python - "$PWD/$pkg" <<'EOF'
import sys, apportion._core as core
print("sanitized module:", core.__file__)
sys.exit(not core.__file__.startswith(sys.argv[1]))
EOF
python -m pytest -p no:cacheprovider "${@:-tests}"
