#!/usr/bin/env bash
# One CPU LoRA training step, qtrain vs PyTorch + PEFT, same shape, same threads, one run:
# prints both throughputs and the ratio. Needs torch, transformers, peft (see tools/README.md).
#   tools/bench_cpu_vs_torch.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
export RAYON_NUM_THREADS=$threads
cargo bench --bench cpu_train_step -- --noplot 2>&1 | tee /tmp/qtrain_bench_train.log | grep -E "time:|thrpt:"
q=$(grep -A2 "lora_r8_all_linear_seq256" /tmp/qtrain_bench_train.log | grep -o "thrpt: *\[[^]]*\]" | awk '{print $4}')
t=$(python3 tools/bench_torch_lora.py --threads "$threads" --steps 10)
echo "$t"
p=$(echo "$t" | python3 -c "import json,sys; print(json.load(sys.stdin)['tokens_per_second'])")
python3 -c "print(f'qtrain {float(\"$q\"):.1f} tokens/s, pytorch+peft {float(\"$p\"):.1f} tokens/s, ratio {float(\"$q\")/float(\"$p\"):.2f}x ({$threads} threads)')"
