#!/usr/bin/env python3
"""Write ``jinja2_compat_cases.json`` next to this file: small chat templates that
exercise Jinja2/Python behaviour (printing of Python values, ``tojson`` options,
``str`` methods, filters, tests, whitespace control, loops, macros, slicing, message
preparation), rendered by transformers' own ``apply_chat_template``.

Usage (from the repository root, with transformers and jinja2 installed)::

    python3 crates/qtrain-data/tests/data/make_jinja2_compat_cases.py

It loads the full Qwen tokenizer from ``tests/fixtures/qwen-tokenizer/`` (any Qwen
tokenizer works: only its special tokens reach the templates).
"""

import gzip
import json
import shutil
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
TOKDIR = ROOT / "tests" / "fixtures" / "qwen-tokenizer"

MESSAGES = [
    {"role": "system", "content": "sys <b>&'\"\\"},
    {"role": "user", "content": "  Hello wörld 😀\n\n", "extra": {"z": 1, "a": [1.5, 2, None, True], "e": 1e-7, "big": 1e17}},
    {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"x": "<&>", "n": 3.0}}}]},
    {"role": "tool", "content": "{\"ok\": true}"},
    {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nfine", "reasoning": "alias me"},
]
TOOLS = [{"type": "function", "function": {"name": "g", "description": "  G <x>  ", "parameters": {"type": "object", "properties": {"q": {"type": "string", "enum": ["a", "b"]}}, "required": ["q"]}}}]

