#!/usr/bin/env python3
"""Build the tiny Qwen2/Qwen3 reference fixtures used by qtrain's Rust tests.

Everything is computed on CPU in float32 with fixed seeds by Hugging Face
``transformers`` + ``peft`` (the ground truth qtrain is measured against), so a
re-run with the same package versions reproduces the files byte for byte.

Produces, under ``--out`` (default ``tests/fixtures``):

``tiny-qwen2/``
    Qwen2ForCausalLM (hidden 64, intermediate 160, 2 layers, 4 heads / 2 kv heads,
    head_dim 16, q/k/v biases, rope_theta 1e4, untied lm_head, vocab 4160), float32
    ``model.safetensors``; ``config.json``; ``generation_config.json`` (eos
    [<|im_end|>, <|endoftext|>], temperature 0.7, top_p 0.8, top_k 20,
    repetition_penalty 1.05); ``tokenizer.json`` (reduced Qwen tokenizer, N=4096,
    see tools/build_qwen_tokenizer.py); ``tokenizer_config.json`` (Qwen2.5-Instruct
    chat template); ``reference.safetensors`` + ``reference.json``.
``tiny-qwen2-bf16/``
    The same weights saved in bfloat16 (``config.json`` + ``model.safetensors``) and a
    ``reference.safetensors`` with ``batch.*`` computed in float32 from the
    bf16-rounded weights.
``tiny-qwen2-lora/``
    PEFT LoRA adapter for tiny-qwen2 (``adapter_config.json`` +
    ``adapter_model.safetensors``; r 4, alpha 8, all 7 projections, B non-zero).
``tiny-qwen3/``
    Qwen3ForCausalLM (hidden 64, intermediate 128, 2 layers, 4 heads / 2 kv heads,
    head_dim 32, q_norm/k_norm, no biases, tied embeddings, rope_theta 1e6), float32,
    SHARDED (``model.safetensors.index.json`` + ``model-0000X-of-0000Y.safetensors``),
    Qwen3 chat template, generation_config (temperature 0.6, top_p 0.95, top_k 20).
``tiny-qwen3-lora/``
    PEFT LoRA adapter for tiny-qwen3 (as above plus ``use_rslora: true``).
``chat/cases.json``
    Chat-template cases rendered by transformers with the FULL Qwen tokenizer
    (tests/fixtures/qwen-tokenizer, build it first) and their token ids.

Reference tensors (``reference.safetensors`` in tiny-qwen2/ and tiny-qwen3/):

* ``batch.input_ids`` [3,17] i64, ``batch.attention_mask`` [3,17] i64: a RIGHT-padded
  batch of lengths 17, 9, 13 (pad id = <|endoftext|> = 4096);
* ``batch.position_ids`` [3,17] i64 = clamp(cumsum(mask) - 1, min=0);
* ``batch.logits`` [3,17,4160] f32 = model(input_ids, attention_mask, position_ids)
  (padded positions included, only valid positions are meaningful);
* ``batch.logits_lora`` [3,17,4160] f32: the same through the PEFT adapter;
* ``greedy.prompt_ids`` [P] i64: the chat-template rendering (add_generation_prompt)
  of a short conversation, tokenized;
* ``greedy.output_ids`` [40] i64: new tokens of ``generate(do_sample=False,
  max_new_tokens=40, repetition_penalty=1.0)`` with the eos ids of
  generation_config (the seed is chosen so that no eos appears and every greedy step
  has a clear top-1 margin, see reference.json);
* ``greedy.output_ids_lora`` [40] i64: the same through the adapter;
* tiny-qwen2 only: ``greedy.output_ids_reppen`` [40] i64: greedy decoding with
  generation_config's repetition_penalty 1.05 (transformers applies it even with
  do_sample=False).

``reference.json`` records the prompt messages, the rendered prompt, the generate
arguments, the seeds, the LoRA relative logit change, the smallest top-1/top-2
greedy margins and the torch/transformers/peft/tokenizers versions.

Usage::

    python tools/build_qwen_tokenizer.py --out tests/fixtures   # full tokenizer first
    python tools/make_fixtures.py --out tests/fixtures
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_qwen_tokenizer as bqt  # noqa: E402

N_REDUCED = 4096
VOCAB = 4160  # >= 4096 + 26 added tokens, multiple of 64
ENDOFTEXT = N_REDUCED  # <|endoftext|>
IM_START = N_REDUCED + 1
IM_END = N_REDUCED + 2
BATCH_LENGTHS = [17, 9, 13]
MAX_NEW_TOKENS = 40
MIN_NEW_TOKENS = 32  # generation must not stop (eos) before this many tokens
MIN_MARGIN = 1e-3  # smallest accepted top-1 minus top-2 logit gap at a greedy step
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_REL_CHANGE = 0.10  # target ||logits_lora - logits|| / ||logits|| on valid positions
WEIGHT_STD = 0.1  # std of every Linear / embedding weight (= config.initializer_range)

BATCH_TEXTS = [
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest.",
    "def add(a, b):\n    return a + b\n",
    "<|im_start|>user\nhi 你好<|im_end|>\n<|im_start|>assistant\n😀 123 ok",  # 13 tokens: ends on <|im_end|>
]

QWEN2_PROMPT = [
    {"role": "system", "content": "You are a tiny test model."},
    {"role": "user", "content": "Write a short poem about Rust and Python."},
]
QWEN3_PROMPT = [
    {"role": "user", "content": "Explain what a tokenizer does, in one sentence."},
]

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def versions() -> dict:
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


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def add_legacy_config_keys(model_dir: Path) -> None:
    """transformers 5 writes `rope_parameters` and `dtype`; checkpoints on the Hub (made
    with transformers 4.x) carry `rope_theta` and `torch_dtype`. Add the legacy keys
    (same values) so the fixture config has both spellings."""
    p = model_dir / "config.json"
    cfg = json.loads(p.read_text())
    rp = cfg.get("rope_parameters") or {}
    if "rope_theta" in rp and "rope_theta" not in cfg:
        cfg["rope_theta"] = rp["rope_theta"]
    if "dtype" in cfg and "torch_dtype" not in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
    cfg = dict(sorted(cfg.items()))
    write_json(p, cfg)


def rerandomize(model: torch.nn.Module, seed: int) -> None:
    """Make every parameter non-trivial: weights ~ N(0, WEIGHT_STD), biases ~ N(0, 0.5),
    RMSNorm weights ~ 1 + N(0, 0.3). Tied weights are visited once."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # named_parameters() dedups tied weights
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "norm" in name:
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.3)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * WEIGHT_STD)


