#!/usr/bin/env python3
"""Golden values for crates/qtrain-optim, taken from transformers and torch.

Writes, relative to the repository root:
  tests/fixtures/schedules/schedules.json  learning rates of transformers' get_scheduler per step
  tests/fixtures/schedules/adamw.json      torch.optim.AdamW + clip_grad_norm_ trajectories

Run from anywhere (needs torch and transformers; CPU only, a few seconds):
  python3 tools/dump_schedules.py

Each schedule case carries a `config` that deserialises directly into qtrain's
`ScheduleConfig`. Learning rates are read from the optimizer's param group before each
`optimizer.step()`, with `scheduler.step()` after it, as the transformers Trainer does, so
`lrs[k]` is the lr used by optimizer step k (0-based). The warmup step count comes from
`TrainingArguments(warmup_steps=...).get_warmup_steps(total)` (a float in [0, 1) is a ratio).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import tempfile

import torch
import transformers
from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainingArguments
from transformers.optimization import get_scheduler

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "fixtures" / "schedules"
BASE_LR = 1e-4
TOTAL = 200
# Steps recorded past the end of training, to pin what the formulas do there.
EXTRA_STEPS = 5


def transformers_warmup_steps(warmup: dict, total: int) -> int:
    """Warmup steps as the Trainer computes them (TrainingArguments.get_warmup_steps)."""
    value = warmup["steps"] if "steps" in warmup else warmup["ratio"]
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, warmup_steps=value, report_to="none")
        return args.get_warmup_steps(total)


def exponential_reference(optimizer, num_warmup_steps: int, gamma: float) -> LambdaLR:
    """qtrain's own `exponential` schedule (not in transformers), written independently of the
    Rust code: linear warmup as transformers does it, then gamma per step."""

    def lr_lambda(k: int) -> float:
        if k < num_warmup_steps:
            return float(k) / float(max(1, num_warmup_steps))
        return gamma ** (k - num_warmup_steps)

    return LambdaLR(optimizer, lr_lambda)


def record_schedule(config: dict) -> dict:
    kind = config["kind"]
    total = config["total_steps"]
    warmup = config.get("warmup", {"steps": 0})
    num_warmup = transformers_warmup_steps(warmup, total)
    kwargs = {k: config[k] for k in ("num_cycles", "min_lr", "min_lr_rate", "lr_end", "power") if k in config}

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=config["base_lr"])
    if kind == "exponential":
        scheduler = exponential_reference(optimizer, num_warmup, config["gamma"])
        reference = "qtrain formula as a torch LambdaLR (tools/dump_schedules.py)"
    else:
        scheduler = get_scheduler(
            kind,
            optimizer,
            num_warmup_steps=num_warmup,
            num_training_steps=total,
            scheduler_specific_kwargs=kwargs,
        )
        reference = "transformers.get_scheduler"

    lrs = []
    for _ in range(total + EXTRA_STEPS):
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.step()  # no grad: a no-op, but keeps torch's step-order check quiet
        scheduler.step()
    return {
        "reference": reference,
        "config": config,
        "num_warmup_steps": num_warmup,
        "lrs": lrs,
    }


def schedule_cases() -> list[dict]:
    per_kind = [
        {"kind": "constant"},
        {"kind": "constant_with_warmup"},
        {"kind": "linear"},
        {"kind": "cosine"},
        {"kind": "cosine", "num_cycles": 1.5},
        {"kind": "cosine_with_min_lr", "min_lr_rate": 0.1},
        {"kind": "cosine_with_min_lr", "min_lr": 1e-5},
        {"kind": "polynomial"},
        {"kind": "polynomial", "lr_end": 1e-6, "power": 2.0},
        {"kind": "exponential", "gamma": 0.98},
    ]
    cases = []
    for warmup in ({"ratio": 0.05}, {"steps": 7}):
        for extra in per_kind:
            cases.append({**extra, "base_lr": BASE_LR, "warmup": warmup, "total_steps": TOTAL})
    # Edge cases.
    cases += [
        # Non-integer ratio: 200 * 0.033 = 6.6 -> 7 steps.
        {"kind": "cosine", "base_lr": BASE_LR, "warmup": {"ratio": 0.033}, "total_steps": TOTAL},
        # Float artefact: 100 * 0.07 = 7.000000000000001 -> 8 steps.
        {"kind": "linear", "base_lr": BASE_LR, "warmup": {"ratio": 0.07}, "total_steps": 100},
        # No warmup.
        {"kind": "linear", "base_lr": BASE_LR, "warmup": {"steps": 0}, "total_steps": 10},
        {"kind": "cosine", "base_lr": BASE_LR, "warmup": {"ratio": 0.0}, "total_steps": 10},
        {"kind": "polynomial", "base_lr": BASE_LR, "warmup": {"steps": 0}, "total_steps": 10},
        # A single training step, with and without a warmup ratio (the ratio rounds up to 1).
        {"kind": "linear", "base_lr": BASE_LR, "warmup": {"steps": 0}, "total_steps": 1},
        {"kind": "linear", "base_lr": BASE_LR, "warmup": {"ratio": 0.05}, "total_steps": 1},
        {"kind": "cosine_with_min_lr", "base_lr": BASE_LR, "warmup": {"ratio": 0.05}, "total_steps": 1, "min_lr_rate": 0.1},
        # Warmup longer than the run.
        {"kind": "linear", "base_lr": BASE_LR, "warmup": {"steps": 25}, "total_steps": 20},
        {"kind": "cosine", "base_lr": 3e-4, "warmup": {"steps": 25}, "total_steps": 20},
        # Constant ignores warmup in transformers.
        {"kind": "constant", "base_lr": 2e-5, "warmup": {"ratio": 0.5}, "total_steps": 10},
    ]
    return cases


def dump_schedules() -> dict:
    return {
        "generator": "python3 tools/dump_schedules.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "cases": [record_schedule(c) for c in schedule_cases()],
    }


def flat(t: torch.Tensor) -> list[float]:
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def adamw_case(
    name: str, lrs: list[float], grad_norm_targets: list[float], seed: int, grad_multipliers: dict | None = None
) -> dict:
    """Parameters in two groups (decay 0.1 / no decay), clip_grad_norm_(1.0) then AdamW per step.

    `grad_multipliers` shrinks some parameters' gradients relative to the others (before the
    whole set is scaled to the target norm), so that eps matters for them."""
    gen = torch.Generator().manual_seed(seed)
    specs = [("w1", (4, 3), 0), ("w2", (6,), 0), ("bias", (5,), 1), ("norm", (3,), 1)]
    params = {n: torch.nn.Parameter(torch.randn(shape, generator=gen)) for n, shape, _ in specs}
    group_params = [[params[n] for n, _, g in specs if g == gi] for gi in (0, 1)]
    weight_decays = [0.1, 0.0]
    optimizer = torch.optim.AdamW(
        [{"params": ps, "weight_decay": wd} for ps, wd in zip(group_params, weight_decays)],
        lr=lrs[0],
        betas=(0.9, 0.95),
        eps=1e-8,
        foreach=False,
    )
    all_params = [params[n] for n, _, _ in specs]
    max_norm = 1.0

    record = {
        "name": name,
        "hyper": {"beta1": 0.9, "beta2": 0.95, "eps": 1e-8},
        "max_norm": max_norm,
        "groups": [
            {"weight_decay": wd, "params": [n for n, _, g in specs if g == gi]}
            for gi, wd in enumerate(weight_decays)
        ],
        "initial": {n: flat(p) for n, p in params.items()},
        "steps": [],
    }
    for lr, target in zip(lrs, grad_norm_targets):
        raw = {n: torch.randn(p.shape, generator=gen) * (grad_multipliers or {}).get(n, 1.0) for n, p in params.items()}
        norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in raw.values()))
        raw = {n: (g * (target / norm)).float() for n, g in raw.items()}
        for n, p in params.items():
            p.grad = raw[n].clone()
        total_norm = torch.nn.utils.clip_grad_norm_(all_params, max_norm=max_norm)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        state = optimizer.state
        record["steps"].append(
            {
                "lr": lr,
                "grads": {n: flat(g) for n, g in raw.items()},
                "total_norm": float(total_norm),
                "clipped_grads": {n: flat(p.grad) for n, p in params.items()},
                "params": {n: flat(p) for n, p in params.items()},
                "exp_avg": {n: flat(state[p]["exp_avg"]) for n, p in params.items()},
                "exp_avg_sq": {n: flat(state[p]["exp_avg_sq"]) for n, p in params.items()},
                "step": float(state[params["w1"]]["step"]),
            }
        )
    return record


def dump_adamw() -> dict:
    return {
        "generator": "python3 tools/dump_schedules.py",
        "torch_version": torch.__version__,
        "optimizer": "torch.optim.AdamW(foreach=False) after torch.nn.utils.clip_grad_norm_",
        "cases": [
            # Norms 4.0 (clipped), 0.5 (not clipped), 2.5 (clipped).
            adamw_case("constant_lr", [1e-3, 1e-3, 1e-3], [4.0, 0.5, 2.5], seed=1234),
            # Large, varying lrs (so the order of decay and update shows), and a parameter whose
            # gradients are ~1e-8 (so where eps enters the denominator shows).
            adamw_case(
                "varying_lr_tiny_grads",
                [5e-2, 2e-2, 1e-1, 1e-2],
                [0.3, 3.0, 0.9, 7.0],
                seed=99,
                grad_multipliers={"norm": 1e-8},
            ),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=pathlib.Path, default=OUT_DIR)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for name, data in (("schedules.json", dump_schedules()), ("adamw.json", dump_adamw())):
        path = args.out_dir / name
        path.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
