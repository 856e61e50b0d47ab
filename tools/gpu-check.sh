#!/usr/bin/env bash
# The prepared GPU check: everything the CUDA backend needs verified, in one short call on a GPU
# machine (no Rust toolchain, no network there). Two commands:
#
#   here:   bash tools/gpu-check.sh --prepare
#             builds the release `qtrain` binary and the qtrain-cuda test binaries, strips them
#             into gpu-carry/ (gitignored; at most 48 MiB) and prints the folder's size;
#   there:  bash tools/gpu-check.sh            (from the repository root, gpu-carry/ carried along)
#
# There it runs six stages, each in its own process with its own timeout (about 8 minutes in
# all), and prints one PASS / FAIL / TIMEOUT / CRASH line per stage with its elapsed time:
#   1 preflight   driver, GPU, NVRTC/cuBLASLt versions and the library files actually loaded,
#                 every kernel module compiled and loaded; the CPU-only checks with real libnvrtc
#   2 kernels     every kernel against its CPU twin (fresh random inputs, outputs poisoned)
#   3 shapes      cuBLASLt at the Qwen2.5-7B linear shapes (seq 2048) vs f64 on sampled outputs,
#                 with TFLOP/s, and attention at T = 2048 vs the CPU
#   4 layer       one decoder layer at 7B dimensions, LoRA + dropout, forward + backward vs CPU
#   5 train       `qtrain train --device cuda` vs `--device cpu`, 20 steps on the tiny Qwen2 and
#                 Qwen3 fixtures, f32 and bf16, dropout 0 and 0.05 (loss and grad-norm side by
#                 side), and greedy `qtrain infer` equal on both devices
#   6 bench       the Qwen2.5-7B-shaped LoRA step (seq 2048, r 8, checkpointing, bf16 weights):
#                 ms/step, tokens/s, device peak memory (allocator and nvidia-smi), device time
#                 per phase and per op kind
# Full logs of every stage go to $OUT (the device tool's folder) or target/gpu-check/; the
# summary ends with "N passed, M failed". QTRAIN_CUDA_SYNC=1 (set for stages 2–4) synchronises
# after every kernel and GEMM so a fault names its op. `--stage N` runs one stage only;
# `--sanitize [FILTER]` runs stage 2 (or the tests matching FILTER) under compute-sanitizer
# memcheck instead (much slower).
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=gpu-carry
CARRY_LIMIT_MIB=48

