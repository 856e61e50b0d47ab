#!/usr/bin/env bash
# Runs what `qtrain recommend` proposes, and the ends of its learning-rate search range, on a
# synthetic 1000-row arithmetic QA set (seeded) with the embedded model, and prints each run's
# held-out eval loss and token accuracy — the evidence behind the rule in
# crates/qtrain-sweep/src/recommend.rs. Release build; about 4 minutes on 2 cores.
# Usage: tools/recommend_check.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-${TMPDIR:-/tmp}/qtrain-recommend-check}"
mkdir -p "$work"
cargo build --release --quiet
q=target/release/qtrain
python3 - "$work/arith.jsonl" <<'PY'
import json, random, sys
random.seed(0)
rows = []
for i in range(1000):
    a, b = random.randint(0, 50), random.randint(0, 50)
    op, val = ("plus", a + b) if i % 2 == 0 else ("times", a * b)
    rows.append({"query": f"What is {a} {op} {b}?", "response": f"{a} {op} {b} is {val}."})
open(sys.argv[1], "w").write("".join(json.dumps(r) + "\n" for r in rows))
PY
rec=$("$q" recommend --dataset "$work/arith.jsonl" --json)
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$rec" "$1"; }
lr=$(field learning_rate); epochs=$(field num_train_epochs); accum=$(field gradient_accumulation_steps); warmup=$(field warmup_ratio)
run() { # name lr
  rm -rf "$work/$1"
  "$q" train --dataset "$work/arith.jsonl" --split_dataset_ratio 0.1 --output_dir "$work/$1" --learning_rate "$2" \
    --num_train_epochs "$epochs" --gradient_accumulation_steps "$accum" --warmup_ratio "$warmup" \
    --logging_steps 1000 --save_steps 100000 --device cpu >/dev/null 2>&1
  python3 - "$1" "$2" "$work/$1" <<'PY'
import glob, json, sys
rows = [json.loads(l) for l in open(glob.glob(sys.argv[3] + "/*/logging.jsonl")[0])]
ev = [r for r in rows if "eval_loss" in r][-1]
print(f"{sys.argv[1]:>12} lr {sys.argv[2]:>8}: eval_loss {ev['eval_loss']:.4f}  eval_token_acc {ev['eval_token_acc']:.4f}  ({ev['global_step/max_steps']} steps)")
PY
}
echo "recommend: lr $lr, $epochs epochs, accumulation $accum, warmup_ratio $warmup"
run recommended "$lr"
run "÷3" "$(python3 -c "print(f'{$lr/3:.1e}')")"
run "×3" "$(python3 -c "print(f'{$lr*3:.1e}')")"
