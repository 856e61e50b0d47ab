#!/usr/bin/env python3
"""Build the training reference fixtures (loss, gradients, AdamW steps, evaluation).

qtrain trains with hand-written backward passes; these fixtures are the ground truth
for them, computed by Hugging Face ``transformers`` + ``peft`` + ``torch.optim`` on
CPU in float32 with fixed seeds, for the two tiny models made by
``tools/make_fixtures.py`` (``tiny-qwen2/``, ``tiny-qwen3/``; build those first).
A re-run with the same package versions reproduces every file byte for byte.

Produces, under ``--out`` (default ``tests/fixtures``), in ``training/``:

``dataset.jsonl``
    8 conversations, one ``{"messages": [...]}`` per line (shared by both models):
    with/without system message, 1-3 user turns, non-ASCII text, a final assistant
    turn with inline ``<think>...</think>`` reasoning and one with reasoning in an
    EARLIER assistant turn (dropped by the Qwen3 template).
``{m}-tokenized.json`` (m = qwen2, qwen3)
    For each conversation, ``{"input_ids", "labels"}``: the chat-template rendering
    (``add_generation_prompt=False``) tokenized once; ``labels`` = the id on tokens
    inside an assistant segment (content + its ``<|im_end|>``, not the
    ``<|im_start|>assistant\\n`` header nor the ``\\n`` after ``<|im_end|>``), else -100.
``{m}-train.safetensors``
    ``batch.*`` (first 4 samples, right-padded), ``lora.*`` (PEFT LoRA loss,
    gradients and 3 AdamW steps with grad clipping), ``full.*`` (full fine-tuning
    loss, gradients of every parameter, 3 AdamW steps, a subset of final params).
``{m}-lora-init/``
    The initial LoRA adapter (PEFT ``save_pretrained``: ``adapter_config.json`` +
    ``adapter_model.safetensors``) the ``lora.*`` tensors start from.
``{m}-lora-trained/``
    The init adapter after a short deterministic training run on all samples; only
    used to give the evaluation reference a non-trivial token accuracy (the random
    tiny models never predict a target token: accuracy 0).
``{m}-eval.json``
    Token-level loss / accuracy over the whole dataset: base model, init adapter,
    trained adapter.
``{m}-meta.json``
    Hyper-parameters, versions, sample lengths, tensor names.

See tools/README.md ("make_training_fixtures.py") for the exact definitions.

Usage::

    python tools/make_fixtures.py --out tests/fixtures            # tiny models first
    python tools/make_training_fixtures.py --out tests/fixtures
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
from pathlib import Path

import torch

# ---------------------------------------------------------------------------
# constants
# ---------------------------------------------------------------------------

MODELS = {"qwen2": "tiny-qwen2", "qwen3": "tiny-qwen3"}
RSLORA = {"qwen2": False, "qwen3": True}
LORA_SEED = {"qwen2": 20_001, "qwen3": 30_001}  # torch.manual_seed before get_peft_model (A init)
LORA_B_SEED = {"qwen2": 20_002, "qwen3": 30_002}  # generator for B ~ N(0, LORA_B_STD^2)
LORA_B_STD = 0.02
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_R = 4
LORA_ALPHA = 8
BATCH_SIZE = 4  # the first BATCH_SIZE samples form the training batch
N_STEPS = 3
BETAS = (0.9, 0.95)
EPS = 1e-8  # the trained adapter's optimizer (torch's default)
# AdamW eps of the 3-step LoRA and full checks. Not torch's 1e-8: an element whose gradient
# cancels to ~1e-8 — pure float32 rounding noise, e.g. 4.7e-8 against a largest element of 2e-2
# in qwen3's layer-1 o_proj lora_A — gets an update lr·g/(|g| + eps) decided by that noise, and
# two correct implementations (or torch on two CPUs) then disagree by ~1 % of lr. With 1e-6 the
# update moves by at most lr/eps per unit of gradient error, so every element is well-conditioned.
STEP_EPS = 1e-6
LORA_LR = 1e-3
LORA_WD = 0.1
# clip_grad_norm_ max_norm for the LoRA steps: chosen per model so that clipping is
# active on some steps and inactive on others (asserted, with a >= 0.1 % gap)
LORA_MAX_NORM = {"qwen2": 1.12, "qwen3": 2.25}
# the "trained" adapter (only for a non-trivial token accuracy in the eval reference):
# the init adapter trained on all samples (one padded batch), AdamW lr 1e-2, no decay,
# no clipping, for this many steps
TRAINED_STEPS = {"qwen2": 30, "qwen3": 10}
TRAINED_LR = 1e-2
MIN_TARGET_MARGIN = 1e-3  # |logit[target] - best other logit| at every eval target
FULL_LR = 1e-4
FULL_WD = 0.1
FULL_MAX_NORM = 1.0
IGNORE = -100
ASSISTANT_HEADER = "<|im_start|>assistant\n"
IM_END_TEXT = "<|im_end|>"

# Parameters whose post-AdamW values are stored (full FT); missing names are skipped
# (q_proj.bias: qwen2 only, q_norm: qwen3 only, lm_head: untied qwen2 only).
FULL_FINAL_SUBSET = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.q_proj.bias",
    "model.layers.1.mlp.down_proj.weight",
    "model.layers.0.input_layernorm.weight",
    "model.layers.0.self_attn.q_norm.weight",
    "model.norm.weight",
    "lm_head.weight",
]

THINK = "<think>\nThe user wants 7 times 8. 7 times 8 is 56.\n</think>\n\n"
DATASET = [
    # 0: system, single turn
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
    ],
    # 1: no system, single short turn
    [
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Hi!"},
    ],
    # 2: no system, 2 user turns, non-ASCII
    [
        {"role": "user", "content": "Translate 'good morning' into French and Chinese."},
        {"role": "assistant", "content": "French: « Bonjour ». Chinese: 早上好。"},
        {"role": "user", "content": "And in German?"},
        {"role": "assistant", "content": "Guten Morgen — schönen Tag!"},
    ],
    # 3: system, 3 user turns
    [
        {"role": "system", "content": "You answer with a single number."},
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "Times 10?"},
        {"role": "assistant", "content": "40"},
        {"role": "user", "content": "Minus 1?"},
        {"role": "assistant", "content": "39"},
    ],
    # 4: last assistant turn with inline reasoning (kept by the Qwen3 template)
    [
        {"role": "user", "content": "What is 7 times 8?"},
        {"role": "assistant", "content": THINK + "7 × 8 = 56."},
    ],
    # 5: EARLIER assistant turn with reasoning (dropped by the Qwen3 template)
    [
        {"role": "system", "content": "Think step by step."},
        {"role": "user", "content": "What is 7 times 8?"},
        {"role": "assistant", "content": THINK + "56"},
        {"role": "user", "content": "Now add 4."},
        {"role": "assistant", "content": "56 + 4 = 60."},
    ],
    # 6: longer single turn, code + emoji
    [
        {"role": "user", "content": "Write a Rust function that adds two numbers. 🦀"},
        {
            "role": "assistant",
            "content": "Here it is:\n\n```rust\nfn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n```\n\n"
            "It returns the sum of `a` and `b`. 🎉",
        },
    ],
    # 7: non-ASCII system, 2 turns
    [
        {"role": "system", "content": "あなたは親切なアシスタントです。"},
        {"role": "user", "content": "Nenne drei Farben."},
        {"role": "assistant", "content": "Rot, Grün und Blau."},
        {"role": "user", "content": "Und auf Spanisch?"},
        {"role": "assistant", "content": "Rojo, verde y azul. ¡Fácil!"},
    ],
]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def versions() -> dict:
    """Versions of the packages the references depend on."""
    import peft
    import safetensors
    import tokenizers
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
    }


def write_json(path: Path, obj) -> None:
    """Pretty JSON, UTF-8, trailing newline."""
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_tokenized(path: Path, samples: list[dict]) -> None:
    """A JSON list with one sample per line (readable diffs, small file)."""
    lines = [json.dumps(s, separators=(",", ":")) for s in samples]
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """safetensors file, keys sorted, fixed metadata."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in sorted(tensors.items())}, str(path), metadata={"format": "pt"})


