#!/usr/bin/env python3
"""Adapters and merged exports written by qtrain load in PEFT / transformers and compute the same
function.

For each tiny fixture model (tests/fixtures/tiny-qwen2, tiny-qwen3) this script:
1. trains a LoRA adapter with the qtrain binary (5 steps, lr 1e-2, so B is far from zero),
2. evaluates it with `qtrain eval --json` on tests/fixtures/training/dataset.jsonl,
3. exports a merged model with `qtrain export --merge_lora true`,
4. loads the adapter with `PeftModel.from_pretrained` and the merged folder with
   `AutoModelForCausalLM.from_pretrained`, computes the same dataset loss / token accuracy (the
   token ids and labels come from tests/fixtures/training/<m>-tokenized.json, the Python
   reference tokenisation) and compares,
5. copies the adapter to tests/fixtures/interop/<m>-qtrain-adapter/ and writes the PEFT numbers
   to tests/fixtures/interop/<m>.json, so `tests/cli/interop.rs` keeps checking in CI (without
   Python) that qtrain's evaluation of this qtrain-written adapter equals PEFT's.

    cargo build --release && python3 tools/verify_interop.py --qtrain target/release/qtrain
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import peft
import torch
import transformers

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"


def run(cmd):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"command failed: {' '.join(map(str, cmd))}\n{out.stderr}")
    return out.stdout


def dataset_stats(model, samples):
    """Loss sum / targets and token accuracy over samples, one at a time (no padding)."""
    loss_sum, n, correct = 0.0, 0, 0
    with torch.no_grad():
        for s in samples:
            ids = torch.tensor([s["input_ids"]])
            labels = torch.tensor(s["labels"][1:])
            logits = model(input_ids=ids).logits[0, :-1].float()
            keep = labels != -100
            loss_sum += torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum").item()
            correct += (logits[keep].argmax(-1) == labels[keep]).sum().item()
            n += int(keep.sum())
    return loss_sum / n, correct / n, n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qtrain", default=str(ROOT / "target" / "release" / "qtrain"))
    args = ap.parse_args()
    torch.manual_seed(0)
    out_dir = FIX / "interop"
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = FIX / "training" / "dataset.jsonl"
    failures = []
    for short, model_name in [("qwen2", "tiny-qwen2"), ("qwen3", "tiny-qwen3")]:
        model_dir = FIX / model_name
        samples = json.loads((FIX / "training" / f"{short}-tokenized.json").read_text())
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = run([args.qtrain, "train", "--model", model_dir, "--dataset", dataset, "--output_dir", tmp,
                        "--max_steps", "5", "--learning_rate", "1e-2", "--lora_rank", "4", "--lora_alpha", "8",
                        "--lora_dropout", "0", "--warmup_ratio", "0", "--logging_steps", "1", "--save_steps", "5",
                        "--gradient_accumulation_steps", "2", "--per_device_train_batch_size", "2"]).strip().splitlines()[-1]
            q = json.loads(run([args.qtrain, "eval", "--model", model_dir, "--adapters", ckpt, "--dataset", dataset, "--json"]))
            merged = Path(tmp) / "merged"
            run([args.qtrain, "export", "--model", model_dir, "--adapters", ckpt, "--merge_lora", "true", "--output_dir", merged])
            qm = json.loads(run([args.qtrain, "eval", "--model", merged, "--dataset", dataset, "--json"]))
            base = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
            peft_model = peft.PeftModel.from_pretrained(base, ckpt).eval()
            p_loss, p_acc, p_n = dataset_stats(peft_model, samples)
            hf_merged = transformers.AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
            m_loss, m_acc, m_n = dataset_stats(hf_merged, samples)
            # Logits of PEFT (base + adapter) and of the merged checkpoint on one probe sample.
            probe = torch.tensor([samples[2]["input_ids"]])
            with torch.no_grad():
                lp, lm = peft_model(input_ids=probe).logits, hf_merged(input_ids=probe).logits
            logits_rel = ((lp - lm).abs().max() / lp.abs().max()).item()
            result = {
                "model": model_name, "qtrain_eval": q, "qtrain_merged_eval": qm,
                "peft": {"loss": p_loss, "token_acc": p_acc, "tokens": p_n},
                "transformers_merged": {"loss": m_loss, "token_acc": m_acc, "tokens": m_n},
                "peft_vs_merged_logits_max_relative": logits_rel,
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
            }
            for what, a, b in [("qtrain eval vs PEFT", q["loss"], p_loss), ("qtrain merged eval vs transformers merged", qm["loss"], m_loss),
                               ("PEFT vs transformers merged", p_loss, m_loss)]:
                rel = abs(a - b) / abs(b)
                print(f"{model_name}: {what}: {a:.8f} vs {b:.8f} (relative {rel:.2e})")
                if rel > 1e-5:
                    failures.append(f"{model_name}: {what}")
            if q["tokens"] != p_n or abs(q["token_acc"] - p_acc) > 1e-9:
                failures.append(f"{model_name}: token counts/accuracy differ")
            print(f"{model_name}: PEFT vs merged logits max relative {logits_rel:.2e}")
            if logits_rel > 1e-4:
                failures.append(f"{model_name}: merged logits")
            dst = out_dir / f"{short}-qtrain-adapter"
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir()
            for f in ["adapter_config.json", "adapter_model.safetensors"]:
                shutil.copy(Path(ckpt) / f, dst / f)
            cfg = json.loads((dst / "adapter_config.json").read_text())
            cfg["base_model_name_or_path"] = model_name  # the temp path would leak into the fixture
            (dst / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
            (out_dir / f"{short}.json").write_text(json.dumps(result, indent=2) + "\n")
    if failures:
        sys.exit("FAILED: " + "; ".join(failures))
    print("all interop checks passed")


if __name__ == "__main__":
    main()
