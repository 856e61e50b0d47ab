#!/usr/bin/env python3
"""transformers baseline for `qtrain bench --what infer`: prefill and decode tokens/s of a random
model of a published Qwen shape on the CPU, in bf16 (weights bf16, as released) or f32.

Prefill: one forward over a PROMPT-token prompt (logits of the last position only, as qtrain).
Decode: `generate` of NEW greedy tokens after it with the KV cache (the prefill time is measured
separately and subtracted). Same random-weight convention as qtrain's --shape.

    python3 tools/bench_torch_generate.py --threads 2 --shape qwen2.5-0.5b --dtype bfloat16 --prompt 512 --new 32

Prints JSON. Needs torch and transformers. CPU only.
"""
import argparse
import json
import resource
import time

import torch
import transformers

from bench_torch_lora import SHAPES, build


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shape", default="qwen2.5-0.5b", choices=sorted(SHAPES))
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.shape).to(getattr(torch, args.dtype)).eval()
    model.config.use_cache = True
    vocab = model.config.vocab_size
    ids = torch.tensor([[(i * 37) % (vocab - 100) for i in range(args.prompt)]])
    prefill, total = [], []
    with torch.inference_mode():
        for _ in range(args.rounds + 1):
            t0 = time.perf_counter()
            model(input_ids=ids, logits_to_keep=1)
            prefill.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False)
            total.append(time.perf_counter() - t0)
    p, g = min(prefill[1:]), min(total[1:])
    print(json.dumps({
        "framework": "transformers", "shape": args.shape, "dtype": args.dtype, "threads": args.threads,
        "prefill_tokens_per_s": round(args.prompt / p, 1),
        "decode_tokens_per_s": round((args.new - 1) / max(g - p, 1e-9), 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "torch": torch.__version__, "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    main()