def load_base(model_dir: Path):
    """The tiny model in float32 with eager attention (as make_fixtures.py uses)."""
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager")
    return m


def peft_key(name: str) -> str:
    """named_parameters() name -> PEFT saved key (adapter name ``.default`` removed)."""
    assert ".default." in name, name
    return name.replace(".default.", ".")


# ---------------------------------------------------------------------------
# tokenisation
# ---------------------------------------------------------------------------


def assistant_spans(rendered: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of every assistant content + its ``<|im_end|>``."""
    spans = []
    pos = 0
    while True:
        h = rendered.find(ASSISTANT_HEADER, pos)
        if h < 0:
            return spans
        start = h + len(ASSISTANT_HEADER)
        e = rendered.find(IM_END_TEXT, start)
        assert e >= 0, "unterminated assistant turn"
        end = e + len(IM_END_TEXT)
        spans.append((start, end))
        pos = end


def tokenize_sample(tok, messages) -> dict:
    """Render, tokenize once, label the tokens inside assistant spans."""
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    enc = tok(rendered, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offs = [tuple(o) for o in enc["offset_mapping"]]
    assert ids == tok.encode(rendered, add_special_tokens=False)
    spans = assistant_spans(rendered)
    labels = []
    for i, (a, b) in zip(ids, offs):
        inside = [s for s in spans if a >= s[0] and b <= s[1]]
        straddle = [s for s in spans if (a < s[0] < b) or (a < s[1] < b)]
        assert not straddle, f"token {i} {(a, b)} straddles an assistant span boundary"
        labels.append(i if inside else IGNORE)
    # every span is covered by exactly the supervised tokens, each ending on <|im_end|>
    sup = [k for k, l in enumerate(labels) if l != IGNORE]
    assert tok.decode([ids[k] for k in sup], skip_special_tokens=False) == "".join(rendered[s:e] for s, e in spans)
    n_im_end = sum(1 for k in sup if ids[k] == tok.convert_tokens_to_ids(IM_END_TEXT))
    assert n_im_end == len(spans)
    return {"rendered": rendered, "input_ids": ids, "labels": labels, "n_assistant_turns": len(spans)}


def make_batch(samples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch of the given tokenized samples."""
    T = max(len(s["input_ids"]) for s in samples)
    B = len(samples)
    ids = torch.full((B, T), pad_id, dtype=torch.int64)
    mask = torch.zeros((B, T), dtype=torch.int64)
    labels = torch.full((B, T), IGNORE, dtype=torch.int64)
    for b, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[b, :n] = torch.tensor(s["input_ids"])
        labels[b, :n] = torch.tensor(s["labels"])
        mask[b, :n] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"batch.input_ids": ids, "batch.attention_mask": mask, "batch.position_ids": pos, "batch.labels": labels}


