#!/usr/bin/env python3
"""PyTorch baseline for `cargo bench --bench cpu_gemm`: `torch.matmul` GFLOP/s at the linear
shapes of published Qwen models, X [tokens, in] · Wᵀ [in, out], in bf16 (oneDNN; on CPUs with
AMX or AVX512-BF16 it uses them) or f32. Same shape table as benches/cpu_gemm.rs.

    python3 tools/bench_torch_matmul.py --threads 2 --dtype bfloat16 [--shape qwen2.5-0.5b]

Prints one JSON object per line: shape, projection, m, n, k, gflops. CPU only.
"""
import argparse
import json
import time

import torch

# (shape, projection, out, in) — keep in sync with benches/cpu_gemm.rs.
LINEARS = {
    "qwen2.5-0.5b": [("q_proj", 896, 896), ("k_proj", 128, 896), ("o_proj", 896, 896), ("gate_proj", 4864, 896), ("down_proj", 896, 4864)],
    "qwen3-0.6b": [("q_proj", 2048, 1024), ("k_proj", 1024, 1024), ("o_proj", 1024, 2048), ("gate_proj", 3072, 1024), ("down_proj", 1024, 3072)],
    "qwen2.5-7b": [("q_proj", 3584, 3584), ("k_proj", 512, 3584), ("gate_proj", 18944, 3584), ("down_proj", 3584, 18944)],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--shape", action="append", help="limit to these shapes (repeat)")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per product")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    for shape, linears in LINEARS.items():
        if args.shape and shape not in args.shape:
            continue
        for proj, out_f, in_f in linears:
            x = torch.randn(args.tokens, in_f).to(dtype)
            w = torch.randn(out_f, in_f).to(dtype)
            wt = w.t()
            for _ in range(3):
                torch.matmul(x, wt)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                torch.matmul(x, wt)
                n += 1
            dt = (time.perf_counter() - t0) / n
            flops = 2 * args.tokens * out_f * in_f
            print(json.dumps({"shape": shape, "proj": proj, "m": args.tokens, "n": out_f, "k": in_f,
                              "dtype": args.dtype, "gflops": round(flops / dt / 1e9, 1), "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
