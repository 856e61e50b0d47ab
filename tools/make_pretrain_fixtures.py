#!/usr/bin/env python3
"""Build the continued-pretraining reference fixtures (`qtrain pt`).

Ground truth for raw-text training, computed by Hugging Face ``transformers`` + ``peft`` +
``torch.optim`` on CPU in float32, for the tiny models of ``tools/make_fixtures.py`` and the
init LoRA adapters of ``tools/make_training_fixtures.py`` (build both first). A re-run with the
same package versions reproduces every file byte for byte.

Produces, under ``--out`` (default ``tests/fixtures``), in ``pretrain/``:

``corpus.jsonl``
    Four documents as ``qtrain pt`` reads them: ``{"text": ...}`` rows and one ms-swift
    pretraining row ``{"messages": [{"role": "assistant", "content": ...}]}``; one document
    is longer than ``MAX_LENGTH`` tokens.
``sample.txt``
    A small bundled text sample (one document per line) for the CLI test.
``{m}-reference.json`` (m = qwen2, qwen3)
    ``blocks``: each document's ids (``tokenizer(text)`` + the ``eos_token`` of
    ``tokenizer_config.json``) split into consecutive ``MAX_LENGTH`` blocks, as ms-swift's
    ``truncation_strategy split``. ``eval``: ``Qwen*ForCausalLM(input_ids=block,
    labels=block).loss`` per block and their token-weighted mean (Σ loss·(len−1) / Σ (len−1)).
    ``full`` / ``lora``: 5 optimizer steps, one block per step in corpus order (no shuffling,
    batch 1, no accumulation), constant learning rate, AdamW (betas 0.9/0.95, eps
    ``ADAM_EPS``, weight decay 0.1 except biases and norm weights), ``clip_grad_norm_(1.0)``;
    ``losses`` are the per-step training losses (before each update), as ``logging.jsonl``
    logs them with ``--logging_steps 1``. LoRA starts from ``training/{m}-lora-init``.

Usage::

    python tools/make_pretrain_fixtures.py --out tests/fixtures
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from make_training_fixtures import MODELS, load_base, load_lora, versions, write_json  # noqa: E402

MAX_LENGTH = 24
STEPS = 5
FULL_LR = 1e-4
LORA_LR = 1e-3
WEIGHT_DECAY = 0.1
BETAS = (0.9, 0.95)
ADAM_EPS = 1e-6  # see make_training_fixtures.STEP_EPS: keeps noise-level gradients well-conditioned
MAX_GRAD_NORM = 1.0

CORPUS = [
    {"text": "The river runs to the sea, and the sea does not fill."},
    {"messages": [{"role": "assistant", "content": "Qwen models read text as tokens; 早上好 is good morning."}]},
    {
        "text": "Continued pretraining feeds a model plain documents. Each document ends with the end "
        "token, every token is a target, and a document longer than the block length is cut into "
        "consecutive blocks, so nothing is thrown away: the first block, the second block, the third "
        "block and what remains all become samples of their own."
    },
    {"text": "Short line.\nWith a newline inside."},
]

SAMPLE_TXT = """qtrain continues pretraining on plain text.
Every line of a text file is one document.

A document ends with the tokenizer's end token, and every token is learned.
"""


def document(row: dict) -> str:
    return row["text"] if "text" in row else row["messages"][0]["content"]


def blocks_of(tok, text: str) -> list[list[int]]:
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids(tok.eos_token)]
    return [ids[i : i + MAX_LENGTH] for i in range(0, len(ids), MAX_LENGTH)]


def block_loss(model, block: list[int]) -> torch.Tensor:
    ids = torch.tensor([block])
    return model(input_ids=ids, labels=ids, use_cache=False).loss


def train(model, params_groups, blocks, lr) -> list[float]:
    params = [p for g in params_groups for p in g["params"]]
    opt = torch.optim.AdamW(params_groups, lr=lr, betas=BETAS, eps=ADAM_EPS)
    losses = []
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        loss = block_loss(model, blocks[step % len(blocks)])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm=MAX_GRAD_NORM)
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def decay_groups(named):
    no_decay = [n for n, _ in named if n.endswith(".bias") or "norm" in n]
    return [
        {"params": [p for n, p in named if n not in no_decay], "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in named if n in no_decay], "weight_decay": 0.0},
    ]


def build(kind: str, root: Path) -> dict:
    from transformers import AutoTokenizer

    model_dir = root / MODELS[kind]
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    blocks = [b for row in CORPUS for b in blocks_of(tok, document(row))]
    assert any(len(blocks_of(tok, document(r))) > 1 for r in CORPUS), "one document must exceed MAX_LENGTH"
    assert len(blocks) >= STEPS and all(len(b) >= 2 for b in blocks)
    torch.manual_seed(0)
    base = load_base(model_dir)
    with torch.no_grad():
        per_block = [float(block_loss(base, b)) for b in blocks]
    targets = [len(b) - 1 for b in blocks]
    eval_loss = sum(l * n for l, n in zip(per_block, targets)) / sum(targets)

    full = load_base(model_dir)
    full_losses = train(full, decay_groups([(n, p) for n, p in full.named_parameters()]), blocks, FULL_LR)

    lora = load_lora(load_base(model_dir), root / "training" / f"{kind}-lora-init")
    named = [(n, p) for n, p in lora.named_parameters() if p.requires_grad]
    lora_losses = train(lora, decay_groups(named), blocks, LORA_LR)
    return {
        "max_length": MAX_LENGTH,
        "eos_token": tok.eos_token,
        "blocks": blocks,
        "eval": {"per_block_loss": per_block, "loss": eval_loss, "tokens": sum(targets)},
        "train": {"steps": STEPS, "adam_epsilon": ADAM_EPS, "weight_decay": WEIGHT_DECAY, "max_grad_norm": MAX_GRAD_NORM},
        "full": {"learning_rate": FULL_LR, "losses": full_losses},
        "lora": {"learning_rate": LORA_LR, "adapter": f"training/{kind}-lora-init", "losses": lora_losses},
        "versions": versions(),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures"))
    args = ap.parse_args(argv)
    out = args.out / "pretrain"
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in CORPUS), encoding="utf-8")
    (out / "sample.txt").write_text(SAMPLE_TXT, encoding="utf-8")
    for kind in MODELS:
        write_json(out / f"{kind}-reference.json", build(kind, args.out))
        print(f"wrote {out / (kind + '-reference.json')}")


if __name__ == "__main__":
    main()