def make_batch(tok) -> dict[str, torch.Tensor]:
    """Right-padded batch from BATCH_TEXTS cut to BATCH_LENGTHS tokens."""
    T = max(BATCH_LENGTHS)
    ids = torch.full((len(BATCH_LENGTHS), T), ENDOFTEXT, dtype=torch.int64)
    mask = torch.zeros((len(BATCH_LENGTHS), T), dtype=torch.int64)
    for i, (text, n) in enumerate(zip(BATCH_TEXTS, BATCH_LENGTHS)):
        t = tok.encode(text, add_special_tokens=False).ids
        assert len(t) >= n, (text, len(t))
        ids[i, :n] = torch.tensor(t[:n])
        mask[i, :n] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"batch.input_ids": ids, "batch.attention_mask": mask, "batch.position_ids": pos}


@torch.no_grad()
def batch_logits(model, batch) -> torch.Tensor:
    out = model(
        input_ids=batch["batch.input_ids"],
        attention_mask=batch["batch.attention_mask"],
        position_ids=batch["batch.position_ids"],
        use_cache=False,
    )
    return out.logits.float().contiguous()


def rel_change(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    m = mask.bool()
    return float((a[m] - b[m]).norm() / b[m].norm())


@torch.no_grad()
def greedy(model, prompt_ids: torch.Tensor, eos_ids: list[int], repetition_penalty: float = 1.0):
    """Greedy new tokens, and the smallest top-1/top-2 gap over the steps."""
    out = model.generate(
        input_ids=prompt_ids[None],
        attention_mask=torch.ones_like(prompt_ids)[None],
        do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS,
        repetition_penalty=repetition_penalty,
        eos_token_id=eos_ids,
        pad_token_id=ENDOFTEXT,
        return_dict_in_generate=True,
        output_scores=True,
    )
    new = out.sequences[0, prompt_ids.numel():].clone()
    margin = min(float((lambda v: v[0] - v[1])(s[0].topk(2).values)) for s in out.scores)
    return new, margin


def ok_greedy(new: torch.Tensor, margin: float, eos_ids: list[int]) -> bool:
    stops = [i for i, t in enumerate(new.tolist()) if t in eos_ids]
    return (not stops or stops[0] >= MIN_NEW_TOKENS) and len(new) >= MIN_NEW_TOKENS and margin >= MIN_MARGIN


def attach_lora(base, seed: int, rslora: bool, batch, base_logits):
    """PEFT LoRA with random A and B, B rescaled so logits change by ~LORA_REL_CHANGE."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=list(LORA_TARGETS),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=False,
        use_rslora=rslora,
    )
    torch.manual_seed(seed)
    pm = get_peft_model(copy.deepcopy(base), cfg)
    pm.eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():  # deterministic, independent of PEFT's init
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[1] ** 0.5))
    mask = batch["batch.attention_mask"]
    for _ in range(4):  # rescale B (close to linear for small changes)
        rel = rel_change(batch_logits(pm, batch), base_logits, mask)
        with torch.no_grad():
            for name, p in pm.named_parameters():
                if "lora_B" in name:
                    p.mul_(LORA_REL_CHANGE / rel)
    rel = rel_change(batch_logits(pm, batch), base_logits, mask)
    return pm, rel


def save_adapter(pm, out_dir: Path, base_dir: Path) -> None:
    """PeftModel.save_pretrained, then record the base as the sibling folder name."""
    fresh_dir(out_dir)
    # the real local path at save time, so PEFT does not try to reach the Hub
    pm.peft_config["default"].base_model_name_or_path = str(base_dir.resolve())
    pm.save_pretrained(str(out_dir))
    cfg_path = out_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base_dir.name
    cfg["target_modules"] = sorted(cfg["target_modules"])  # PEFT stores a set: fix the order
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    readme = out_dir / "README.md"  # PEFT's model-card boilerplate: not needed
    if readme.exists():
        readme.unlink()


def render_prompt(model_dir: Path, messages) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def save_reference(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, str(path), metadata={"format": "pt"})


def describe(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        for k in f.keys():
            t = f.get_slice(k)
            print(f"      {k}: {t.get_dtype()} {t.get_shape()}")


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------


def qwen2_config():
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        hidden_act="silu",
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        use_sliding_window=False,
        initializer_range=WEIGHT_STD,
        bos_token_id=ENDOFTEXT,
        eos_token_id=IM_END,
        pad_token_id=ENDOFTEXT,
        attn_implementation="eager",
    )


def qwen3_config():
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        hidden_act="silu",
        attention_bias=False,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        use_sliding_window=False,
        initializer_range=WEIGHT_STD,
        bos_token_id=ENDOFTEXT,
        eos_token_id=IM_END,
        pad_token_id=ENDOFTEXT,
        attn_implementation="eager",
    )


SPECS = {
    "qwen2": dict(
        dir="tiny-qwen2",
        config=qwen2_config,
        template="qwen2.5",
        prompt=QWEN2_PROMPT,
        gen=dict(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05),
        seed=1000,
        rslora=False,
        shard=None,
    ),
    "qwen3": dict(
        dir="tiny-qwen3",
        config=qwen3_config,
        template="qwen3",
        prompt=QWEN3_PROMPT,
        gen=dict(temperature=0.6, top_p=0.95, top_k=20),
        seed=2000,
        rslora=True,
        shard="600KB",
    ),
}


def build_model(kind: str, out: Path, tok_json: bytes, tok_cfgs: dict, max_tries: int = 50) -> dict:
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, GenerationConfig

    spec = SPECS[kind]
    model_cls = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[kind]
    import transformers

    cls = getattr(transformers, model_cls)
    tok = Tokenizer.from_str(tok_json.decode("utf-8"))
    eos_ids = [IM_END, ENDOFTEXT]
    mdir = fresh_dir(out / spec["dir"])
    (mdir / "tokenizer.json").write_bytes(tok_json)
    (mdir / "tokenizer_config.json").write_bytes(bqt.config_json_bytes(tok_cfgs[spec["template"]]))

    batch = None
    for attempt in range(max_tries):
        seed = spec["seed"] + attempt
        torch.manual_seed(seed)
        model = cls(spec["config"]())
        rerandomize(model, seed)
        model.eval()
        if kind == "qwen2":
            assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
        else:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        model.generation_config = GenerationConfig(
            bos_token_id=ENDOFTEXT, pad_token_id=ENDOFTEXT, do_sample=True, eos_token_id=eos_ids, **spec["gen"]
        )
        # save now so the tokenizer (AutoTokenizer needs config.json) and reload checks work
        kwargs = {"max_shard_size": spec["shard"]} if spec["shard"] else {}
        model.save_pretrained(str(mdir), **kwargs)
        add_legacy_config_keys(mdir)

        if batch is None:
            batch = make_batch(tok)
            rendered = render_prompt(mdir, spec["prompt"])
            prompt_ids = torch.tensor(tok.encode(rendered, add_special_tokens=False).ids, dtype=torch.int64)
        logits = batch_logits(model, batch)
        out_ids, margin = greedy(model, prompt_ids, eos_ids)
        pm, rel = attach_lora(model, seed + 100_000, spec["rslora"], batch, logits)
        logits_lora = batch_logits(pm, batch)
        out_lora, margin_lora = greedy(pm, prompt_ids, eos_ids)
        good = ok_greedy(out_ids, margin, eos_ids) and ok_greedy(out_lora, margin_lora, eos_ids)
        extra = {}
        if kind == "qwen2":
            out_rep, margin_rep = greedy(model, prompt_ids, eos_ids, repetition_penalty=spec["gen"]["repetition_penalty"])
            good = good and ok_greedy(out_rep, margin_rep, eos_ids)
            extra = {"greedy.output_ids_reppen": out_rep, "margin_reppen": margin_rep}
        if good:
            break
        print(f"    seed {seed} rejected (eos too early or greedy margin < {MIN_MARGIN}); trying {seed + 1}")
    else:
        raise SystemExit(f"no acceptable seed for {kind}")

    # Round trips: reload the saved checkpoint (+ adapter) and recompute.
    from peft import PeftModel

    adir = out / f"{spec['dir']}-lora"
    save_adapter(pm, adir, mdir)
    reloaded = AutoModelForCausalLM.from_pretrained(str(mdir), dtype=torch.float32, attn_implementation="eager").eval()
    assert torch.equal(batch_logits(reloaded, batch), logits), "reloaded base model differs"
    rl = PeftModel.from_pretrained(reloaded, str(adir)).eval()
    assert torch.equal(batch_logits(rl, batch), logits_lora), "reloaded adapter differs"
    # transformers' tokenizer gives the same prompt ids as the raw tokenizers one
    from transformers import AutoTokenizer

    htok = AutoTokenizer.from_pretrained(str(mdir))
    assert htok.encode(rendered, add_special_tokens=False) == prompt_ids.tolist()

    tensors = dict(batch)
    tensors.update(
        {
            "batch.logits": logits,
            "batch.logits_lora": logits_lora,
            "greedy.prompt_ids": prompt_ids,
            "greedy.output_ids": out_ids,
            "greedy.output_ids_lora": out_lora,
        }
    )
    tensors.update({k: v for k, v in extra.items() if k.startswith("greedy.")})
    save_reference(mdir / "reference.safetensors", tensors)
    ref = {
        "model": spec["dir"],
        "seed": seed,
        "lora_seed": seed + 100_000,
        "batch_texts": BATCH_TEXTS,
        "batch_lengths": BATCH_LENGTHS,
        "pad_token_id": ENDOFTEXT,
        "prompt_messages": spec["prompt"],
        "prompt_add_generation_prompt": True,
        "prompt_rendered": rendered,
        "generate_kwargs": {
            "do_sample": False,
            "max_new_tokens": MAX_NEW_TOKENS,
            "repetition_penalty": 1.0,
            "eos_token_id": eos_ids,
        },
        "greedy_min_top1_margin": margin,
        "greedy_min_top1_margin_lora": margin_lora,
        "greedy_output_len": len(out_ids),
        "greedy_output_len_lora": len(out_lora),
        "greedy_stopped_on_eos": out_ids[-1].item() in eos_ids,
        "greedy_stopped_on_eos_lora": out_lora[-1].item() in eos_ids,
        "greedy_output_text": tok.decode(out_ids.tolist(), skip_special_tokens=False),
        "greedy_output_text_lora": tok.decode(out_lora.tolist(), skip_special_tokens=False),
        "lora": {
            "r": 4,
            "lora_alpha": 8,
            "use_rslora": spec["rslora"],
            "target_modules": LORA_TARGETS,
            "relative_logit_change": rel,
        },
        "versions": versions(),
    }
    if kind == "qwen2":
        ref["greedy_output_ids_reppen_kwargs"] = dict(ref["generate_kwargs"], repetition_penalty=1.05)
        ref["greedy_output_len_reppen"] = len(extra["greedy.output_ids_reppen"])
        ref["greedy_min_top1_margin_reppen"] = extra["margin_reppen"]
    write_json(mdir / "reference.json", ref)
    print(f"  {spec['dir']}: seed {seed}, prompt {len(prompt_ids)} tokens, greedy margins "
          f"{margin:.4f}/{margin_lora:.4f}, LoRA relative change {rel:.4f}")

    if kind == "qwen2":
        build_bf16(out, model, batch)
    return ref


def build_bf16(out: Path, model, batch) -> None:
    from transformers import AutoModelForCausalLM

    bdir = fresh_dir(out / "tiny-qwen2-bf16")
    m16 = copy.deepcopy(model).to(torch.bfloat16)
    m16.save_pretrained(str(bdir))
    add_legacy_config_keys(bdir)
    gc = bdir / "generation_config.json"
    if gc.exists():
        gc.unlink()
    # transformers upcasts the stored bf16 values exactly to float32
    m32 = AutoModelForCausalLM.from_pretrained(str(bdir), dtype=torch.float32, attn_implementation="eager").eval()
    assert m32.model.embed_tokens.weight.dtype == torch.float32
    tensors = dict(batch)
    tensors["batch.logits"] = batch_logits(m32, batch)
    save_reference(bdir / "reference.safetensors", tensors)


# ---------------------------------------------------------------------------
# chat template cases
# ---------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current local time for a timezone.",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string", "description": "IANA timezone, e.g. Asia/Shanghai"}},
            "required": ["tz"],
        },
    },
}


def chat_cases() -> list[dict]:
    sys_msg = {"role": "system", "content": "You are a helpful assistant."}
    three_turns = [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "2+2 = 4."},
        {"role": "user", "content": "And times 3?"},
    ]
    tool_conv = [
        {"role": "user", "content": "What's the weather in Paris and the time in Shanghai?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}},
                {"type": "function", "function": {"name": "get_time", "arguments": {"tz": "Asia/Shanghai"}}},
            ],
        },
        {"role": "tool", "name": "get_weather", "content": "{\"temperature\": 21, \"sky\": \"sunny\"}"},
        {"role": "tool", "name": "get_time", "content": "{\"time\": \"18:05\"}"},
        {"role": "assistant", "content": "It is 21 °C and sunny in Paris; in Shanghai it is 18:05."},
        {"role": "user", "content": "Thanks. And in Berlin?"},
    ]
    non_ascii = [
        {"role": "system", "content": "你是一个乐于助人的助手。🤖"},
        {"role": "user", "content": "用中文介绍一下通义千问，加几个表情 😀🎉👍🏽"},
        {"role": "assistant", "content": "通义千问是阿里云研发的大语言模型 🚀✨ Ünïcödé ok."},
        {"role": "user", "content": "谢谢！❤️"},
    ]
    whitespace = [
        {"role": "system", "content": "  padded system prompt \n"},
        {"role": "user", "content": "\n\n  leading newlines and spaces"},
        {"role": "assistant", "content": "trailing spaces and tabs \t \n\n"},
        {"role": "user", "content": "   "},
    ]
    q3_reasoning = [
        {"role": "user", "content": "What is 17 * 3?"},
        {"role": "assistant", "content": "51.", "reasoning_content": "17 * 3 = 51."},
        {"role": "user", "content": "Now divide that by 3."},
        {"role": "assistant", "content": "17.", "reasoning_content": "\n51 / 3 = 17.\n"},
    ]
    q3_inline_think = [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "<think>\nThe user asks about France. Paris.\n</think>\n\nParis."},
        {"role": "user", "content": "And of Italy?"},
    ]
    q3_tools = [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "content": "<think>\nI should call the weather tool.\n</think>\n\nLet me check.",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"type": "function", "function": {"name": "get_time", "arguments": "{\"tz\": \"Europe/Paris\"}"}},
            ],
        },
        {"role": "tool", "content": "{\"temperature\": 21}"},
        {"role": "tool", "content": "{\"time\": \"12:00\"}"},
        {"role": "assistant", "content": "It is 21 °C in Paris at noon.", "reasoning_content": "Tool results are in."},
    ]

    C = []

    def add(name, template, messages, tools=None, agp=True, thinking=None):
        C.append(
            {
                "name": name,
                "template": template,
                "messages": messages,
                "tools": tools,
                "add_generation_prompt": agp,
                "enable_thinking": thinking,
            }
        )

    # Qwen2.5
    add("qwen2.5/no_system", "qwen2.5", [{"role": "user", "content": "Hello"}])
    add("qwen2.5/system", "qwen2.5", [sys_msg, {"role": "user", "content": "Hello"}])
    add("qwen2.5/system_no_gen", "qwen2.5", [sys_msg, {"role": "user", "content": "Hello"}], agp=False)
    add("qwen2.5/multi_turn_3_users", "qwen2.5", [sys_msg] + three_turns)
    add("qwen2.5/multi_turn_ends_with_assistant", "qwen2.5", three_turns + [{"role": "assistant", "content": "12."}], agp=False)
    add("qwen2.5/tools_no_system", "qwen2.5", tool_conv, tools=[WEATHER_TOOL, TIME_TOOL])
    add("qwen2.5/tools_with_system", "qwen2.5", [sys_msg] + tool_conv[:4], tools=[WEATHER_TOOL, TIME_TOOL])
    add("qwen2.5/non_ascii", "qwen2.5", non_ascii)
    add("qwen2.5/whitespace", "qwen2.5", whitespace, agp=False)
    # Qwen3
    add("qwen3/no_system", "qwen3", [{"role": "user", "content": "Hello"}])
    add("qwen3/system_thinking_true", "qwen3", [sys_msg, {"role": "user", "content": "Hello"}], thinking=True)
    add("qwen3/system_thinking_false", "qwen3", [sys_msg, {"role": "user", "content": "Hello"}], thinking=False)
    add("qwen3/no_gen", "qwen3", [sys_msg, {"role": "user", "content": "Hello"}], agp=False)
    add("qwen3/multi_turn_3_users", "qwen3", [sys_msg] + three_turns)
    add("qwen3/multi_turn_3_users_thinking_false", "qwen3", three_turns, thinking=False)
    add("qwen3/multi_turn_ends_with_assistant", "qwen3", three_turns + [{"role": "assistant", "content": "12."}], agp=False)
    add("qwen3/reasoning_content", "qwen3", q3_reasoning, agp=False)
    add("qwen3/reasoning_content_then_user", "qwen3", q3_reasoning + [{"role": "user", "content": "Thanks!"}])
    add("qwen3/inline_think_dropped", "qwen3", q3_inline_think)
    add("qwen3/inline_think_dropped_thinking_false", "qwen3", q3_inline_think, thinking=False)
    add("qwen3/tools", "qwen3", q3_tools, tools=[WEATHER_TOOL, TIME_TOOL], agp=False)
    add("qwen3/tools_no_system_gen", "qwen3", tool_conv, tools=[WEATHER_TOOL, TIME_TOOL])
    add("qwen3/non_ascii", "qwen3", non_ascii)
    add("qwen3/whitespace", "qwen3", whitespace, agp=False)
    return C


def build_chat(out: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tokdir = out / "qwen-tokenizer"
    gz = tokdir / "tokenizer.json.gz"
    if not gz.exists():
        raise SystemExit(f"{gz} missing: run tools/build_qwen_tokenizer.py --out {out} first")
    tok_json = gzip.decompress(gz.read_bytes())
    raw = Tokenizer.from_str(tok_json.decode("utf-8"))
    hf = {}
    with tempfile.TemporaryDirectory() as tmp:
        for t in ("qwen2.5", "qwen3"):
            d = Path(tmp) / t
            d.mkdir()
            (d / "tokenizer.json").write_bytes(tok_json)
            shutil.copy(tokdir / f"tokenizer_config_{t}.json", d / "tokenizer_config.json")
            hf[t] = AutoTokenizer.from_pretrained(str(d))
    cases = chat_cases()
    for c in cases:
        kw = {}
        if c["enable_thinking"] is not None:
            kw["enable_thinking"] = c["enable_thinking"]
        rendered = hf[c["template"]].apply_chat_template(
            copy.deepcopy(c["messages"]),
            tools=copy.deepcopy(c["tools"]),
            add_generation_prompt=c["add_generation_prompt"],
            tokenize=False,
            **kw,
        )
        ids = raw.encode(rendered, add_special_tokens=False).ids
        assert ids == hf[c["template"]].encode(rendered, add_special_tokens=False), c["name"]
        c["rendered"] = rendered
        c["ids"] = ids
    cdir = out / "chat"
    cdir.mkdir(parents=True, exist_ok=True)
    write_json(cdir / "cases.json", cases)
    print(f"  chat/cases.json: {len(cases)} cases")


# ---------------------------------------------------------------------------


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("tests/fixtures"), help="output root (default tests/fixtures)")
    p.add_argument("--tiktoken-file", type=Path, default=None, help="qwen.tiktoken (default: from qwen-tokenizer)")
    p.add_argument("--only", choices=["qwen2", "qwen3", "chat"], action="append", help="build only these parts")
    args = p.parse_args(argv)

    torch.set_num_threads(1)  # bitwise-stable CPU reductions
    torch.use_deterministic_algorithms(True)
    parts = args.only or ["qwen2", "qwen3", "chat"]
    print("versions:", versions())

    tok_json, tok_cfgs = bqt.build_reduced(args.tiktoken_file or bqt.default_tiktoken_path(), N_REDUCED)
    for kind in ("qwen2", "qwen3"):
        if kind in parts:
            build_model(kind, args.out, tok_json, tok_cfgs)
    if "chat" in parts:
        build_chat(args.out)

    print("sizes:")
    for d in ["tiny-qwen2", "tiny-qwen2-bf16", "tiny-qwen2-lora", "tiny-qwen3", "tiny-qwen3-lora", "chat", "qwen-tokenizer"]:
        dd = args.out / d
        if not dd.exists():
            continue
        total = 0
        for f in sorted(dd.iterdir()):
            total += f.stat().st_size
            print(f"    {f}: {f.stat().st_size} bytes")
            if f.name == "reference.safetensors":
                describe(f)
        print(f"  {dd}: {total} bytes total")


if __name__ == "__main__":
    main()
