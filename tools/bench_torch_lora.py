#!/usr/bin/env python3
"""PyTorch + PEFT baseline for `cargo bench --bench cpu_train_step`.

Runs the same CPU LoRA training step as the Rust benchmark — the bench-small Qwen2 shape from
benches/shapes.rs (hidden 512, 8 layers, 8/4 heads, intermediate 1536, vocab 8192, untied),
batch 1 x 256 tokens, LoRA r=8 alpha=32 on all seven linears, gradient checkpointing on,
AdamW(lr 1e-4, betas (0.9, 0.95), weight_decay 0.1) — and prints tokens/s.

    python3 tools/bench_torch_lora.py --threads 2 --steps 10

Needs torch, transformers, peft (versions are printed). CPU only.
"""
import argparse
import json
import time

import peft
import torch
import transformers


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seq", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=4, vocab_size=8192, rope_theta=1e6, rms_norm_eps=1e-6,
        max_position_embeddings=2048, tie_word_embeddings=False, use_cache=False)
    model = transformers.Qwen2ForCausalLM(config).float()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = peft.LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = peft.get_peft_model(model, lora)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    ids = torch.tensor([[(i * 37) % 8000 for i in range(args.seq)]])

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    dt = (time.perf_counter() - t0) / args.steps
    print(json.dumps({
        "framework": "pytorch+peft", "threads": args.threads, "seq": args.seq, "seconds_per_step": round(dt, 4),
        "tokens_per_second": round(args.seq / dt, 1), "torch": torch.__version__,
        "transformers": transformers.__version__, "peft": peft.__version__,
    }))


if __name__ == "__main__":
    main()
