#!/usr/bin/env bash
# The device check, for a machine with a CUDA GPU (one command, from a clean tree, a few
# minutes on an H100/H200): builds the extension with CUDA, runs the GPU tests, runs
# compute-sanitizer's memcheck and racecheck over a short selection of them, and prints the
# GPU benchmark table (bench/gpu_table.py). Exits non-zero on any failure.
#
#   bash bench/gpu_check.sh            # the whole check
#   SKIP_BUILD=1 bash bench/gpu_check.sh   # reuse an installed build
#
# It expects Python with torch (a CUDA build), numpy, pytest, pybind11, scikit-build-core,
# CMake and nvcc already installed (no network needed: the build is --no-build-isolation
# --no-deps).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step() { echo; echo "== $* ($((SECONDS - started)) s)"; }

step "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python -c "import torch, numpy, pytest; assert torch.cuda.is_available(), 'torch has no CUDA'; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
[ -x "$SANITIZER" ] || { echo "compute-sanitizer not found"; exit 1; }

if [ -z "${SKIP_BUILD:-}" ]; then
  step "build (APPORTION_CUDA=ON: fails if nvcc is missing)"
  python -m pip install --no-build-isolation --no-deps -q -e . -Ccmake.define.APPORTION_CUDA=ON \
    -Cbuild-dir=build/gpu
fi
python -c "import apportion; assert apportion.cuda_available(), 'no CUDA device seen by apportion'; print('apportion CUDA devices:', apportion.cuda_device_count())"

step "GPU tests"
timeout 300 python -m pytest tests/test_cuda.py -q -p no:cacheprovider -m gpu -rs

# A short selection under the sanitizers: every kernel (Lagrangian in shared and in global
# memory, several launches; dp chunked and alone; the online kernel; the bad-input reports).
SELECTION='gpu and (shared_memory_edges and 256-7 or several_launches and float64 or dp_matches_cpu and 12000-True-float64 or wide_options or simulate_online_matches_cpu and float64-3-euclidean or kernel_reports_bad_costs and -1.0 or lagrangian_matches_cpu and max-per-instance-float32)'
# torch's caching allocator would hide out-of-bounds accesses inside its blocks from memcheck.
export PYTORCH_NO_CUDA_MEMORY_CACHING=1
step "compute-sanitizer memcheck"
timeout 300 "$SANITIZER" --tool memcheck --error-exitcode 1 --target-processes all \
  python -m pytest tests/test_cuda.py -q -p no:cacheprovider -k "$SELECTION"
step "compute-sanitizer racecheck"
timeout 300 "$SANITIZER" --tool racecheck --error-exitcode 1 --target-processes all \
  python -m pytest tests/test_cuda.py -q -p no:cacheprovider -k "$SELECTION and not simulate"
unset PYTORCH_NO_CUDA_MEMORY_CACHING

step "GPU benchmark table"
python bench/gpu_table.py
step "done: all GPU checks passed"