def forward_loss(model, batch) -> torch.Tensor:
    """transformers' causal-LM loss (labels shifted inside, mean over non -100 targets)."""
    out = model(
        input_ids=batch["batch.input_ids"],
        attention_mask=batch["batch.attention_mask"],
        position_ids=batch["batch.position_ids"],
        labels=batch["batch.labels"],
        use_cache=False,
    )
    return out.loss


# ---------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------


def make_lora(base, kind: str):
    """PEFT LoRA on a copy of ``base``: PEFT's kaiming-uniform A (seeded), B ~ N(0, 0.02^2)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        target_modules=list(LORA_TARGETS),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        use_rslora=RSLORA[kind],
    )
    torch.manual_seed(LORA_SEED[kind])
    pm = get_peft_model(copy.deepcopy(base), cfg)
    g = torch.Generator().manual_seed(LORA_B_SEED[kind])
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                assert torch.count_nonzero(p) == 0  # PEFT's default init
                p.copy_(torch.randn(p.shape, generator=g) * LORA_B_STD)
    return pm


def save_adapter(pm, out_dir: Path, base_dir: Path) -> None:
    """save_pretrained, then record the base as its fixture folder name, sorted targets."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    pm.peft_config["default"].base_model_name_or_path = str(base_dir.resolve())  # no Hub access
    pm.save_pretrained(str(out_dir))
    cfg_path = out_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base_dir.name
    cfg["target_modules"] = sorted(cfg["target_modules"])  # PEFT stores a set
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    readme = out_dir / "README.md"  # PEFT model-card boilerplate
    if readme.exists():
        readme.unlink()


