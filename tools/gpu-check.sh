#!/usr/bin/env bash
# Run ON the GPU machine, from the repository root, with test binaries built beforehand on the
# development machine (the GPU machine has no Rust toolchain and no network):
#
#   cargo test --release -p qtrain-cuda --no-run     # builds tests/cpu_only.rs and tests/gpu_vs_cpu.rs
#   cargo build --release                            # the qtrain binary (end-to-end runs come later)
#
# then carry target/release/deps/{cpu_only,gpu_vs_cpu}-* (or copy them into a folder named by
# QTRAIN_GPU_BIN_DIR) to the GPU machine and run:
#
#   bash tools/gpu-check.sh [--sanitize] [TEST_FILTER]
#
# It checks the device and the CUDA libraries, runs the CPU-only checks (which there also compile
# every kernel with the real libnvrtc), then every kernel against its CPU twin
# (QTRAIN_GPU_TESTS=1, one test at a time), and prints a table of the KCHECK lines and a final
# "N passed, M failed" line. --sanitize runs the kernel tests under compute-sanitizer memcheck
# (much slower; use a TEST_FILTER). QTRAIN_CUDA_SYNC=1 synchronises after every launch so a fault
# names its kernel. Full logs go to $OUT (the device tool's folder) or target/gpu-check/.
set -uo pipefail
cd "$(dirname "$0")/.."

SANITIZE=0
FILTER=""
for arg in "$@"; do
  case "$arg" in
    --sanitize) SANITIZE=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) FILTER="$arg" ;;
  esac
done

export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export QTRAIN_GPU_TESTS=1
export RUST_BACKTRACE=1
LOG_DIR="${OUT:-target/gpu-check}"
mkdir -p "$LOG_DIR"

# Newest executable named NAME-<hash> in QTRAIN_GPU_BIN_DIR or target/release/deps.
find_bin() {
  local name=$1 dir f best=""
  for dir in ${QTRAIN_GPU_BIN_DIR:-} target/release/deps; do
    [ -d "$dir" ] || continue
    for f in "$dir/$name"-*; do
      [ -f "$f" ] && [ -x "$f" ] && [[ "$f" != *.d ]] || continue
      if [ -z "$best" ] || [ "$f" -nt "$best" ]; then best=$f; fi
    done
    [ -n "$best" ] && break
  done
  echo "$best"
}

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi failed"
for lib in libnvrtc.so libcublasLt.so; do
  ls /usr/local/cuda/lib64/${lib}* >/dev/null 2>&1 && echo "found /usr/local/cuda/lib64/${lib}*" || echo "MISSING /usr/local/cuda/lib64/${lib}*"
done

CPU_BIN=$(find_bin cpu_only)
GPU_BIN=$(find_bin gpu_vs_cpu)
if [ -z "$GPU_BIN" ] || [ -z "$CPU_BIN" ]; then
  echo "test binaries not found: build them with 'cargo test --release -p qtrain-cuda --no-run' and carry target/release/deps/{cpu_only,gpu_vs_cpu}-*"
  echo "0 passed, 1 failed"
  exit 2
fi
echo "binaries: $CPU_BIN $GPU_BIN"

status=0
echo "== CPU-only checks (registry, NVRTC compile of every kernel with the real libnvrtc, cuda_available)"
timeout 300 "$CPU_BIN" --test-threads=1 --nocapture 2>&1 | tee "$LOG_DIR/cpu_only.log" | grep -E "^test |cuda_available|skipped|panicked|test result" || true
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== kernels vs CPU twins"
RUN=("$GPU_BIN" --test-threads=1 --nocapture)
[ -n "$FILTER" ] && RUN+=("$FILTER")
if [ "$SANITIZE" -eq 1 ]; then
  RUN=(compute-sanitizer --tool memcheck --leak-check no "${RUN[@]}")
fi
timeout 570 "${RUN[@]}" > "$LOG_DIR/gpu_vs_cpu.log" 2>&1
rc=$?
[ "$rc" -eq 0 ] || status=1
grep -E "seed|bit-identical|panicked|========= " "$LOG_DIR/gpu_vs_cpu.log" | head -40

echo "== results (tolerance: |gpu-cpu| <= tol*(|cpu|+rms(cpu)) per element)"
grep '^KCHECK' "$LOG_DIR/gpu_vs_cpu.log" | sed 's/^KCHECK //' | awk '
  { status=$1; $1=""; line=$0; sub(/^ /, "", line); printf "%-4s %s\n", status, line }'
pass=$(grep -c '^KCHECK PASS' "$LOG_DIR/gpu_vs_cpu.log")
fail=$(grep -c '^KCHECK FAIL' "$LOG_DIR/gpu_vs_cpu.log")
# Tests that failed without a KCHECK FAIL line (a panic before the comparison, or a timeout).
failed_tests=$(sed -n 's/^test result: .* \([0-9][0-9]*\) failed.*/\1/p' "$LOG_DIR/gpu_vs_cpu.log" | tail -1)
grep -E "^test result" "$LOG_DIR/gpu_vs_cpu.log" || { echo "test harness did not finish (exit $rc): see $LOG_DIR/gpu_vs_cpu.log"; failed_tests=${failed_tests:-1}; }
if [ "${failed_tests:-0}" -gt "$fail" ]; then
  fail=$failed_tests
  grep -E "panicked|Error|error:" "$LOG_DIR/gpu_vs_cpu.log" | head -20
fi
[ "$status" -eq 0 ] || [ "$fail" -gt 0 ] || fail=1
echo "$pass passed, $fail failed"
exit $status