prepare() {
  export CARGO_TERM_COLOR=never
  echo "== building release binaries (strip = debuginfo in the release profile)"
  cargo build --release --bin qtrain || exit 1
  local json
  json=$(cargo test --release -p qtrain-cuda --no-run --message-format=json) || exit 1
  rm -rf "$CARRY" && mkdir -p "$CARRY"
  local target_dir
  target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  cp "$target_dir/release/qtrain" "$CARRY/qtrain"
  for name in gpu_vs_cpu cpu_only; do
    local exe
    exe=$(printf '%s\n' "$json" | grep '"executable":"[^"]*/'"$name"'-[^"]*"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    [ -n "$exe" ] || { echo "no $name test binary in cargo's output"; exit 1; }
    cp "$exe" "$CARRY/$name"
  done
  # Debug info only: symbol names stay, so a panic's backtrace on the GPU machine names functions.
  strip --strip-debug "$CARRY"/qtrain "$CARRY"/gpu_vs_cpu "$CARRY"/cpu_only || exit 1
  git rev-parse HEAD > "$CARRY/COMMIT"
  ls -l "$CARRY"
  local kib
  kib=$(du -sk "$CARRY" | cut -f1)
  echo "carry folder $CARRY: $((kib / 1024)) MiB ($kib KiB), limit $CARRY_LIMIT_MIB MiB"
  [ "$kib" -le $((CARRY_LIMIT_MIB * 1024)) ] || { echo "FAIL: $CARRY is over $CARRY_LIMIT_MIB MiB"; exit 1; }
  echo "there: bash tools/gpu-check.sh   (carry: $CARRY)"
}

if [ "${1:-}" = "--prepare" ]; then
  prepare
  exit $?
fi
ONLY=""
SANITIZE=()
if [ "${1:-}" = "--stage" ]; then ONLY=${2:-}; fi
if [ "${1:-}" = "--sanitize" ]; then ONLY=2 SANITIZE=(compute-sanitizer --tool memcheck --leak-check no); fi
FILTER=()
if [ "${1:-}" = "--sanitize" ] && [ -n "${2:-}" ]; then FILTER=("$2"); fi

export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export QTRAIN_GPU_TESTS=1 RUST_BACKTRACE=1
LOGS="${OUT:-target/gpu-check}"
mkdir -p "$LOGS"
for b in qtrain gpu_vs_cpu cpu_only; do
  [ -x "$CARRY/$b" ] || { echo "missing $CARRY/$b: run 'bash tools/gpu-check.sh --prepare' on the build machine and carry $CARRY"; echo "0 passed, 1 failed"; exit 2; }
done
echo "commit $(cat "$CARRY/COMMIT" 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC')"
PASSED=0
FAILED=0

# stage NUMBER NAME TIMEOUT_S COMMAND...: runs COMMAND in its own process group with a timeout,
# full output to $LOGS/stageN-NAME.log; PASS (exit 0), TIMEOUT, CRASH (killed by a signal, e.g.
# a segfault or abort) or FAIL (any other exit), with the elapsed seconds; on failure the log's
# panics and KCHECK FAIL lines, and its tail.
stage() {
  local n=$1 name=$2 limit=$3
  shift 3
  [ -z "$ONLY" ] || [ "$ONLY" = "$n" ] || return 0
  local log="$LOGS/stage$n-$name.log" start rc status
  start=$(date +%s.%N)
  timeout --signal=KILL "$limit" "$@" > "$log" 2>&1
  rc=$?
  local secs
  secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
  if [ $rc -eq 0 ]; then status=PASS
  elif [ $rc -eq 137 ] || [ $rc -eq 124 ]; then status=TIMEOUT
  elif [ $rc -gt 128 ]; then status=CRASH
  else status=FAIL; fi
  printf '%-7s stage %s %-10s %6.1f s (limit %s s)  log: %s\n' "$status" "$n" "$name" "$secs" "$limit" "$log"
  grep -E '^(KCHECK|TRAIN|INFER|BENCH|device:|libraries:)|TFLOP/s|attention T=' "$log" | sed 's/^/    /'
  if [ "$status" = PASS ]; then
    PASSED=$((PASSED + 1))
  else
    FAILED=$((FAILED + 1))
    grep -nE "panicked|FAILED|error" "$log" | head -20 | sed 's/^/    ! /'
    tail -n 15 "$log" | sed 's/^/    | /'
  fi
}

GPU_TEST=("$CARRY/gpu_vs_cpu" --test-threads=1 --nocapture)
SLOW=(--skip production_ --skip decoder_layer --skip preflight)

stage_preflight() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv || return 1
  ls -l /usr/local/cuda/lib64/libnvrtc.so* /usr/local/cuda/lib64/libcublasLt.so* 2>&1
  "$CARRY/gpu_vs_cpu" --test-threads=1 --nocapture preflight || return 1
  "$CARRY/cpu_only" --test-threads=1 --nocapture
}

# One tiny-model training run: prints "step loss grad_norm" lines.
train_run() {
  local model=$1 device=$2 dtype=$3 dropout=$4 out=$5
  rm -rf "$out"
  "$CARRY/qtrain" train --model "tests/fixtures/$model" --dataset tests/fixtures/training/dataset.jsonl --output_dir "$out" \
    --max_steps 20 --logging_steps 1 --save_steps 1000 --learning_rate 1e-3 --lora_dropout "$dropout" --torch_dtype "$dtype" \
    --device "$device" > "$out.log" 2>&1 || { cat "$out.log"; return 1; }
  local logfile
  logfile=$(find "$out" -name logging.jsonl | head -1)
  grep '"grad_norm"' "$logfile" | sed -n 's/.*"loss": *\([-0-9.eE+]*\).*"grad_norm": *\([-0-9.eE+]*\).*/\1 \2/p' | awk '{ print NR, $1, $2 }'
}