def load_lora(base, adapter_dir: Path):
    """Fresh trainable PeftModel from the saved init adapter."""
    from peft import PeftModel

    return PeftModel.from_pretrained(copy.deepcopy(base), str(adapter_dir), is_trainable=True)


def lora_params(pm) -> list[tuple[str, torch.nn.Parameter]]:
    """Trainable (LoRA) parameters in named_parameters() order, with their PEFT saved keys."""
    out = [(peft_key(n), p) for n, p in pm.named_parameters() if p.requires_grad]
    assert out and all(("lora_A" in k or "lora_B" in k) for k, _ in out)
    return out


def total_grad_norm(params) -> float:
    """L2 norm of all gradients (float64, for the clipping decision only)."""
    return math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in params))


def train_steps(model, params, batch, optimizer, max_norm: float):
    """N_STEPS of: loss, backward, clip_grad_norm_, optimizer.step. Returns per-step
    losses, returned grad norms and whether clipping scaled the gradients."""
    losses, norms, clipped = [], [], []
    for _ in range(N_STEPS):
        optimizer.zero_grad(set_to_none=True)
        loss = forward_loss(model, batch)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm)
        losses.append(float(loss.detach()))
        norms.append(float(gn))
        # torch: clip_coef = max_norm / (total_norm + 1e-6), applied when < 1
        clipped.append(bool(max_norm / (float(gn) + 1e-6) < 1.0))
        optimizer.step()
    return losses, norms, clipped


# ---------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model, samples: list[dict]) -> dict:
    """Sum of token CE over all supervised targets / count, and argmax accuracy; one
    sample at a time without padding. CE per token in f32 (as transformers), sums f64."""
    total, correct, n, min_margin = 0.0, 0, 0, float("inf")
    per_sample = []
    for s in samples:
        ids = torch.tensor(s["input_ids"])[None]
        labels = torch.tensor(s["labels"])
        logits = model(input_ids=ids, use_cache=False).logits[0].float()
        tgt = labels[1:]
        m = tgt != IGNORE
        lg = logits[:-1][m]
        t = tgt[m]
        ce = torch.nn.functional.cross_entropy(lg, t, reduction="none")
        other = lg.clone()
        other[torch.arange(len(t)), t] = float("-inf")
        tmargin = (lg.gather(1, t[:, None])[:, 0] - other.max(-1).values).abs()
        s_sum = float(ce.double().sum())
        s_cor = int((lg.argmax(-1) == t).sum())
        total += s_sum
        correct += s_cor
        n += int(m.sum())
        min_margin = min(min_margin, float(tmargin.min()))
        per_sample.append({"loss_sum": s_sum, "tokens": int(m.sum()), "correct": s_cor})
    return {"loss": total / n, "token_acc": correct / n, "tokens": n, "min_target_margin": min_margin, "per_sample": per_sample}


# ---------------------------------------------------------------------------
# per model
# ---------------------------------------------------------------------------


