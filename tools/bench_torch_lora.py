#!/usr/bin/env python3
"""PyTorch + PEFT baseline for qtrain's CPU LoRA training step (`qtrain bench --what train`,
`cargo bench --bench cpu_train_step`).

The same step as qtrain: a random model of a published Qwen shape (or bench-small), batch 1 x
SEQ tokens, LoRA r=8 alpha=32 on all seven linears, dropout 0, gradient checkpointing on,
AdamW(lr 1e-4, betas (0.9, 0.95), weight_decay 0.1). With --dtype bfloat16 the model's weights
are bf16 and the step runs under `torch.autocast("cpu", torch.bfloat16)` — what a user
fine-tuning on a CPU runs (PEFT keeps the LoRA weights in f32); with float32 everything is f32.
Prints tokens/s and the process's peak RSS as JSON.

    python3 tools/bench_torch_lora.py --threads 2 --steps 5 --shape qwen2.5-0.5b --dtype bfloat16 --seq 512

Needs torch, transformers, peft (versions are printed). CPU only.
"""
import argparse
import json
import resource
import time

import peft
import torch
import transformers

# config.json numbers of the releases (crates/qtrain-model/src/shapes.rs).
SHAPES = {
    "bench-small": ("qwen2", dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                                  num_key_value_heads=4, vocab_size=8192, tie_word_embeddings=False)),
    "qwen2.5-0.5b": ("qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                                   num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)),
    "qwen3-0.6b": ("qwen3", dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                                 num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True)),
}


def build(shape):
    family, kw = SHAPES[shape]
    common = dict(rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=4096, use_cache=False)
    if family == "qwen2":
        return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw, **common))
    return transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**kw, **common))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--shape", default="bench-small", choices=sorted(SHAPES))
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bf16 = args.dtype == "bfloat16"
    model = build(args.shape).to(torch.bfloat16 if bf16 else torch.float32)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = peft.LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = peft.get_peft_model(model, lora)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    vocab = model.config.vocab_size
    ids = torch.tensor([[(i * 37) % (vocab - 100) for i in range(args.seq)]])

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    print(json.dumps({
        "framework": "pytorch+peft", "shape": args.shape, "dtype": args.dtype, "threads": args.threads, "seq": args.seq,
        "seconds_per_step": round(sum(times) / len(times), 4), "seconds_per_step_median": round(median, 4),
        "tokens_per_second": round(args.seq / median, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
    }))


if __name__ == "__main__":
    main()
