#!/usr/bin/env bash
# One CPU LoRA training step, qtrain vs PyTorch + PEFT, same shape, same threads. Runs ROUNDS
# back-to-back pairs (qtrain criterion bench, then the PyTorch script) and prints each pair's
# throughputs and ratio, then the median ratio: on a shared 2-core VM one pair can swing by
# ±10 %, so a single pair is not a measurement. Needs torch, transformers, peft (tools/README.md).
#   tools/bench_cpu_vs_torch.sh [threads] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
rounds=${2:-3}
export RAYON_NUM_THREADS=$threads
cargo bench --bench cpu_train_step --no-run >/dev/null 2>&1
ratios=()
for round in $(seq 1 "$rounds"); do
    cargo bench --bench cpu_train_step -- --noplot --measurement-time 8 >/tmp/qtrain_bench_train.log 2>&1
    # criterion's middle throughput estimate, in elements (tokens) per second: it switches to
    # "Kelem/s" above 1000, so the unit is read too.
    q=$(grep -A2 "lora_r8_all_linear_seq256" /tmp/qtrain_bench_train.log | python3 -c "
import re, sys
values = re.findall(r'([0-9.]+) +([KM]?)elem/s', sys.stdin.read())
value, unit = values[1]
print(round(float(value) * {'': 1, 'K': 1e3, 'M': 1e6}[unit], 2))")
    t=$(python3 tools/bench_torch_lora.py --threads "$threads" --steps 20 2>/dev/null)
    p=$(echo "$t" | python3 -c "import json,sys; print(json.load(sys.stdin)['tokens_per_second'])")
    r=$(python3 -c "print(f'{float(\"$q\")/float(\"$p\"):.2f}')")
    ratios+=("$r")
    echo "round $round: qtrain $q tokens/s, pytorch+peft $p tokens/s, ratio ${r}x ($threads threads)"
done
echo "$t" | python3 -c "import json,sys; d=json.load(sys.stdin); print('baseline versions: torch', d['torch'], 'transformers', d['transformers'], 'peft', d['peft'])"
python3 -c "import statistics,sys; r=sorted(map(float, sys.argv[1:])); print(f'median ratio {statistics.median(r):.2f}x over {len(r)} rounds (min {r[0]:.2f}x, max {r[-1]:.2f}x)')" "${ratios[@]}"