stage_train() {
  local work status=0
  work=$(mktemp -d)
  for model in tiny-qwen2 tiny-qwen3; do
    for dtype in float32 bfloat16; do
      for dropout in 0 0.05; do
        local tol=2e-3
        [ "$dtype" = bfloat16 ] && tol=3e-2
        train_run "$model" cpu "$dtype" "$dropout" "$work/cpu" > "$work/cpu.txt" || return 1
        train_run "$model" cuda "$dtype" "$dropout" "$work/cuda" > "$work/cuda.txt" || return 1
        local label="$model $dtype dropout $dropout"
        echo "TRAIN $label: step, loss cpu / cuda, grad_norm cpu / cuda"
        paste "$work/cpu.txt" "$work/cuda.txt" | awk -v tol="$tol" -v label="$label" '
          function rel(a, b) { d = a - b; if (d < 0) d = -d; m = (a < 0 ? -a : a); return d / (m > 1e-12 ? m : 1e-12) }
          { worst = rel($2, $5) > worst ? rel($2, $5) : worst; gworst = rel($3, $6) > gworst ? rel($3, $6) : gworst
            printf "TRAIN   %2d  %.6f / %.6f   %.6f / %.6f\n", $1, $2, $5, $3, $6; n++ }
          END { ok = n == 20 && worst <= tol && gworst <= 4 * tol
                printf "TRAIN %s %s: %d steps, worst relative difference loss %.2e, grad_norm %.2e (tol %s / %s)\n",
                  ok ? "PASS" : "FAIL", label, n, worst, gworst, tol, 4 * tol; exit ok ? 0 : 1 }' || status=1
      done
    done
  done
  for model in tiny-qwen2 tiny-qwen3; do
    local args=(infer --model "tests/fixtures/$model" --prompt "Hi" --temperature 0 --max_new_tokens 24 --torch_dtype float32)
    local cpu cuda
    cpu=$("$CARRY/qtrain" "${args[@]}" --device cpu 2>/dev/null) || return 1
    cuda=$("$CARRY/qtrain" "${args[@]}" --device cuda 2>"$work/infer.err") || { cat "$work/infer.err"; return 1; }
    if [ "$cpu" = "$cuda" ]; then echo "INFER PASS $model greedy: identical on cpu and cuda"
    else echo "INFER FAIL $model greedy: cpu [$cpu] cuda [$cuda]"; status=1; fi
  done
  rm -rf "$work"
  return $status
}

stage_bench() {
  ( while sleep 1; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null; done ) > "$LOGS/nvidia-smi-memory.txt" &
  local sampler=$!
  "$CARRY/qtrain" bench --shape qwen2.5-7b --what train --max_length 2048 --per_device_train_batch_size 1 --lora_rank 8 \
    --gradient_checkpointing true --torch_dtype bfloat16 --device cuda --steps 3
  local rc=$?
  kill "$sampler" 2>/dev/null
  echo "BENCH nvidia-smi peak memory used: $(sort -n "$LOGS/nvidia-smi-memory.txt" | tail -1) MiB (sampled each second)"
  return $rc
}

export -f stage_preflight train_run stage_train stage_bench
export CARRY LOGS

stage 1 preflight 45 bash -c stage_preflight
if [ ${#SANITIZE[@]} -gt 0 ]; then
  stage 2 kernels 540 env QTRAIN_CUDA_SYNC=1 "${SANITIZE[@]}" "${GPU_TEST[@]}" "${SLOW[@]}" "${FILTER[@]}"
else
  stage 2 kernels 100 env QTRAIN_CUDA_SYNC=1 "${GPU_TEST[@]}" "${SLOW[@]}"
fi
stage 3 shapes 75 "${GPU_TEST[@]}" production_
stage 4 layer 60 env QTRAIN_CUDA_SYNC=1 "${GPU_TEST[@]}" decoder_layer
stage 5 train 110 bash -c stage_train
stage 6 bench 100 bash -c stage_bench
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
