#!/usr/bin/env bash
# Runs every kernel of kernels/*.cu on the CPU under a host emulation of CUDA (g++ ≥ 12, C++20):
# each block is blockDim.x std::threads with std::barrier for __syncthreads and per-warp barriers
# for shuffles. The harness checks each kernel against plain f64 loops, and the attention
# kernels inside the same permute → GEMM → softmax → GEMM pipeline as ops/attention.rs, and the
# in-kernel dropout masks against kernels/dropout_golden.txt (which qtrain-core's Philox reproduces).
# It checks kernel logic (indexing, masks, reductions, edge sizes) without a GPU; it says
# nothing about GPU memory ordering, performance, NVRTC, the driver or cuBLASLt.
#   bash crates/qtrain-cuda/dev/host-emulation/run.sh       (~40 s on 2 cores)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kernels="$here/../../../../kernels"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 - "$kernels" "$work/kernels_host.h" <<'PY'
import glob, os, re, sys
kernels, out = sys.argv[1], sys.argv[2]
parts = ['#include "shim.h"', open(os.path.join(kernels, "common.cuh")).read().replace("#pragma once", "")]
for f in sorted(glob.glob(os.path.join(kernels, "*.cu"))):
    s = open(f).read().replace('#include "common.cuh"', "")
    s = re.sub(r"extern __shared__ float (\w+)\[\];", r"float* \1 = (float*)g_dyn_smem.data();", s)
    parts.append(f"// ---- {os.path.basename(f)}\n" + s)
open(out, "w").write("\n".join(parts))
PY
cp "$here/shim.h" "$here/harness.cpp" "$work/"
g++ -std=c++20 -O1 -ffp-contract=off -pthread -o "$work/harness" "$work/harness.cpp"
"$work/harness" "$kernels/dropout_golden.txt"
