#!/usr/bin/env python3
"""qtrain's bf16 GEMM against PyTorch's `torch.matmul` in bf16 at the Qwen linear shapes,
side by side: X [512, in] · Wᵀ, W [out, in] in bf16, the same threads. Alternates the two
(`cargo bench --bench cpu_gemm -- /bf16` and `tools/bench_torch_matmul.py`) for ROUNDS rounds,
because one run on a shared VM can swing ±20 %, and prints each round's GFLOP/s and, per shape,
the median of the per-round ratios qtrain / torch.

    python3 tools/bench_gemm_vs_torch.py --threads 2 --rounds 5 [--shape qwen2.5-0.5b]

Check the machine is idle first (`uptime`). Needs torch (tools/README.md).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench_binary():
    """Path of the compiled criterion bench (built here if needed)."""
    out = subprocess.run(["cargo", "bench", "--bench", "cpu_gemm", "--no-run", "--message-format=json"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "cpu_gemm" and msg.get("executable"):
            return msg["executable"]
    sys.exit("error: cargo did not report the cpu_gemm bench executable")


def run_qtrain(binary, threads, shapes):
    """GFLOP/s per (shape, projection): criterion's median throughput ("Gelem/s" = GFLOP/s)."""
    pattern = "(" + "|".join(re.escape(s) for s in shapes) + ")/.*/bf16" if shapes else "/bf16"
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run([binary, "--bench", pattern, "--noplot", "--sample-size", "10", "--warm-up-time", "0.5",
                          "--measurement-time", "2", "--discard-baseline"], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    result, name = {}, None
    for line in out.splitlines():
        m = re.match(r"^cpu_gemm_[^/]+/([^/]+)/([^/]+)/bf16", line)
        if m:
            name = (m.group(1), m.group(2))
        m = re.search(r"thrpt:\s+\[\S+ \S+ (\S+) (\S+)", line)
        if m and name:
            value, unit = float(m.group(1)), m.group(2)
            result[name] = value * {"Gelem/s": 1.0, "Telem/s": 1000.0, "Melem/s": 0.001}[unit]
            name = None
    return result


def run_torch(threads, shapes):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "bench_torch_matmul.py"), "--threads", str(threads)]
    for s in shapes:
        cmd += ["--shape", s]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {(d["shape"], d["proj"]): d["gflops"] for d in map(json.loads, out.splitlines())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shape", action="append", default=[], help="limit to these shapes (repeat)")
    args = ap.parse_args()
    binary = bench_binary()
    ratios = {}
    for round_ in range(1, args.rounds + 1):
        q = run_qtrain(binary, args.threads, args.shape)
        t = run_torch(args.threads, args.shape)
        for key in t:
            if key not in q:
                sys.exit(f"error: the cpu_gemm bench printed no result for {key[0]} {key[1]}")
            ratios.setdefault(key, []).append(q[key] / t[key])
            print(f"round {round_}: {key[0]} {key[1]}: qtrain {q[key]:.0f} GFLOP/s, torch {t[key]:.0f} GFLOP/s, "
                  f"ratio {q[key] / t[key]:.2f}", flush=True)
    print(f"median ratio qtrain / torch.matmul (bf16, {args.threads} threads, {args.rounds} rounds):")
    for key, r in ratios.items():
        print(f"  {key[0]:13} {key[1]:9} {statistics.median(r):.2f}  (min {min(r):.2f}, max {max(r):.2f})")


if __name__ == "__main__":
    main()
