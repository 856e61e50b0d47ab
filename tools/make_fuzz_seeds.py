#!/usr/bin/env python3
"""Write fuzz/micro-model/ (a 1-layer Qwen2 model, a sharded copy and a LoRA adapter, a few KB)
and the seed corpora fuzz/seeds/<target>/ of the fuzz targets. Pure Python (no torch); rerun
after changing it: `python3 tools/make_fuzz_seeds.py [CHECKPOINT_DIR]`."""
import json
import os
import random
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MICRO = os.path.join(ROOT, "fuzz", "micro-model")
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
H, I, V, HEADS, KV, D = 8, 16, 16, 2, 1, 4
CONFIG = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": H, "intermediate_size": I,
    "num_hidden_layers": 1, "num_attention_heads": HEADS, "num_key_value_heads": KV, "vocab_size": V,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False,
    "hidden_act": "silu", "use_sliding_window": False, "torch_dtype": "float32",
}


def safetensors(tensors):
    """tensors: list of (name, shape) -> bytes with random F32 data."""
    rng = random.Random(7)
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, shape in tensors:
        n = 1
        for s in shape:
            n *= s
        blob = struct.pack(f"<{n}f", *[rng.uniform(-0.5, 0.5) for _ in range(n)])
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def model_tensors():
    p = "model.layers.0"
    out = [("model.embed_tokens.weight", [V, H]), (f"{p}.input_layernorm.weight", [H]),
           (f"{p}.post_attention_layernorm.weight", [H])]
    for name, shape, bias in [("self_attn.q_proj", [HEADS * D, H], True), ("self_attn.k_proj", [KV * D, H], True),
                              ("self_attn.v_proj", [KV * D, H], True), ("self_attn.o_proj", [H, HEADS * D], False),
                              ("mlp.gate_proj", [I, H], False), ("mlp.up_proj", [I, H], False),
                              ("mlp.down_proj", [H, I], False)]:
        out.append((f"{p}.{name}.weight", shape))
        if bias:
            out.append((f"{p}.{name}.bias", [shape[0]]))
    return out + [("model.norm.weight", [H]), ("lm_head.weight", [V, H])]


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def main():
    files = {}
    files["config.json"] = json.dumps(CONFIG, indent=2)
    tensors = model_tensors()
    files["model.safetensors"] = safetensors(tensors)
    half = len(tensors) // 2
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    files[shards[0]] = safetensors(tensors[:half])
    files[shards[1]] = safetensors(tensors[half:])
    weight_map = {name: shards[0] if i < half else shards[1] for i, (name, _) in enumerate(tensors)}
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2)
    files["adapter_config.json"] = json.dumps({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4,
                                               "target_modules": ["q_proj", "v_proj"], "bias": "none",
                                               "use_rslora": False, "use_dora": False, "fan_in_fan_out": False}, indent=2)
    pre = "base_model.model.model.layers.0.self_attn"
    files["adapter_model.safetensors"] = safetensors([(f"{pre}.q_proj.lora_A.weight", [2, H]), (f"{pre}.q_proj.lora_B.weight", [HEADS * D, 2]),
                                                      (f"{pre}.v_proj.lora_A.weight", [2, H]), (f"{pre}.v_proj.lora_B.weight", [KV * D, 2])])
    for name, data in files.items():
        write(os.path.join(MICRO, name), data)
    b = lambda s: s if isinstance(s, bytes) else s.encode()
    # model_folder: the first byte picks the file the rest replaces (see the target).
    for mode, name in enumerate(["config.json", "model.safetensors", "model.safetensors.index.json", shards[0]]):
        write(os.path.join(SEEDS, "model_folder", f"{mode}"), bytes([mode]) + b(files[name]))
    for mode, name in enumerate(["adapter_config.json", "adapter_model.safetensors"]):
        write(os.path.join(SEEDS, "adapter_folder", f"{mode}"), bytes([mode]) + b(files[name]))
    tiny = os.path.join(ROOT, "tests", "fixtures", "tiny-qwen2")
    for mode, name in enumerate(["config.json", "generation_config.json", "tokenizer_config.json"]):
        write(os.path.join(SEEDS, "json_configs", f"{mode}"), bytes([mode]) + open(os.path.join(tiny, name), "rb").read())
    rows = [
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
        {"instruction": "i", "input": "x", "output": "o"},
        {"query": "q", "response": "r", "history": [["a", "b"]]},
        {"messages": [{"role": "user", "content": "t"}, {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}],
         "tools": [{"type": "function", "function": {"name": "f"}}]},
    ]
    write(os.path.join(SEEDS, "dataset_rows", "jsonl"), "\n".join(json.dumps(r) for r in rows) + "\n")
    write(os.path.join(SEEDS, "dataset_rows", "array"), json.dumps(rows))
    template = json.load(open(os.path.join(tiny, "tokenizer_config.json")))["chat_template"]
    write(os.path.join(SEEDS, "chat_template", "qwen"), template + "\0" + json.dumps(rows[0]["messages"]))
    write(os.path.join(SEEDS, "chat_template", "loops"),
          "{% for m in messages %}{{ m.content | tojson(indent=2) }}{% generation %}{{ m.role.upper() }}{% endgeneration %}{% endfor %}"
          + "\0" + json.dumps(rows[4]["messages"]))
    write(os.path.join(SEEDS, "tokenizer_json", "tiny"), open(os.path.join(tiny, "tokenizer.json"), "rb").read())
    state = {
        "trainer_state.json": None, "scheduler.json": None, "rng_state.json": None, "data_state.json": None, "args.json": None,
    }
    # The resume_state seed needs a real LoRA checkpoint: pass its folder as the argument
    # (e.g. from `qtrain train --model tests/fixtures/tiny-qwen2 --lora_rank 1 --target_modules q_proj`).
    checkpoint = sys.argv[1] if len(sys.argv) > 1 else None
    if checkpoint and os.path.isdir(checkpoint):
        for name in state:
            state[name] = open(os.path.join(checkpoint, name), "rb").read()
        write(os.path.join(SEEDS, "resume_state", "real"), b"\0".join(state.values()) + b"\0" +
              open(os.path.join(checkpoint, "optimizer.safetensors"), "rb").read())
    for preset in sorted(os.listdir(os.path.join(ROOT, "presets"))):
        if preset.endswith(".toml"):
            write(os.path.join(SEEDS, "toml_config", preset), open(os.path.join(ROOT, "presets", preset), "rb").read())


if __name__ == "__main__":
    main()