TEMPLATES = {
    "python_printing": "{{ messages[1].extra }}|{{ messages[1].extra.a }}|{{ messages[1].extra.e }}|{{ messages[1].extra.big }}|{{ none }}|{{ true }}|{{ 7 / 2 }}|{{ 4 / 2 }}|{{ 7 // 2 }}|{{ 2 ** 10 }}|{{ messages[0].content }}|{{ messages[1].extra | string }}",
    "tojson_options": "{{ messages[1].extra | tojson }}|{{ messages[1].extra | tojson(indent=2) }}|{{ messages[1].extra | tojson(sort_keys=true) }}|{{ messages[0].content | tojson }}|{{ messages[1].content | tojson(ensure_ascii=true) }}|{{ messages[1].extra | tojson(indent='\t', separators=(',', ': ')) }}|{{ messages[2] | tojson }}|{{ [] | tojson(indent=2) }}|{{ {} | tojson }}",
    "messages_as_prepared": "{% for m in messages %}{{ m | tojson }}\n{% endfor %}",
    "string_methods": "{% set c = messages[1].content %}[{{ c.strip() }}][{{ c.lstrip() }}][{{ c.rstrip() }}][{{ c.split() }}][{{ c.split(' ') }}][{{ c.split(None, 1) }}][{{ c.rsplit(None, 1) }}][{{ c.upper() }}][{{ c.lower() }}][{{ c.title() }}][{{ c.replace('l', 'L') }}][{{ c.startswith('  He') }}][{{ c.endswith(('x', '\n')) }}][{{ c.find('w') }}][{{ c.count('l') }}][{{ '-'.join(['a', 'b']) }}][{{ c.capitalize() }}][{{ 'a<think>b</think>c'.split('</think>')[0].rstrip('\n').split('<think>')[-1] }}][{{ '\n\nx\n\n'.strip('\n') }}]",
    "filters": "{{ messages | length }}|{{ messages | map(attribute='role') | list }}|{{ messages | selectattr('role', 'equalto', 'user') | list | length }}|{{ messages[::-1] | map(attribute='role') | join(',') }}|{{ messages[1].content | trim }}|{{ [3, 1, 2] | sort }}|{{ 'abc' | reverse }}|{{ [1, 2, 3] | first }}|{{ [1, 2, 3] | last }}|{{ [1, 2] | sum }}|{{ '3' | int + 1 }}|{{ 2.567 | round(1) }}|{{ -3 | abs }}|{{ messages[5] is defined }}|{{ 'x' | default('d') }}|{{ undefined_var | default('d') }}|{{ messages[1].extra.keys() | list }}|{{ messages[1].extra.get('missing', 'dflt') }}|{{ messages | rejectattr('role', 'equalto', 'tool') | list | length }}",
    "tests": "{{ 'a' is string }}|{{ 1 is number }}|{{ 1.5 is number }}|{{ true is number }}|{{ messages is sequence }}|{{ 'abc' is sequence }}|{{ messages[1].extra is mapping }}|{{ messages[1].extra is sequence }}|{{ none is none }}|{{ messages[2].content is defined }}|{{ messages[2].content is none }}|{{ true is boolean }}|{{ 1 is integer }}|{{ 1.0 is float }}|{{ 'abc' is iterable }}|{{ 3 is odd }}|{{ 4 is divisibleby 2 }}|{{ 'a' in 'cat' }}|{{ 'role' in messages[0] }}|{{ enable_thinking is defined }}|{{ false is false }}",
    "whitespace_control": "{% for m in messages %}\n  {% if m.role == 'user' %}\n    U: {{ m.content | trim }}\n  {%- else %}\n    O: {{ m.role }}\n  {% endif %}\n{% endfor %}\n{#- comment -#}\n  {%+ if true %}kept{% endif %}\n{% raw %}{{ raw }}{% endraw %}\nend\n",
    "loops_and_namespace": "{% for m in messages %}{{ loop.index }}/{{ loop.length }}{% if loop.last %}L{% endif %}{% if m.role == 'tool' %}{% continue %}{% endif %}{{ m.role[0] }}{{ '>' if loop.nextitem is defined }};{% endfor %}{% for i in range(3) %}{{ i }}{% endfor %}{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}{% for k, v in messages[1].extra.items() %}{{ k }}={{ v }},{% endfor %}{% for m in messages if m.role == 'assistant' %}{{ loop.index0 }}{% endfor %}{% for m in messages %}{% if loop.index0 > 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}",
    "macros": "{% macro show(m, sep=':') %}{{ m.role }}{{ sep }}{{ m.content if m.content is string else '-' }}{% endmacro %}{% for m in messages %}{{ show(m) }}|{% endfor %}{{ show(messages[0], sep='=') }}",
    "slices": "{{ messages[0].content[:3] }}|{{ messages[0].content[-2:] }}|{{ messages[1:3] | length }}|{{ messages[-1].role }}|{{ 'abcdef'[::2] }}|{{ messages[0]['role'] }}|{{ (messages[::-1])[0].role }}",
    "concatenation": "{{ 'a' ~ 1 ~ none ~ true }}|{{ 'x' + 'y' }}|{{ [1] + [2] }}|{{ 1.5 ~ '' }}|{{ 'n' ~ messages | length }}",
    "dict_global": "{% set d = dict(a=1, b='x') %}{{ d | tojson }}|{{ d.a }}|{{ {'k': [1, 2]} }}",
    "reasoning_aliases": "{% for m in messages %}{{ m.reasoning_content }}|{{ m.thinking }}|{{ m.reasoning }};{% endfor %}",
    "context_variables": "{{ tools | tojson }}|{{ add_generation_prompt }}|{{ enable_thinking }}|{{ documents }}|{{ pad_token }}|{{ eos_token }}|{{ bos_token is defined }}",
    "raise_exception": "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}",
    "undefined_attribute": "{{ messages[0].missing.deeper }}",
}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").write_bytes(gzip.decompress((TOKDIR / "tokenizer.json.gz").read_bytes()))
        shutil.copy(TOKDIR / "tokenizer_config_qwen3.json", Path(tmp) / "tokenizer_config.json")
        tok = AutoTokenizer.from_pretrained(tmp)
    cases = []
    for name, template in TEMPLATES.items():
        for agp in (False, True):
            tools = TOOLS if name == "context_variables" else None
            kwargs = {"enable_thinking": False} if name == "context_variables" else {}
            case = {"name": f"{name}/agp={agp}", "template": template, "messages": MESSAGES, "tools": tools,
                    "add_generation_prompt": agp, "enable_thinking": kwargs.get("enable_thinking")}
            try:
                case["rendered"] = tok.apply_chat_template(
                    json.loads(json.dumps(MESSAGES)), chat_template=template, tools=tools,
                    add_generation_prompt=agp, tokenize=False, **kwargs)
            except Exception as e:  # the Rust side must fail too
                case["error"] = f"{type(e).__name__}: {e}"
            cases.append(case)
    special = {k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)}
    out = {"special_tokens": special, "cases": cases}
    (HERE / "jinja2_compat_cases.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    print(f"{len(cases)} cases ({sum('error' in c for c in cases)} expected errors)")


if __name__ == "__main__":
    main()