def build(kind: str, root: Path, tdir: Path) -> dict:
    """All fixtures for one tiny model."""
    from transformers import AutoTokenizer

    base_dir = root / MODELS[kind]
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    pad_id = tok.convert_tokens_to_ids("<|endoftext|>")
    assert pad_id == tok.pad_token_id

    # 2. tokenisation
    samples = [tokenize_sample(tok, conv) for conv in DATASET]
    write_tokenized(tdir / f"{kind}-tokenized.json", [{"input_ids": s["input_ids"], "labels": s["labels"]} for s in samples])

    # 3. batch
    batch = make_batch(samples[:BATCH_SIZE], pad_id)
    tensors: dict[str, torch.Tensor] = dict(batch)
    n_targets = int((batch["batch.labels"][:, 1:] != IGNORE).sum())

    base = load_base(base_dir)
    base.train()  # no dropout anywhere (attention_dropout 0, lora_dropout 0)

    # 4. LoRA gradients
    pm = make_lora(base, kind)
    adapter_dir = tdir / f"{kind}-lora-init"
    save_adapter(pm, adapter_dir, base_dir)
    pm = load_lora(base, adapter_dir)  # exactly what the Rust side will load
    pm.train()
    lp = lora_params(pm)
    loss = forward_loss(pm, batch)
    loss.backward()
    tensors["lora.loss"] = loss.detach().reshape(1)
    for k, p in lp:
        tensors[f"lora.grad.{k}"] = p.grad.detach().clone()
    lora_init_norm = total_grad_norm([p for _, p in lp])
    lora_scaling = {k: v for k, v in pm.base_model.model.model.layers[0].self_attn.q_proj.scaling.items()}
    del pm

    # 5. LoRA AdamW (fresh from the init adapter)
    max_norm = LORA_MAX_NORM[kind]
    pm = load_lora(base, adapter_dir)
    pm.train()
    lp = lora_params(pm)
    params = [p for _, p in lp]
    opt = torch.optim.AdamW(params, lr=LORA_LR, betas=BETAS, eps=STEP_EPS, weight_decay=LORA_WD)
    l_losses, l_norms, l_clipped = train_steps(pm, params, batch, opt, max_norm)
    assert l_losses[0] == float(tensors["lora.loss"][0])
    assert any(l_clipped) and not all(l_clipped), ("want clipped and unclipped steps", l_norms, max_norm)
    assert all(abs(n / max_norm - 1) > 1e-3 for n in l_norms), ("grad norm too close to max_norm", l_norms)
    tensors["lora.max_grad_norm"] = torch.tensor([max_norm], dtype=torch.float32)
    tensors["lora.step_losses"] = torch.tensor(l_losses, dtype=torch.float32)
    tensors["lora.step_grad_norms"] = torch.tensor(l_norms, dtype=torch.float32)
    for k, p in lp:
        tensors[f"lora.final.{k}"] = p.detach().clone()
    with torch.no_grad():
        lora_final_loss = forward_loss(pm, batch)
    tensors["lora.final_loss"] = lora_final_loss.detach().reshape(1)
    del pm, opt

    # 6. full fine-tuning gradients
    full = copy.deepcopy(base)
    full.train()
    for p in full.parameters():
        p.requires_grad_(True)
    named = list(full.named_parameters())  # dedups the tied qwen3 embedding / lm_head
    loss = forward_loss(full, batch)
    loss.backward()
    tensors["full.loss"] = loss.detach().reshape(1)
    for n, p in named:
        tensors[f"full.grad.{n}"] = p.grad.detach().clone()
    del full

    # 7. full AdamW
    full = copy.deepcopy(base)
    full.train()
    for p in full.parameters():
        p.requires_grad_(True)
    named = list(full.named_parameters())
    no_decay = [n for n, _ in named if n.endswith(".bias") or "norm" in n]
    groups = [
        {"params": [p for n, p in named if n not in no_decay], "weight_decay": FULL_WD},
        {"params": [p for n, p in named if n in no_decay], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=FULL_LR, betas=BETAS, eps=STEP_EPS)
    params = [p for _, p in named]
    f_losses, f_norms, f_clipped = train_steps(full, params, batch, opt, FULL_MAX_NORM)
    assert f_losses[0] == float(tensors["full.loss"][0])
    tensors["full.max_grad_norm"] = torch.tensor([FULL_MAX_NORM], dtype=torch.float32)
    tensors["full.step_losses"] = torch.tensor(f_losses, dtype=torch.float32)
    tensors["full.step_grad_norms"] = torch.tensor(f_norms, dtype=torch.float32)
    pdict = dict(named)
    final_names = [n for n in FULL_FINAL_SUBSET if n in pdict]
    for n in final_names:
        tensors[f"full.final.{n}"] = pdict[n].detach().clone()
    with torch.no_grad():
        full_final_loss = forward_loss(full, batch)
    tensors["full.final_loss"] = full_final_loss.detach().reshape(1)
    del full, opt

    save_tensors(tdir / f"{kind}-train.safetensors", tensors)

    # 8. evaluation
    base.eval()
    ev = evaluate(base, samples)
    pm = load_lora(base, adapter_dir)
    pm.eval()
    ev_lora = evaluate(pm, samples)
    del pm
    # LoRA adapter trained to a non-trivial accuracy (for eval_lora_trained.*)
    trained_dir = tdir / f"{kind}-lora-trained"
    pm = load_lora(base, adapter_dir)
    pm.train()
    params = [p for _, p in lora_params(pm)]
    opt = torch.optim.AdamW(params, lr=TRAINED_LR, betas=BETAS, eps=EPS, weight_decay=0.0)
    all_batch = make_batch(samples, pad_id)
    for _ in range(TRAINED_STEPS[kind]):
        opt.zero_grad(set_to_none=True)
        forward_loss(pm, all_batch).backward()
        opt.step()
    save_adapter(pm, trained_dir, base_dir)
    del pm, opt
    pm = load_lora(base, trained_dir)
    pm.eval()
    ev_trained = evaluate(pm, samples)
    del pm
    for e in (ev, ev_lora, ev_trained):
        assert e["min_target_margin"] >= MIN_TARGET_MARGIN, e["min_target_margin"]
    assert 0.2 < ev_trained["token_acc"] < 0.8, ev_trained["token_acc"]

    # consistency: the padded batch loss equals the unpadded per-sample computation
    first = evaluate(base, samples[:BATCH_SIZE])
    assert abs(first["loss"] - float(tensors["full.loss"][0])) < 1e-5, (first["loss"], float(tensors["full.loss"][0]))
    assert first["tokens"] == n_targets

    eval_obj = {
        "model": MODELS[kind],
        "adapter": adapter_dir.name,
        "definition": "loss = sum of token cross-entropies over every supervised target of the whole "
        "dataset / number of targets; token_acc = fraction of targets with argmax(logits) == target; "
        "one sample at a time, no padding; target t = labels[t+1] predicted from logits[t]",
        "eval.loss": ev["loss"],
        "eval.token_acc": ev["token_acc"],
        "eval.tokens": ev["tokens"],
        "eval.min_target_margin": ev["min_target_margin"],
        "eval.per_sample": ev["per_sample"],
        "eval_lora.loss": ev_lora["loss"],
        "eval_lora.token_acc": ev_lora["token_acc"],
        "eval_lora.tokens": ev_lora["tokens"],
        "eval_lora.min_target_margin": ev_lora["min_target_margin"],
        "eval_lora.per_sample": ev_lora["per_sample"],
        "trained_adapter": trained_dir.name,
        "eval_lora_trained.loss": ev_trained["loss"],
        "eval_lora_trained.token_acc": ev_trained["token_acc"],
        "eval_lora_trained.tokens": ev_trained["tokens"],
        "eval_lora_trained.min_target_margin": ev_trained["min_target_margin"],
        "eval_lora_trained.per_sample": ev_trained["per_sample"],
        "versions": versions(),
    }
    write_json(tdir / f"{kind}-eval.json", eval_obj)

    meta = {
        "model": MODELS[kind],
        "model_dir": f"../{MODELS[kind]}",
        "dataset": "dataset.jsonl",
        "chat_template": "qwen2.5" if kind == "qwen2" else "qwen3",
        "pad_id": pad_id,
        "ignore_index": IGNORE,
        "samples": [
            {"length": len(s["input_ids"]), "supervised_tokens": sum(1 for l in s["labels"] if l != IGNORE),
             "assistant_turns": s["n_assistant_turns"], "rendered": s["rendered"]}
            for s in samples
        ],
        "batch": {
            "samples": list(range(BATCH_SIZE)),
            "shape": list(batch["batch.input_ids"].shape),
            "lengths": [len(s["input_ids"]) for s in samples[:BATCH_SIZE]],
            "loss_targets": n_targets,
            "loss": "transformers ForCausalLMLoss: labels padded with -100 on the right and shifted by "
            "one; cross_entropy(reduction='mean', ignore_index=-100) over the whole batch "
            "(token-weighted, num_items_in_batch not passed)",
        },
        "lora": {
            "r": LORA_R,
            "lora_alpha": LORA_ALPHA,
            "use_rslora": RSLORA[kind],
            "scaling": lora_scaling,
            "lora_dropout": 0.0,
            "target_modules": LORA_TARGETS,
            "init": f"PEFT default A (kaiming_uniform a=sqrt(5)) after torch.manual_seed({LORA_SEED[kind]}); "
            f"B ~ N(0, {LORA_B_STD}^2) from torch.Generator().manual_seed({LORA_B_SEED[kind]}) "
            "in named_parameters() order",
            "adapter_dir": adapter_dir.name,
            "optimizer": {"type": "torch.optim.AdamW", "lr": LORA_LR, "betas": list(BETAS), "eps": STEP_EPS,
                          "weight_decay": LORA_WD},
            "max_grad_norm": max_norm,
            "initial_grad_norm_f64": lora_init_norm,
            "steps": N_STEPS,
            "step_losses": l_losses,
            "step_grad_norms": l_norms,
            "step_clipped": l_clipped,
            "final_loss": float(lora_final_loss),
            "trained_adapter": {
                "dir": trained_dir.name,
                "recipe": f"init adapter, all {len(samples)} samples as one right-padded batch, "
                f"{TRAINED_STEPS[kind]} steps of torch.optim.AdamW(lr={TRAINED_LR}, betas={BETAS}, "
                f"eps={EPS}, weight_decay=0.0), no clipping; only used by eval_lora_trained.*",
            },
        },
        "full": {
            "optimizer": {"type": "torch.optim.AdamW", "lr": FULL_LR, "betas": list(BETAS), "eps": STEP_EPS,
                          "weight_decay": {"default": FULL_WD, "no_decay": 0.0}},
            "no_decay_params": no_decay,
            "max_grad_norm": FULL_MAX_NORM,
            "steps": N_STEPS,
            "step_losses": f_losses,
            "step_grad_norms": f_norms,
            "step_clipped": f_clipped,
            "final_loss": float(full_final_loss),
            "final_params_stored": final_names,
            "parameters": [n for n, _ in named],
        },
        "clip": "torch.nn.utils.clip_grad_norm_: total = ||stack of per-tensor L2 norms||_2 (returned, pre-clip); "
        "grads *= min(1, max_norm / (total + 1e-6))",
        "adamw": "torch: p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; "
        "p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)",
        "tensors": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                    for k, v in sorted(tensors.items())},
        "versions": versions(),
    }
    write_json(tdir / f"{kind}-meta.json", meta)
    return {"kind": kind, "meta": meta, "eval": eval_obj}


