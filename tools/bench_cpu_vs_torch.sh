#!/usr/bin/env bash
# One CPU LoRA training step, qtrain vs PyTorch + PEFT, same shape, dtype, sequence and threads:
# r 8 all-linear, dropout 0, gradient checkpointing, AdamW, batch 1. With bfloat16, qtrain keeps
# bf16 weights and runs bf16 × bf16 → f32 products; PyTorch runs bf16 weights under
# torch.autocast(bfloat16) — what a user fine-tuning on a CPU runs. Alternates the two for ROUNDS
# rounds (one pair can swing ±10–20 % on a shared VM) and prints every round (tokens/s from the
# median step, peak RSS) and the median ratio. Needs torch, transformers, peft (tools/README.md);
# check the machine is idle first (`uptime`): PyTorch's OpenMP threads suffer more from a
# competing process than rayon does.
#   tools/bench_cpu_vs_torch.sh [shape] [dtype] [threads] [rounds] [seq] [steps]
#   tools/bench_cpu_vs_torch.sh qwen2.5-0.5b bfloat16 2 5 512 4
set -euo pipefail
cd "$(dirname "$0")/.."
shape=${1:-qwen2.5-0.5b}
dtype=${2:-bfloat16}
threads=${3:-$(nproc)}
rounds=${4:-5}
seq=${5:-512}
steps=${6:-4}
export RAYON_NUM_THREADS=$threads
cargo build --release --quiet
ratios=()
for round in $(seq 1 "$rounds"); do
    q=$(./target/release/qtrain bench --shape "$shape" --torch_dtype "$dtype" --device cpu --what train \
        --max_length "$seq" --steps "$steps" --json 2>/dev/null)
    t=$(python3 tools/bench_torch_lora.py --threads "$threads" --shape "$shape" --dtype "$dtype" --seq "$seq" \
        --steps "$steps" --warmup 1 2>/dev/null)
    line=$(python3 - "$q" "$t" "$seq" <<'PY'
import json, sys
q, t, seq = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
qt = seq / q["report"]["train_step_seconds_median"]
pt = t["tokens_per_second"]
print(f"{qt/pt:.2f} qtrain {qt:.1f} tokens/s ({q['peak_rss_gib']:.2f} GiB), pytorch+peft {pt:.1f} tokens/s ({t['peak_rss_gib']:.2f} GiB)")
PY
)
    ratios+=("${line%% *}")
    echo "round $round: ${line#* }, ratio ${line%% *}x ($shape, $dtype, seq $seq, $threads threads)"
done
echo "$t" | python3 -c "import json,sys; d=json.load(sys.stdin); print('baseline versions: torch', d['torch'], 'transformers', d['transformers'], 'peft', d['peft'])"
python3 -c "import statistics,sys; r=sorted(map(float, sys.argv[1:])); print(f'median ratio {statistics.median(r):.2f}x over {len(r)} rounds (min {r[0]:.2f}x, max {r[-1]:.2f}x)')" "${ratios[@]}"