def main(argv=None) -> None:
    """Entry point: --out is the fixtures root (holding tiny-qwen2/, tiny-qwen3/)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("tests/fixtures"), help="fixtures root (default tests/fixtures)")
    p.add_argument("--only", choices=list(MODELS), action="append", help="build only these models")
    args = p.parse_args(argv)

    torch.set_num_threads(1)  # bitwise-stable CPU reductions
    torch.use_deterministic_algorithms(True)
    print("versions:", versions())

    tdir = args.out / "training"
    tdir.mkdir(parents=True, exist_ok=True)
    with open(tdir / "dataset.jsonl", "w", encoding="utf-8") as f:
        for conv in DATASET:
            f.write(json.dumps({"messages": conv}, ensure_ascii=False) + "\n")

    for kind in args.only or list(MODELS):
        r = build(kind, args.out, tdir)
        m, e = r["meta"], r["eval"]
        print(f"[{kind}] lengths {[s['length'] for s in m['samples']]}, batch {m['batch']['shape']}, "
              f"targets {m['batch']['loss_targets']}")
        print(f"[{kind}] lora: loss {m['lora']['step_losses']} norms {m['lora']['step_grad_norms']} "
              f"clipped {m['lora']['step_clipped']} (max_norm {m['lora']['max_grad_norm']}) final {m['lora']['final_loss']}")
        print(f"[{kind}] full: loss {m['full']['step_losses']} norms {m['full']['step_grad_norms']} "
              f"clipped {m['full']['step_clipped']} final {m['full']['final_loss']}")
        print(f"[{kind}] eval: loss {e['eval.loss']} acc {e['eval.token_acc']} tokens {e['eval.tokens']}; "
              f"lora loss {e['eval_lora.loss']} acc {e['eval_lora.token_acc']}; "
              f"trained loss {e['eval_lora_trained.loss']} acc {e['eval_lora_trained.token_acc']}")

    total = 0
    for f in sorted(tdir.rglob("*")):
        if f.is_file():
            total += f.stat().st_size
            print(f"    {f}: {f.stat().st_size} bytes")
    print(f"  {tdir}: {total} bytes total")


if __name__ == "__main__":
    main()
